"""RoBERTa, XLM-RoBERTa, ELECTRA and DistilBERT: the BERT encoder with other names and heads.

Each family's encoder is a `BertModel` that its config steers (formats.py: RoBERTa's
positions start after the padding index, DistilBERT has no token types, ELECTRA projects its
narrower embeddings). Each head subclasses the BERT head of the same task, so predict, explain,
fine-tuning and fill-mask treat it as that task; where HF's head computes something else, the
class says so here:
- RoBERTa/XLM-R/ELECTRA sequence classifiers: no pooler; dense + act + out_proj on the first token
  (tanh for RoBERTa, gelu for ELECTRA), dropout before each dense.
- DistilBERT's: pre_classifier + ReLU + dropout + classifier; its QA head drops out first.
- RoBERTa's and ELECTRA's MLM transforms use gelu whatever hidden_act says; ELECTRA's generator maps
  to embedding_size. ELECTRA's discriminator scores each token with one logit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.model.config import BertConfig
from bert_jax.model.dropout import Dropout
from bert_jax.model.layers import activation, dense
from bert_jax.model.modeling import (
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    HFFormat,
    classifier_dropout_rate,
    span_logits,
)


class ClassificationHead(nnx.Module):
    """First-token classifier: [dropout] → dense (D → D) → act → dropout → out_proj (D → C)."""

    def __init__(
        self, config: BertConfig, act: str, rate: float, *, dropout_first: bool, rngs: nnx.Rngs
    ):
        d = config.hidden_size
        self.dense = dense(config, d, d, rngs)
        self.out_proj = dense(config, d, config.num_labels, rngs)
        self.act = activation(act)
        self.dropout = Dropout(rate, rngs=rngs)
        self.dropout_first = dropout_first

    def __call__(self, hidden: jax.Array) -> jax.Array:
        x = hidden[:, 0]  # (B, D): <s> / [CLS]
        if self.dropout_first:
            x = self.dropout(x)
        x = self.dropout(self.act(self.dense(x)))
        return self.out_proj(x).astype(jnp.float32)  # (B, C)


class _FirstTokenClassification(BertForSequenceClassification):
    """Sequence classifier without a pooler: ClassificationHead on the first token's state."""

    head_activation = "tanh"
    dropout_first = True

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = self.encoder_class(config, add_pooler=False, rngs=rngs)
        self.classifier = ClassificationHead(
            config,
            self.head_activation,
            self.dropout_rate(config),
            dropout_first=self.dropout_first,
            rngs=rngs,
        )

    @staticmethod
    def dropout_rate(config: BertConfig) -> float:
        return classifier_dropout_rate(config)

    def __call__(self, input_ids, **inputs) -> jax.Array:
        return self.classifier(self.bert(input_ids, **inputs).last_hidden_state)


# ---- RoBERTa and XLM-RoBERTa ------------------------------------------------------------------


class RobertaModel(BertModel):
    model_type = "roberta"


class RobertaForMaskedLM(BertForMaskedLM):
    encoder_class = RobertaModel
    mlm_activation = "gelu"


class RobertaForSequenceClassification(_FirstTokenClassification):
    encoder_class = RobertaModel


class RobertaForTokenClassification(BertForTokenClassification):
    encoder_class = RobertaModel


class RobertaForQuestionAnswering(BertForQuestionAnswering):
    encoder_class = RobertaModel


class XLMRobertaModel(RobertaModel):
    model_type = "xlm-roberta"


class XLMRobertaForMaskedLM(RobertaForMaskedLM):
    encoder_class = XLMRobertaModel


class XLMRobertaForSequenceClassification(RobertaForSequenceClassification):
    encoder_class = XLMRobertaModel


class XLMRobertaForTokenClassification(RobertaForTokenClassification):
    encoder_class = XLMRobertaModel


class XLMRobertaForQuestionAnswering(RobertaForQuestionAnswering):
    encoder_class = XLMRobertaModel


# ---- ELECTRA ------------------------------------------------------------------------------------


