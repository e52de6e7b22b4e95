"""BERT in Flax NNX, top to bottom: embeddings → post-LN encoder layers → pooler → task heads.

Shapes: B batch, L sequence length, D hidden size, H heads, P masked positions per row.
Parameters live in `config.param_dtype` (fp32); matmuls run in `config.dtype` (bf16 on accelerators);
LayerNorm and softmax always in fp32. Dropout draws from the `nnx.Rngs` given at construction and
is off after `model.eval()`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from bert_jax.model import hf
from bert_jax.model.attention import (
    attention_mask_2d,
    dot_product_attention,
    positions_from_segments,
)
from bert_jax.model.config import BertConfig
from bert_jax.model.precision import dot_general, matmul


def gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)  # HF "gelu" is the exact erf form


def gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


# Module-level functions (not lambdas) so identical models hash identically and share jit caches.
_ACTIVATIONS = {
    "gelu": gelu_exact,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}


def _activation(name: str):
    return _ACTIVATIONS[name]


def _dense(config: BertConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        dtype=config.compute_dtype,
        param_dtype=config.weights_dtype,
        kernel_init=nnx.initializers.normal(config.initializer_range),
        dot_general=dot_general,  # bf16: fp32 accumulation on the fast kernels (precision.py)
        rngs=rngs,
    )


def _layer_norm(config: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # dtype=float32: statistics and output in fp32 whatever the compute dtype.
    return nnx.LayerNorm(
        config.hidden_size,
        epsilon=config.layer_norm_eps,
        dtype=jnp.float32,
        param_dtype=config.weights_dtype,
        rngs=rngs,
    )


def _embed(config: BertConfig, num: int, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(
        num,
        config.hidden_size,
        dtype=config.compute_dtype,
        param_dtype=config.weights_dtype,
        embedding_init=nnx.initializers.normal(config.initializer_range),
        rngs=rngs,
    )


class HFFormat:
    """`from_pretrained` / `save_pretrained` over HF model directories (see bert_jax.model.hf)."""

    @classmethod
    def from_pretrained(
        cls, directory, *, dtype: str | None = None, seed: int = 0, **config_changes
    ):

        return hf.from_pretrained(cls, directory, dtype=dtype, seed=seed, **config_changes)

    def save_pretrained(self, directory, tokenizer=None) -> None:

        hf.save_pretrained(self, directory, tokenizer=tokenizer)


@struct.dataclass
class EncoderOutput:
    last_hidden_state: jax.Array  # (B, L, D) in compute dtype
    pooler_output: jax.Array | None = None  # (B, D)
    hidden_states: tuple[jax.Array, ...] | None = None  # embeddings + each layer, each (B, L, D)
    attentions: tuple[jax.Array, ...] | None = None  # each layer's probs, each (B, H, L, L) fp32


class Embeddings(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.word = _embed(config, config.vocab_size, rngs)
        self.position = _embed(config, config.max_position_embeddings, rngs)
        self.token_type = _embed(config, config.type_vocab_size, rngs)
        self.norm = _layer_norm(config, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)
        self.dtype = config.compute_dtype

    def __call__(self, input_ids, token_type_ids, position_ids, inputs_embeds=None) -> jax.Array:
        # Rows are read from the stored (fp32) tables and summed before the cast to the compute
        # dtype, so the backward scatter-adds run in fp32: bf16 scatter-adds are emulated with
        # compare-and-swap loops on GPUs (3/4 of a bf16 BERT-base step on an H100). The tiny
        # token-type table is read through a one-hot product, whose gradient is a sum rather than
        # B·L atomic adds into the same two rows.
        # `inputs_embeds` (B, L, D) replaces the word-embedding lookup (integrated gradients).
        words = _rows(self.word, input_ids) if inputs_embeds is None else inputs_embeds
        types = self.token_type.embedding[...]  # (type_vocab_size, D)
        one_hot = jax.nn.one_hot(token_type_ids, types.shape[0], dtype=types.dtype)  # (B, L, T)
        x = (
            words.astype(types.dtype)
            + _rows(self.position, position_ids)
            + jnp.einsum("blt,td->bld", one_hot, types, precision=jax.lax.Precision.HIGHEST)
        )
        return self.dropout(self.norm(x).astype(self.dtype))


def _rows(table: nnx.Embed, ids: jax.Array) -> jax.Array:
    """table[ids] (..., D) in the table's stored dtype."""
    return jnp.take(table.embedding[...], ids, axis=0)


