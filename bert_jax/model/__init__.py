"""The network and its file format: config, encoder + heads, the HF directory format both ways.

Imports nothing of bert_jax but `errors` and `io`.
"""

from bert_jax.model.auto import ARCHITECTURES, convert, load_model, model_class_for
from bert_jax.model.config import BertConfig
from bert_jax.model.modeling import (
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

__all__ = [
    "ARCHITECTURES",
    "BertConfig",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "convert",
    "load_model",
    "model_class_for",
]
