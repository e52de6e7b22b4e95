"""Pick the model class an HF directory names, load it, and rewrite checkpoints (`convert`).

The registry lives here rather than in hf.py so the file format knows nothing of the classes:
auto → modeling → hf → config, one way.
"""

from __future__ import annotations

import json
import os
import re

from flax import nnx

from bert_jax.model import hf
from bert_jax.model.modeling import (
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

# config.json `architectures` name → class.
ARCHITECTURES: dict[str, type[nnx.Module]] = {
    cls.__name__: cls
    for cls in (
        BertModel,
        BertForMaskedLM,
        BertForPreTraining,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertForQuestionAnswering,
    )
}
_BUFFERS = re.compile(r"(bert\.)?embeddings\.(position_ids|token_type_ids)")


def model_class_for(directory: str) -> type[nnx.Module]:
    """The head class named by `architectures` in config.json (BertModel when absent/unknown)."""
    try:
        with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
            names = json.load(f).get("architectures") or []
    except (OSError, ValueError):
        names = []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    return BertModel


def load_model(directory: str, *, dtype: str | None = None) -> nnx.Module:
    """The model (with its head) saved in an HF directory."""
    return model_class_for(directory).from_pretrained(directory, dtype=dtype)


def convert(src: str, dst: str, tokenizer=None, *, overwrite: bool = False) -> None:
    """Read any supported HF-format checkpoint and write our format (safetensors) losslessly:
    every parameter keeps its bits; buffers such as `position_ids` are carried over verbatim.
    `tokenizer` (anything with `save_pretrained(dir)`) is written alongside. An existing `dst`
    holding files a save did not write is refused unless `overwrite`."""
    src = os.fspath(src)
    cls = model_class_for(src)
    config = hf.read_config(src)
    tensors = hf.read_weights(src)  # read once: the model and the buffers both come from it
    model = cls(config, rngs=nnx.Rngs(0))
    hf.load_hf_weights(model, tensors, source=src)
    with_prefix = cls is not BertModel
    buffers = {
        hf.canonical_key(k, with_prefix): v for k, v in tensors.items() if _BUFFERS.fullmatch(k)
    }
    hf.save_pretrained(model, dst, tokenizer=tokenizer, extra_tensors=buffers, overwrite=overwrite)