class SelfAttention(nnx.Module):
    """Multi-head self-attention + output projection + residual + LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = _dense(config, d, d, rngs)
        self.key = _dense(config, d, d, rngs)
        self.value = _dense(config, d, d, rngs)
        self.output = _dense(config, d, d, rngs)
        self.norm = _layer_norm(config, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)
        self.attention_dropout = nnx.Dropout(config.attention_probs_dropout_prob, rngs=rngs)

    def __call__(self, x, mask, *, return_probs: bool = False):
        batch, length, _ = x.shape
        split = lambda t: t.reshape(batch, length, self.num_heads, -1)  # (B, L, H, D/H)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        # Attention-probability dropout needs the explicit path; eval (and rate 0) use the fused one.
        drop = self.attention_dropout
        training = not drop.deterministic and drop.rate > 0.0
        context, probs = dot_product_attention(
            q,
            k,
            v,
            mask,
            dropout_rate=drop.rate if training else 0.0,
            dropout_rng=drop.rngs() if training else None,
            return_probs=return_probs,
        )
        y = self.dropout(self.output(context.reshape(batch, length, -1)))
        return self.norm(x + y).astype(x.dtype), probs


class FeedForward(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.intermediate = _dense(config, config.hidden_size, config.intermediate_size, rngs)
        self.output = _dense(config, config.intermediate_size, config.hidden_size, rngs)
        self.norm = _layer_norm(config, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)
        self.act = _activation(config.hidden_act)

    def __call__(self, x):
        y = self.dropout(self.output(self.act(self.intermediate(x))))
        return self.norm(x + y).astype(x.dtype)


class EncoderLayer(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.attention = SelfAttention(config, rngs=rngs)
        self.mlp = FeedForward(config, rngs=rngs)

    def __call__(self, x, mask, *, return_probs: bool = False):
        x, probs = self.attention(x, mask, return_probs=return_probs)
        return self.mlp(x), probs


class BertModel(HFFormat, nnx.Module):
    """The encoder. `segment_ids` (packed rows) restrict attention to each token's own segment and
    restart positions per segment (unless `position_ids` are given)."""

    def __init__(self, config: BertConfig, *, add_pooler: bool = True, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        self.layers = nnx.List(
            [EncoderLayer(config, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )
        self.pooler = (
            _dense(config, config.hidden_size, config.hidden_size, rngs) if add_pooler else None
        )

    def __call__(
        self,
        input_ids: jax.Array,  # (B, L) int
        token_type_ids: jax.Array | None = None,  # (B, L) int
        attention_mask: jax.Array | None = None,  # (B, L) 1 real / 0 pad
        segment_ids: jax.Array | None = None,  # (B, L) packed document ids, 0 pad
        position_ids: jax.Array | None = None,  # (B, L)
        *,
        inputs_embeds: jax.Array | None = None,  # (B, L, D) instead of the word embeddings
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
            if segment_ids is not None:
                position_ids = positions_from_segments(segment_ids)
            else:
                position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        mask = attention_mask_2d(attention_mask, segment_ids)

        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
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


# ---------------------------------------------------------------------------------------------
# Heads. Each takes the encoder inputs as keyword arguments (`**inputs`), returns fp32 logits.
# ---------------------------------------------------------------------------------------------


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """(B, L, D), (B, P) → (B, P, D)."""
    return jnp.take_along_axis(x, positions[..., None], axis=1)


class MaskedLMHead(nnx.Module):
    """Transform (dense + act + LayerNorm), then the decoder tied to the word embeddings + bias."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.transform = _dense(config, config.hidden_size, config.hidden_size, rngs)
        self.norm = _layer_norm(config, rngs)
        self.act = _activation(config.hidden_act)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), config.weights_dtype))

    def __call__(self, hidden: jax.Array, word_embeddings: nnx.Embed) -> jax.Array:
        h = self.norm(self.act(self.transform(hidden))).astype(hidden.dtype)
        table = word_embeddings.embedding[...].astype(h.dtype)  # (vocab, D), tied to the input
        logits = matmul(h, table.T) if h.dtype == jnp.bfloat16 else h @ table.T  # (..., vocab)
        return logits.astype(jnp.float32) + self.bias[...].astype(jnp.float32)


