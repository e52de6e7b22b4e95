"""BERT-style encoders in Flax NNX, top to bottom: embeddings → post-LN layers → pooler → heads.

`BertModel` is the encoder of every family in formats.py (BERT, RoBERTa, XLM-R, ELECTRA,
DistilBERT): the config says where positions start, whether there are token types and whether
embeddings are projected. The BERT heads here are the bases of the other families' heads
(families.py), so code that checks `isinstance(m, BertForSequenceClassification)` serves them all.

Shapes: B batch, L sequence length, D hidden size, E embedding width, H heads, P masked positions
per row. Parameters live in `config.param_dtype` (fp32); matmuls run in `config.dtype` (bf16 on
accelerators); LayerNorm and softmax always in fp32. Dropout draws from the `nnx.Rngs` given at
construction and is off after `model.eval()`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from bert_jax.errors import BertJaxError
from bert_jax.model import hf
from bert_jax.model.attention import attention_mask_2d, positions_from_segments
from bert_jax.model.config import BertConfig
from bert_jax.model.dropout import Dropout
from bert_jax.model.layers import Embeddings, EncoderLayer, activation, dense, layer_norm
from bert_jax.model.precision import matmul


class HFFormat:
    """`from_pretrained` / `save_pretrained` over HF model directories (see bert_jax.model.hf).

    An encoder class names its family (`model_type`); a head class names its encoder class, and
    the head's encoder lives at `.bert` whatever the family (HF's prefix is formats.py's)."""

    model_type = "bert"  # encoders: the config.json model_type they read and write
    encoder_class: type | None = None  # heads: the family's encoder class

    @classmethod
    def family(cls) -> str:
        """The config.json `model_type` this class reads and writes."""
        return (cls.encoder_class or cls).model_type

    @classmethod
    def from_pretrained(
        cls, directory, *, dtype: str | None = None, seed: int = 0, **config_changes
    ):
        return hf.from_pretrained(cls, directory, dtype=dtype, seed=seed, **config_changes)

    def save_pretrained(self, directory, tokenizer=None, *, overwrite: bool = False) -> None:
        hf.save_pretrained(self, directory, tokenizer=tokenizer, overwrite=overwrite)


@struct.dataclass
class EncoderOutput:
    last_hidden_state: jax.Array  # (B, L, D) in compute dtype
    pooler_output: jax.Array | None = None  # (B, D)
    hidden_states: tuple[jax.Array, ...] | None = None  # embeddings + each layer, each (B, L, D)
    attentions: tuple[jax.Array, ...] | None = None  # each layer's probs, each (B, H, L, L) fp32


class BertModel(HFFormat, nnx.Module):
    """The encoder. `segment_ids` (packed rows) restrict attention to each token's own segment and
    restart positions per segment (unless `position_ids` are given)."""

    def __init__(self, config: BertConfig, *, add_pooler: bool = True, rngs: nnx.Rngs):
        if config.model_type != self.model_type:
            raise BertJaxError(
                f"{type(self).__name__} is for model_type {self.model_type!r}, the config says "
                f"{config.model_type!r}"
            )
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        d, e = config.hidden_size, config.embedding_dim
        self.embeddings_project = dense(config, e, d, rngs) if e != d else None  # ELECTRA
        self.layers = nnx.List(
            [EncoderLayer(config, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )
        self.pooler = dense(config, d, d, rngs) if add_pooler else None

    def __call__(
        self,
        input_ids: jax.Array,  # (B, L) int
        token_type_ids: jax.Array | None = None,  # (B, L) int
        attention_mask: jax.Array | None = None,  # (B, L) 1 real / 0 pad
        segment_ids: jax.Array | None = None,  # (B, L) packed document ids, 0 pad
        position_ids: jax.Array | None = None,  # (B, L)
        *,
        inputs_embeds: jax.Array | None = None,  # (B, L, E) instead of the word embeddings
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> EncoderOutput:
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = (
                segment_ids > 0 if segment_ids is not None else jnp.ones_like(input_ids)
            )
        if position_ids is None:
            position_ids = self._positions(input_ids, segment_ids)
        mask = attention_mask_2d(attention_mask, segment_ids)

        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)  # (B, L, E) → (B, L, D)
        hidden_states, attentions = [x], []
        for layer in self.layers:
            x, probs = layer(x, mask, return_probs=output_attentions)
            hidden_states.append(x)
            attentions.append(probs)
        pooled = jnp.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return EncoderOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def _positions(self, input_ids, segment_ids) -> jax.Array:
        """(B, L) position ids: 0, 1, ... (restarting per packed segment), shifted to start at
        pad_token_id + 1 for RoBERTa, whose padding tokens sit at pad_token_id (HF's
        create_position_ids_from_input_ids: pads are found by id, not by attention_mask)."""
        offset = self.config.position_offset
        if segment_ids is not None:
            return positions_from_segments(segment_ids) + offset
        if offset:
            real = (input_ids != self.config.pad_token_id).astype(jnp.int32)
            return jnp.cumsum(real, axis=1) * real + self.config.pad_token_id
        # iota, not arange: jax2onnx keeps a symbolic length L through it (ONNX export).
        return jax.lax.broadcasted_iota(jnp.int32, input_ids.shape, 1)


# ---------------------------------------------------------------------------------------------
# Heads. Each takes the encoder inputs as keyword arguments (`**inputs`), returns fp32 logits.
# ---------------------------------------------------------------------------------------------


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """(B, L, D), (B, P) → (B, P, D)."""
    return jnp.take_along_axis(x, positions[..., None], axis=1)


class MaskedLMHead(nnx.Module):
    """Transform (dense + act + LayerNorm), then the decoder tied to the word embeddings + bias.

    The transform maps D to the embedding width E (ELECTRA's generator: E < D); `act` names its
    activation (RoBERTa's and ELECTRA's heads use gelu whatever hidden_act says)."""

    def __init__(self, config: BertConfig, *, act: str | None = None, rngs: nnx.Rngs):
        width = config.embedding_dim
        self.transform = dense(config, config.hidden_size, width, rngs)
        self.norm = layer_norm(config, rngs, width)
        self.act = activation(act or config.hidden_act)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), config.weights_dtype))

    def __call__(self, hidden: jax.Array, word_embeddings: nnx.Embed) -> jax.Array:
        h = self.norm(self.act(self.transform(hidden))).astype(hidden.dtype)
        table = word_embeddings.embedding[...].astype(h.dtype)  # (vocab, E), tied to the input
        logits = matmul(h, table.T) if h.dtype == jnp.bfloat16 else h @ table.T  # (..., vocab)
        return logits.astype(jnp.float32) + self.bias[...].astype(jnp.float32)


