#!/usr/bin/env bash
# Builds the separate virtualenv that runs the Hugging Face Flax peer (FlaxBertForMaskedLM).
#
# transformers 5 dropped its Flax models, and FlaxBert needs flax.linen, so the peer lives in
# its own venv with transformers 4.57 and a jax/flax pair from the same era. The main venv (jax
# 0.10, flax NNX 0.12, transformers 5) is untouched. benchmarks/train_step.py finds this venv at
# benchmarks/.venv-hf-flax (override with BERT_JAX_HF_FLAX_PYTHON=/path/to/python).
#
# Usage: bash benchmarks/setup_peers.sh   (about 1-2 minutes; ~1 GB)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/.venv-hf-flax}"
python="${PYTHON:-python3}"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet \
  "jax[cpu]==0.4.38" "jaxlib==0.4.38" "flax==0.10.2" "optax==0.2.4" \
  "transformers==4.57.*" "numpy<2.3"
"$venv/bin/python" - <<'PY'
import flax, jax, optax, transformers
from transformers import BertConfig, FlaxBertForMaskedLM  # noqa: F401  (fails if Flax is gone)
print(f"hf-flax peer venv ok: transformers {transformers.__version__}, jax {jax.__version__}, "
      f"flax {flax.__version__}, optax {optax.__version__}")
PY
