"""transformers' ModernBert* directory format, both ways: `config.json` + weights (+ tokenizer).

Our module names are HF's (modernbert.py), so a parameter path maps to its HF key by three rules:
the encoder at `.bert` is HF's `model.`, leaves are renamed (kernel/embedding/scale → weight), and
Linear kernels are transposed ((in, out) in Flax, (out, in) in PyTorch). The tied decoder weight
is not stored, as in HF. Weight files are read by bert_jax.model.hf (safetensors, shards, .bin).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.io import staged_dir
from bert_jax.model import hf
from bert_jax.model.modernbert_config import ModernBertConfig

_LEAVES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}
_ENCODER_KEY = re.compile(r"(embeddings|layers|final_norm)\.")


def hf_key(path: tuple) -> tuple[str, bool]:
    """Our parameter path → (HF key, transpose?). E.g. ('bert', 'layers', 1, 'attn', 'Wqkv',
    'kernel') → ('model.layers.1.attn.Wqkv.weight', True)."""
    *module, leaf = (str(p) for p in path)
    if module and module[0] == "bert":
        module[0] = "model"
    if leaf not in _LEAVES:
        raise KeyError(f"no HF name for parameter {'/'.join(map(str, path))}")
    return ".".join([*module, _LEAVES[leaf]]), leaf == "kernel"


def canonical_key(key: str, with_prefix: bool) -> str:
    """A checkpoint key with the `model.` prefix present exactly when the target is a head."""
    if with_prefix and _ENCODER_KEY.match(key):
        return "model." + key
    if not with_prefix and key.startswith("model."):
        return key[len("model.") :]
    return key


def read_config(directory: str) -> ModernBertConfig:
    if not os.path.isdir(directory):
        raise BertJaxError(f"{directory}: not a directory (expected an HF-format model directory)")
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise BertJaxError(f"{path}: not found (an HF model directory needs config.json)")
    return ModernBertConfig.from_json_file(path)


def params_to_hf(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters as an HF state dict (numpy, PyTorch orientation)."""
    out = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key, transpose = hf_key(path)
        value = np.asarray(variable.get_value())
        out[key] = np.ascontiguousarray(value.T if transpose else value)
    return out


def load_hf_weights(model: nnx.Module, tensors: dict[str, np.ndarray], *, source: str) -> dict:
    """Copy HF tensors into `model` in place; returns {"missing": [...], "unexpected": [...]}.
    Missing parameters keep their initialisation and unused tensors are named in one warning
    each; a shape mismatch is an error naming the tensor and both shapes."""
    with_prefix = hasattr(model, "bert")
    tied = model.config.tie_word_embeddings
    available = {
        canonical_key(k, with_prefix): v
        for k, v in tensors.items()
        if not (tied and k == "decoder.weight")  # a stored copy of the tied embeddings
    }
    return hf.copy_tensors(model, available, hf_key, source=source, family="ModernBERT")


def from_pretrained(
    cls,
    directory,
    *,
    dtype: str | None = None,
    seed: int = 0,
    dont_load: Sequence[str] = (),
    **config_changes,
):
    """Build `cls` from an HF ModernBert* directory; `dtype` sets the compute dtype,
    `config_changes` override config fields, tensors whose HF key matches a `dont_load` regex
    keep their fresh initialisation (a new head)."""
    directory = os.fspath(directory)
    config = read_config(directory)
    return hf.build_and_load(
        cls, config, directory, load_hf_weights, dtype, seed, dont_load, config_changes
    )


def save_pretrained(model, directory, tokenizer=None, *, overwrite: bool = False) -> None:
    """Write config.json, model.safetensors (and tokenizer files) atomically; a directory holding
    anything but an earlier save's files is refused unless `overwrite`."""
    from safetensors.numpy import save_file

    with staged_dir(directory, owned=hf.SAVED_FILES, overwrite=overwrite) as tmp:
        save_file(params_to_hf(model), os.path.join(tmp, hf.SAFETENSORS), metadata={"format": "pt"})
        model.config.to_json_file(os.path.join(tmp, "config.json"), [type(model).__name__])
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
