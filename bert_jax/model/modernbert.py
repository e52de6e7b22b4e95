"""ModernBERT (arXiv 2412.13663) in Flax NNX: embeddings → pre-LN layers → final norm → heads.

What differs from BERT: no position or token-type tables (rotary positions on queries and keys,
their own base for global and for sliding-window layers); GeGLU feed-forward (`Wi` projects to
2 × intermediate, act(input) * gate); pre-norm residual blocks whose LayerNorms (and, by default,
all linear layers) have no bias; layer 0 has no attention norm (its input is the normalised
embedding); every `global_attn_every_n_layers`-th layer attends globally, the others to keys
within `local_attention // 2` positions; a final LayerNorm. Padded, unpadded-by-mask and packed
rows (`segment_ids`: attention within a segment, positions restarting per segment) share the
mask machinery of bert_jax.model.attention.

Parameter names follow transformers' ModernBert* modules (`Wqkv`, `Wi`, `attn_norm`, ...) so the
HF key table (modernbert_hf.py) is mechanical. Heads keep the encoder at `.bert`, like every
head in bert_jax, so embed/explain find it the same way.
Shapes: B batch, L length, D hidden, H heads, K head_dim, I intermediate, V vocab.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.model import modernbert_hf
from bert_jax.model.attention import (
    attention_mask_2d,
    positions_from_segments,
)
from bert_jax.model.dropout import Dropout
from bert_jax.model.layers import (  # gelu_*: kept importable from here
    COMMON_ACTIVATIONS,
    attend,
    gelu_exact,  # noqa: F401
    gelu_tanh,  # noqa: F401
)
from bert_jax.model.modeling import EncoderOutput, gather_positions
from bert_jax.model.modernbert_config import LOCAL, ModernBertConfig
from bert_jax.model.precision import dot_general, matmul

# Module-level functions so identical models hash identically and share jit caches.
_ACTIVATIONS = {**COMMON_ACTIVATIONS, "silu": jax.nn.silu, "swish": jax.nn.silu}


def _init(config: ModernBertConfig, std: float):
    # HF's truncated normal: cut at ±initializer_cutoff_factor standard deviations.
    cut = config.initializer_cutoff_factor
    return nnx.initializers.truncated_normal(std, lower=-cut, upper=cut)


def _dense(config, d_in, d_out, bias: bool, rngs, std=None) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=config.compute_dtype,
        param_dtype=config.weights_dtype,
        kernel_init=_init(config, config.initializer_range if std is None else std),
        dot_general=dot_general,  # bf16: fp32 accumulation on the fast kernels (precision.py)
        rngs=rngs,
    )


def _out_std(config: ModernBertConfig) -> float:
    """HF's std for layers writing into the residual stream: range / sqrt(2 · layers)."""
    return config.initializer_range / math.sqrt(2.0 * config.num_hidden_layers)


def _norm(config: ModernBertConfig, rngs) -> nnx.LayerNorm:
    # fp32 statistics and output whatever the compute dtype; callers cast back.
    return nnx.LayerNorm(
        config.hidden_size,
        epsilon=config.norm_eps,
        use_bias=config.norm_bias,
        dtype=jnp.float32,
        param_dtype=config.weights_dtype,
        rngs=rngs,
    )


class HFFormat:
    """`from_pretrained` / `save_pretrained` over HF ModernBert* directories (modernbert_hf.py)."""

    @classmethod
    def from_pretrained(cls, directory, *, dtype: str | None = None, seed: int = 0, **changes):
        return modernbert_hf.from_pretrained(cls, directory, dtype=dtype, seed=seed, **changes)

    def save_pretrained(self, directory, tokenizer=None, *, overwrite: bool = False) -> None:
        modernbert_hf.save_pretrained(self, directory, tokenizer=tokenizer, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------
# Rotary positions
# ---------------------------------------------------------------------------------------------


def rotary_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin (B, L, 1, K/2) in fp32 for integer `positions` (B, L)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (B, L, K/2)
    return jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate (B, L, H, K) by position, HF's half-split layout: pairs are (x[i], x[i + K/2])."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------


class Embeddings(nnx.Module):
    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        self.tok_embeddings = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            dtype=config.compute_dtype,
            param_dtype=config.weights_dtype,
            embedding_init=_init(config, config.initializer_range),
            rngs=rngs,
        )
        self.norm = _norm(config, rngs)
        self.drop = Dropout(config.embedding_dropout, rngs=rngs)
        self.dtype = config.compute_dtype

    def __call__(self, input_ids, inputs_embeds=None) -> jax.Array:
        # Rows gathered from the stored (fp32) table; the backward scatter-add stays fp32.
        if inputs_embeds is None:
            inputs_embeds = jnp.take(self.tok_embeddings.embedding[...], input_ids, axis=0)
        return self.drop(self.norm(inputs_embeds).astype(self.dtype))  # (B, L, D)


