"""Pick the model class an HF directory names, load it, and rewrite checkpoints (`convert`).

The registry lives here rather than in hf.py so the file format knows nothing of the classes:
auto → modeling → hf → config, one way.
"""

from __future__ import annotations

import json
import os
import re

from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.model import hf, modernbert_hf
from bert_jax.model.families import FAMILY_CLASSES
from bert_jax.model.modeling import (
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from bert_jax.model.modernbert import (
    ModernBertForMaskedLM,
    ModernBertForQuestionAnswering,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
    ModernBertModel,
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
        ModernBertModel,
        ModernBertForMaskedLM,
        ModernBertForSequenceClassification,
        ModernBertForTokenClassification,
        ModernBertForQuestionAnswering,
    )
}
ARCHITECTURES.update({c.__name__: c for classes in FAMILY_CLASSES.values() for c in classes})
# config.json `model_type` → the bare encoder, when `architectures` names no class we know.
ENCODERS: dict[str, type[nnx.Module]] = {"bert": BertModel, "modernbert": ModernBertModel}
ENCODERS.update({model_type: classes[0] for model_type, classes in FAMILY_CLASSES.items()})
# Task → HF's class-name suffix: a family's head for a task is <Family>For<Head>.
_TASK_SUFFIXES = {
    "mlm": "ForMaskedLM",
    "classification": "ForSequenceClassification",
    "ner": "ForTokenClassification",
    "qa": "ForQuestionAnswering",
}
_BUFFERS = re.compile(r"(bert\.)?embeddings\.(position_ids|token_type_ids)")


def _config_dict(directory: str) -> dict:
    """config.json as a dict: {} when unreadable (loading then reports what is wrong); an error
    when its `model_type` is one we cannot run."""
    try:
        with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    model_type = config.get("model_type", "bert")
    if model_type not in ENCODERS:
        raise BertJaxError(
            f"{os.path.join(directory, 'config.json')}: model_type {model_type!r} is not "
            f"supported; supported types: {', '.join(sorted(ENCODERS))}"
        )
    return config


def model_class_for(directory: str) -> type[nnx.Module]:
    """The head class named by `architectures` in config.json, else the encoder of its
    `model_type` (BertModel when both are absent)."""
    config = _config_dict(directory)
    for name in config.get("architectures") or []:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    return ENCODERS[config.get("model_type", "bert")]


def encoder_class_for(directory: str) -> type[nnx.Module]:
    """The bare encoder of the directory's family (BertModel, RobertaModel, ...), whatever head
    its checkpoint holds."""
    return ENCODERS[_config_dict(directory).get("model_type", "bert")]


def class_for_task(directory: str, task: str) -> type[nnx.Module]:
    """The class of the directory's family for `task` ("mlm", "classification", "ner", "qa"):
    e.g. RobertaForTokenClassification for "ner" on any RoBERTa checkpoint."""
    encoder = encoder_class_for(directory)
    name = encoder.__name__.removesuffix("Model") + _TASK_SUFFIXES[task]
    if name not in ARCHITECTURES:
        raise BertJaxError(f"{directory}: no {task} head for {encoder.__name__} models")
    return ARCHITECTURES[name]


def read_config(directory: str):
    """The config of any supported family: ModernBertConfig for ModernBERT, else BertConfig."""
    if _config_dict(directory).get("model_type") == "modernbert":
        return modernbert_hf.read_config(directory)
    return hf.read_config(directory)


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
    if cls.__module__ != BertModel.__module__:  # other families: no legacy names or buffers
        cls.from_pretrained(src).save_pretrained(dst, tokenizer=tokenizer, overwrite=overwrite)
        return
    config = hf.read_config(src)
    tensors = hf.read_weights(src)  # read once: the model and the buffers both come from it
    model = cls(config, rngs=nnx.Rngs(0))
    hf.load_hf_weights(model, tensors, source=src)
    with_prefix = cls is not BertModel
    buffers = {
        hf.canonical_key(k, with_prefix): v for k, v in tensors.items() if _BUFFERS.fullmatch(k)
    }
    hf.save_pretrained(model, dst, tokenizer=tokenizer, extra_tensors=buffers, overwrite=overwrite)