class ElectraModel(BertModel):
    model_type = "electra"

    def __init__(self, config: BertConfig, *, add_pooler: bool = False, rngs: nnx.Rngs):
        super().__init__(config, add_pooler=add_pooler, rngs=rngs)


class ElectraForMaskedLM(BertForMaskedLM):
    """The generator."""

    encoder_class = ElectraModel
    mlm_activation = "gelu"


class DiscriminatorHead(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.dense = dense(config, config.hidden_size, config.hidden_size, rngs)
        self.dense_prediction = dense(config, config.hidden_size, 1, rngs)
        self.act = activation(config.hidden_act)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.dense_prediction(self.act(self.dense(hidden)))[..., 0].astype(jnp.float32)


class ElectraForPreTraining(HFFormat, nnx.Module):
    """The discriminator: one logit per token, > 0 meaning "replaced"."""

    encoder_class = ElectraModel

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = self.encoder_class(config, rngs=rngs)
        self.discriminator_predictions = DiscriminatorHead(config, rngs=rngs)

    def __call__(self, input_ids, **inputs) -> jax.Array:
        """Logits (B, L)."""
        return self.discriminator_predictions(self.bert(input_ids, **inputs).last_hidden_state)


class ElectraForSequenceClassification(_FirstTokenClassification):
    encoder_class = ElectraModel
    head_activation = "gelu"


class ElectraForTokenClassification(BertForTokenClassification):
    encoder_class = ElectraModel


class ElectraForQuestionAnswering(BertForQuestionAnswering):
    encoder_class = ElectraModel


# ---- DistilBERT ---------------------------------------------------------------------------------


class DistilBertModel(BertModel):
    model_type = "distilbert"

    def __init__(self, config: BertConfig, *, add_pooler: bool = False, rngs: nnx.Rngs):
        super().__init__(config, add_pooler=add_pooler, rngs=rngs)


class DistilBertForMaskedLM(BertForMaskedLM):
    encoder_class = DistilBertModel


class DistilBertForSequenceClassification(_FirstTokenClassification):
    """pre_classifier + ReLU + dropout (seq_classif_dropout) + classifier."""

    encoder_class = DistilBertModel
    head_activation = "relu"
    dropout_first = False

    @staticmethod
    def dropout_rate(config: BertConfig) -> float:
        return float(config.hf_value("seq_classif_dropout", 0.2))


class DistilBertForTokenClassification(BertForTokenClassification):
    encoder_class = DistilBertModel


class DistilBertForQuestionAnswering(BertForQuestionAnswering):
    encoder_class = DistilBertModel

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        self.dropout = Dropout(float(config.hf_value("qa_dropout", 0.1)), rngs=rngs)

    def __call__(self, input_ids, **inputs) -> tuple[jax.Array, jax.Array]:
        hidden = self.dropout(self.bert(input_ids, **inputs).last_hidden_state)
        return span_logits(self.qa_outputs(hidden))


# Every class here, for the registry (auto.py): bare encoder first in each family.
FAMILY_CLASSES: dict[str, tuple[type, ...]] = {
    "roberta": (
        RobertaModel,
        RobertaForMaskedLM,
        RobertaForSequenceClassification,
        RobertaForTokenClassification,
        RobertaForQuestionAnswering,
    ),
    "xlm-roberta": (
        XLMRobertaModel,
        XLMRobertaForMaskedLM,
        XLMRobertaForSequenceClassification,
        XLMRobertaForTokenClassification,
        XLMRobertaForQuestionAnswering,
    ),
    "electra": (
        ElectraModel,
        ElectraForMaskedLM,
        ElectraForPreTraining,
        ElectraForSequenceClassification,
        ElectraForTokenClassification,
        ElectraForQuestionAnswering,
    ),
    "distilbert": (
        DistilBertModel,
        DistilBertForMaskedLM,
        DistilBertForSequenceClassification,
        DistilBertForTokenClassification,
        DistilBertForQuestionAnswering,
    ),
}