class Attention(nnx.Module):
    """Fused QKV projection, rotary positions, softmax attention, output projection."""

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.Wqkv = _dense(config, d, 3 * d, config.attention_bias, rngs)
        self.Wo = _dense(config, d, d, config.attention_bias, rngs, std=_out_std(config))
        self.attention_dropout = Dropout(config.attention_dropout, rngs=rngs)
        self.out_drop = Dropout(config.attention_dropout, rngs=rngs)

    def __call__(self, x, rope, mask, *, return_probs: bool = False):
        batch, length, _ = x.shape
        qkv = self.Wqkv(x).reshape(batch, length, 3, self.num_heads, -1)  # (B, L, 3, H, K)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        context, probs = attend(q, k, v, mask, self.attention_dropout, return_probs)
        return self.out_drop(self.Wo(context.reshape(batch, length, -1))), probs


class GeGLU(nnx.Module):
    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        i = config.intermediate_size
        self.Wi = _dense(config, config.hidden_size, 2 * i, config.mlp_bias, rngs)
        self.Wo = _dense(config, i, config.hidden_size, config.mlp_bias, rngs, std=_out_std(config))
        self.drop = Dropout(config.mlp_dropout, rngs=rngs)
        self.act = _ACTIVATIONS[config.hidden_activation]

    def __call__(self, x):
        inputs, gate = jnp.split(self.Wi(x), 2, axis=-1)  # each (B, L, I)
        return self.Wo(self.drop(self.act(inputs) * gate))


class EncoderLayer(nnx.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)). Layer 0's attention norm is the identity."""

    def __init__(self, config: ModernBertConfig, index: int, *, rngs: nnx.Rngs):
        self.attn_norm = _norm(config, rngs) if index > 0 else None
        self.attn = Attention(config, rngs=rngs)
        self.mlp_norm = _norm(config, rngs)
        self.mlp = GeGLU(config, rngs=rngs)
        self.local = config.layer_types[index] == LOCAL

    def __call__(self, x, rope, mask, *, return_probs: bool = False):
        h = x if self.attn_norm is None else self.attn_norm(x).astype(x.dtype)
        y, probs = self.attn(h, rope, mask, return_probs=return_probs)
        x = x + y
        x = x + self.mlp(self.mlp_norm(x).astype(x.dtype))
        return x, probs