class BertForMaskedLM(HFFormat, nnx.Module):
    has_pooler = False

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = BertModel(config, add_pooler=self.has_pooler, rngs=rngs)
        self.mlm = MaskedLMHead(config, rngs=rngs)

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
    has_pooler = True

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = BertModel(config, add_pooler=True, rngs=rngs)
        self.mlm = MaskedLMHead(config, rngs=rngs)
        self.nsp = _dense(config, config.hidden_size, 2, rngs)

    def __call__(self, input_ids, masked_positions=None, **inputs) -> tuple[jax.Array, jax.Array]:
        """(MLM logits (B, P, vocab), next-sentence logits (B, 2); 0 = IsNext, 1 = NotNext)."""
        out = self.bert(input_ids, **inputs)
        hidden = out.last_hidden_state
        if masked_positions is not None:
            hidden = gather_positions(hidden, masked_positions)
        mlm_logits = self.mlm(hidden, self.bert.embeddings.word)
        return mlm_logits, self.nsp(out.pooler_output).astype(jnp.float32)


class BertForSequenceClassification(HFFormat, nnx.Module):
    """Classifier on the pooled [CLS]; `config.num_labels == 1` means regression."""

    has_pooler = True

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = BertModel(config, add_pooler=True, rngs=rngs)
        rate = config.classifier_dropout
        self.dropout = nnx.Dropout(config.hidden_dropout_prob if rate is None else rate, rngs=rngs)
        self.classifier = _dense(config, config.hidden_size, config.num_labels, rngs)

    def __call__(self, input_ids, **inputs) -> jax.Array:
        pooled = self.bert(input_ids, **inputs).pooler_output
        return self.classifier(self.dropout(pooled)).astype(jnp.float32)  # (B, num_labels)


class BertForTokenClassification(HFFormat, nnx.Module):
    has_pooler = False

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = BertModel(config, add_pooler=False, rngs=rngs)
        rate = config.classifier_dropout
        self.dropout = nnx.Dropout(config.hidden_dropout_prob if rate is None else rate, rngs=rngs)
        self.classifier = _dense(config, config.hidden_size, config.num_labels, rngs)

    def __call__(self, input_ids, **inputs) -> jax.Array:
        hidden = self.bert(input_ids, **inputs).last_hidden_state
        return self.classifier(self.dropout(hidden)).astype(jnp.float32)  # (B, L, num_labels)


class BertForQuestionAnswering(HFFormat, nnx.Module):
    has_pooler = False

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = BertModel(config, add_pooler=False, rngs=rngs)
        self.qa_outputs = _dense(config, config.hidden_size, 2, rngs)

    def __call__(self, input_ids, **inputs) -> tuple[jax.Array, jax.Array]:
        """(start_logits (B, L), end_logits (B, L))."""
        hidden = self.bert(input_ids, **inputs).last_hidden_state
        logits = self.qa_outputs(hidden).astype(jnp.float32)
        return logits[..., 0], logits[..., 1]