class BertForMaskedLM(HFFormat, nnx.Module):
    encoder_class = BertModel
    mlm_activation: str | None = None  # None: the config's hidden_act

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = self.encoder_class(config, add_pooler=False, rngs=rngs)
        self.mlm = MaskedLMHead(config, act=self.mlm_activation, rngs=rngs)

    def __call__(self, input_ids, masked_positions=None, **inputs) -> jax.Array:
        """Logits (B, P, vocab) at `masked_positions` (B, P) — or (B, L, vocab) when None.

        Computing the vocabulary projection only where a prediction is scored saves ~P/L of the
        head's cost (a large share of a small BERT's FLOPs).
        """
        hidden = self.bert(input_ids, **inputs).last_hidden_state
        if masked_positions is not None:
            hidden = gather_positions(hidden, masked_positions)
        return self.mlm(hidden, self.bert.embeddings.word)


class BertForPreTraining(HFFormat, nnx.Module):
    encoder_class = BertModel

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = self.encoder_class(config, add_pooler=True, rngs=rngs)
        self.mlm = MaskedLMHead(config, rngs=rngs)
        self.nsp = dense(config, config.hidden_size, 2, rngs)

    def __call__(self, input_ids, masked_positions=None, **inputs) -> tuple[jax.Array, jax.Array]:
        """(MLM logits (B, P, vocab), next-sentence logits (B, 2); 0 = IsNext, 1 = NotNext)."""
        out = self.bert(input_ids, **inputs)
        hidden = out.last_hidden_state
        if masked_positions is not None:
            hidden = gather_positions(hidden, masked_positions)
        mlm_logits = self.mlm(hidden, self.bert.embeddings.word)
        return mlm_logits, self.nsp(out.pooler_output).astype(jnp.float32)


def classifier_dropout_rate(config: BertConfig) -> float:
    rate = config.classifier_dropout
    return config.hidden_dropout_prob if rate is None else rate


def _classifier_dropout(config: BertConfig, rngs: nnx.Rngs) -> Dropout:
    return Dropout(classifier_dropout_rate(config), rngs=rngs)


class BertForSequenceClassification(HFFormat, nnx.Module):
    """Classifier on the pooled [CLS]; `config.num_labels == 1` means regression."""

    encoder_class = BertModel

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = self.encoder_class(config, add_pooler=True, rngs=rngs)
        self.dropout = _classifier_dropout(config, rngs)
        self.classifier = dense(config, config.hidden_size, config.num_labels, rngs)

    def __call__(self, input_ids, **inputs) -> jax.Array:
        pooled = self.bert(input_ids, **inputs).pooler_output
        return self.classifier(self.dropout(pooled)).astype(jnp.float32)  # (B, num_labels)


class BertForTokenClassification(HFFormat, nnx.Module):
    encoder_class = BertModel

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = self.encoder_class(config, add_pooler=False, rngs=rngs)
        self.dropout = _classifier_dropout(config, rngs)
        self.classifier = dense(config, config.hidden_size, config.num_labels, rngs)

    def __call__(self, input_ids, **inputs) -> jax.Array:
        hidden = self.bert(input_ids, **inputs).last_hidden_state
        return self.classifier(self.dropout(hidden)).astype(jnp.float32)  # (B, L, num_labels)


class BertForQuestionAnswering(HFFormat, nnx.Module):
    encoder_class = BertModel

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = self.encoder_class(config, add_pooler=False, rngs=rngs)
        self.qa_outputs = dense(config, config.hidden_size, 2, rngs)

    def __call__(self, input_ids, **inputs) -> tuple[jax.Array, jax.Array]:
        """(start_logits (B, L), end_logits (B, L))."""
        hidden = self.bert(input_ids, **inputs).last_hidden_state
        return span_logits(self.qa_outputs(hidden))


def span_logits(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, L, 2) → (start_logits (B, L), end_logits (B, L)) in fp32."""
    logits = logits.astype(jnp.float32)
    return logits[..., 0], logits[..., 1]