class ModernBertModel(HFFormat, nnx.Module):
    """The encoder. `token_type_ids` are accepted and ignored (ModernBERT has none), so every
    bert_jax batch fits; `segment_ids` pack several documents in a row."""

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        self.layers = nnx.List(
            [EncoderLayer(config, i, rngs=rngs) for i in range(config.num_hidden_layers)]
        )
        self.final_norm = _norm(config, rngs)

    def __call__(
        self,
        input_ids: jax.Array,  # (B, L) int
        token_type_ids: jax.Array | None = None,  # ignored
        attention_mask: jax.Array | None = None,  # (B, L) 1 real / 0 pad
        segment_ids: jax.Array | None = None,  # (B, L) packed document ids, 0 pad
        position_ids: jax.Array | None = None,  # (B, L)
        *,
        inputs_embeds: jax.Array | None = None,  # (B, L, D) instead of the token embeddings
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> EncoderOutput:
        del token_type_ids
        c = self.config
        if attention_mask is None:
            attention_mask = (
                segment_ids > 0 if segment_ids is not None else jnp.ones_like(input_ids)
            )
        if position_ids is None:
            if segment_ids is not None:
                position_ids = positions_from_segments(segment_ids)
            else:
                # iota rather than arange: converters with symbolic lengths (jax2onnx) keep L.
                position_ids = jax.lax.broadcasted_iota(jnp.int32, input_ids.shape, 1)
        masks, ropes = _masks(attention_mask, segment_ids, c.local_attention // 2), {}
        for local, theta in ((False, c.global_rope_theta), (True, c.local_rope_theta)):
            ropes[local] = rotary_tables(position_ids, c.head_dim, theta)

        x = self.embeddings(input_ids, inputs_embeds)
        hidden_states, attentions = [x], []
        for layer in self.layers:
            x, probs = layer(
                x, ropes[layer.local], masks[layer.local], return_probs=output_attentions
            )
            hidden_states.append(x)
            attentions.append(probs)
        return EncoderOutput(
            last_hidden_state=self.final_norm(x).astype(x.dtype),
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


def _masks(attention_mask, segment_ids, half_window: int) -> dict[bool, jax.Array]:
    """{local?: bool mask}: global (B, 1, 1|Q, K) and sliding-window |q - k| <= half_window.
    Distances count row indices; packed documents are contiguous, so within a segment that is
    the distance in positions too."""
    full = attention_mask_2d(attention_mask, segment_ids)
    length = attention_mask.shape[1]
    query = jax.lax.broadcasted_iota(jnp.int32, (length, length), 0)
    key = jax.lax.broadcasted_iota(jnp.int32, (length, length), 1)
    window = jnp.abs(query - key) <= half_window  # (Q, K)
    return {False: full, True: full & window[None, None]}


# ---------------------------------------------------------------------------------------------
# Heads: each takes the encoder inputs as keyword arguments and returns fp32 logits.
# ---------------------------------------------------------------------------------------------


class PredictionHead(nnx.Module):
    """dense → act → LayerNorm, before the MLM decoder and the classifiers."""

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.dense = _dense(config, d, d, config.classifier_bias, rngs, std=_out_std(config))
        self.act = _ACTIVATIONS[config.classifier_activation]
        self.norm = _norm(config, rngs)

    def __call__(self, x):
        return self.norm(self.act(self.dense(x))).astype(x.dtype)


class Decoder(nnx.Module):
    """Vocabulary projection: the token embeddings (tied, HF's default) or its own kernel."""

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        v, d, dt = config.vocab_size, config.hidden_size, config.weights_dtype
        self.bias = nnx.Param(jnp.zeros((v,), dt)) if config.decoder_bias else None
        tied = config.tie_word_embeddings
        self.kernel = (
            None if tied else nnx.Param(_init(config, _out_std(config))(rngs(), (d, v), dt))
        )

    def __call__(self, h, tok_embeddings: nnx.Embed) -> jax.Array:
        if self.kernel is None:
            table = tok_embeddings.embedding[...].astype(h.dtype).T  # (D, V)
        else:
            table = self.kernel[...].astype(h.dtype)
        logits = matmul(h, table) if h.dtype == jnp.bfloat16 else h @ table  # (..., V)
        logits = logits.astype(jnp.float32)
        return logits if self.bias is None else logits + self.bias[...].astype(jnp.float32)


class ModernBertForMaskedLM(HFFormat, nnx.Module):
    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = ModernBertModel(config, rngs=rngs)
        self.head = PredictionHead(config, rngs=rngs)
        self.decoder = Decoder(config, rngs=rngs)

    def __call__(self, input_ids, masked_positions=None, **inputs) -> jax.Array:
        """Logits (B, P, V) at `masked_positions` (B, P), or (B, L, V) when None."""
        hidden = self.bert(input_ids, **inputs).last_hidden_state
        if masked_positions is not None:
            hidden = gather_positions(hidden, masked_positions)
        return self.decoder(self.head(hidden), self.bert.embeddings.tok_embeddings)


class _Classifier(nnx.Module):
    """Encoder → prediction head → dropout → classifier (with bias), HF's layout for all three."""

    outputs: int | None = None  # fixed output count (QA), else config.num_labels

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = ModernBertModel(config, rngs=rngs)
        self.head = PredictionHead(config, rngs=rngs)
        self.drop = Dropout(config.classifier_dropout, rngs=rngs)
        n = self.outputs or config.num_labels
        self.classifier = _dense(
            config, config.hidden_size, n, True, rngs, config.hidden_size**-0.5
        )

    def _logits(self, hidden):
        return self.classifier(self.drop(self.head(hidden))).astype(jnp.float32)


class ModernBertForSequenceClassification(HFFormat, _Classifier):
    """Pools by `config.classifier_pooling`: the first token ("cls") or the masked mean."""

    def __call__(self, input_ids, **inputs) -> jax.Array:
        hidden = self.bert(input_ids, **inputs).last_hidden_state  # (B, L, D)
        if self.config.classifier_pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = inputs.get("attention_mask")
            if mask is None:
                mask = jnp.ones(hidden.shape[:2], hidden.dtype)
            mask = mask.astype(jnp.float32)[..., None]  # (B, L, 1)
            total = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)
            pooled = (total / jnp.sum(mask, axis=1)).astype(hidden.dtype)  # (B, D)
        return self._logits(pooled)  # (B, num_labels)


class ModernBertForTokenClassification(HFFormat, _Classifier):
    def __call__(self, input_ids, **inputs) -> jax.Array:
        return self._logits(self.bert(input_ids, **inputs).last_hidden_state)  # (B, L, labels)


class ModernBertForQuestionAnswering(HFFormat, _Classifier):
    outputs = 2

    def __call__(self, input_ids, **inputs) -> tuple[jax.Array, jax.Array]:
        """(start_logits (B, L), end_logits (B, L))."""
        logits = self._logits(self.bert(input_ids, **inputs).last_hidden_state)
        return logits[..., 0], logits[..., 1]
