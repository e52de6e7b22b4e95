"""The building blocks of every BERT-style encoder: embeddings, post-LN attention and feed-forward.

Shapes: B batch, L sequence length, D hidden size, E embedding width (ELECTRA's embedding_size,
else D). Parameters live in `config.param_dtype`; matmuls run in `config.dtype`; LayerNorm and
softmax always in fp32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.model.attention import dot_product_attention
from bert_jax.model.config import BertConfig
from bert_jax.model.dropout import Dropout
from bert_jax.model.precision import dot_general


def gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)  # HF "gelu" is the exact erf form


def gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


# Module-level functions (not lambdas) so identical models hash identically and share jit caches.
# The hidden_act names every family shares; each adds its own (BERT tanh, ModernBERT silu).
COMMON_ACTIVATIONS = {
    "gelu": gelu_exact,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": jax.nn.relu,
}
_ACTIVATIONS = {**COMMON_ACTIVATIONS, "tanh": jnp.tanh}


def activation(name: str):
    return _ACTIVATIONS[name]


def attend(q, k, v, mask, drop: Dropout, return_probs: bool = False):
    """dot_product_attention with `drop` on the probabilities while it is active: that needs
    the explicit path; eval (and rate 0) use the fused one. q, k, v (B, L, H, K) → context
    (B, L, H, K), probs (B, H, L, L) or None."""
    training = not drop.deterministic and drop.rate > 0.0
    return dot_product_attention(
        q,
        k,
        v,
        mask,
        dropout_rate=drop.rate if training else 0.0,
        dropout_rng=drop.rngs() if training else None,
        return_probs=return_probs,
    )


def dense(config: BertConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        dtype=config.compute_dtype,
        param_dtype=config.weights_dtype,
        kernel_init=nnx.initializers.normal(config.initializer_range),
        dot_general=dot_general,  # bf16: fp32 accumulation on the fast kernels (precision.py)
        rngs=rngs,
    )


def layer_norm(config: BertConfig, rngs: nnx.Rngs, size: int | None = None) -> nnx.LayerNorm:
    # dtype=float32: statistics and output in fp32 whatever the compute dtype.
    return nnx.LayerNorm(
        size or config.hidden_size,
        epsilon=config.layer_norm_eps,
        dtype=jnp.float32,
        param_dtype=config.weights_dtype,
        rngs=rngs,
    )


def _embed(config: BertConfig, num: int, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(
        num,
        config.embedding_dim,
        dtype=config.compute_dtype,
        param_dtype=config.weights_dtype,
        embedding_init=nnx.initializers.normal(config.initializer_range),
        rngs=rngs,
    )


class Embeddings(nnx.Module):
    """word + position (+ token type) rows, LayerNorm, dropout → (B, L, E).

    `type_vocab_size` 0 (DistilBERT) means no token-type table; 1 (RoBERTa) means one row added
    everywhere, whatever token_type_ids say (its tokenizers return none, as HF's)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.word = _embed(config, config.vocab_size, rngs)
        self.position = _embed(config, config.max_position_embeddings, rngs)
        types = config.type_vocab_size
        self.token_type = _embed(config, types, rngs) if types else None
        self.norm = layer_norm(config, rngs, config.embedding_dim)
        self.dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)
        self.dtype = config.compute_dtype
        # HF's nn.Embedding(padding_idx=...): lookups of the padding row pass it no gradient
        # (it matters when a padding token's state is scored, e.g. <s> of a left-padded row).
        self.pad_id = config.pad_token_id
        self.pad_position = config.pad_token_id if config.position_offset else None

    def __call__(self, input_ids, token_type_ids, position_ids, inputs_embeds=None) -> jax.Array:
        # Rows are read from the stored (fp32) tables and summed before the cast to the compute
        # dtype, so the backward scatter-adds run in fp32: bf16 scatter-adds are emulated with
        # compare-and-swap loops on GPUs (3/4 of a bf16 BERT-base step on an H100). The tiny
        # token-type table is read through a one-hot product, whose gradient is a sum rather than
        # B·L atomic adds into the same two rows.
        # `inputs_embeds` (B, L, E) replaces the word-embedding lookup (integrated gradients).
        positions = _rows(self.position, position_ids, self.pad_position)
        words = _rows(self.word, input_ids, self.pad_id) if inputs_embeds is None else inputs_embeds
        x = words.astype(positions.dtype) + positions
        if self.token_type is not None:
            types = self.token_type.embedding[...]  # (type_vocab_size, E)
            if types.shape[0] == 1:
                x = x + types[0]
            else:
                one_hot = jax.nn.one_hot(token_type_ids, types.shape[0], dtype=types.dtype)
                x = x + jnp.einsum(
                    "blt,td->bld", one_hot, types, precision=jax.lax.Precision.HIGHEST
                )
        return self.dropout(self.norm(x).astype(self.dtype))


def _rows(table: nnx.Embed, ids: jax.Array, frozen_id: int | None = None) -> jax.Array:
    """table[ids] (..., E) in the table's stored dtype; row `frozen_id` gets no gradient."""
    rows = jnp.take(table.embedding[...], ids, axis=0)
    if frozen_id is None:
        return rows
    return jnp.where((ids == frozen_id)[..., None], jax.lax.stop_gradient(rows), rows)


class SelfAttention(nnx.Module):
    """Multi-head self-attention + output projection + residual + LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = dense(config, d, d, rngs)
        self.key = dense(config, d, d, rngs)
        self.value = dense(config, d, d, rngs)
        self.output = dense(config, d, d, rngs)
        self.norm = layer_norm(config, rngs)
        self.dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)
        self.attention_dropout = Dropout(config.attention_probs_dropout_prob, rngs=rngs)

    def __call__(self, x, mask, *, return_probs: bool = False):
        batch, length, _ = x.shape
        split = lambda t: t.reshape(batch, length, self.num_heads, -1)  # (B, L, H, D/H)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        context, probs = attend(q, k, v, mask, self.attention_dropout, return_probs)
        y = self.dropout(self.output(context.reshape(batch, length, -1)))
        return self.norm(x + y).astype(x.dtype), probs


class FeedForward(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.intermediate = dense(config, config.hidden_size, config.intermediate_size, rngs)
        self.output = dense(config, config.intermediate_size, config.hidden_size, rngs)
        self.norm = layer_norm(config, rngs)
        self.dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)
        self.act = activation(config.hidden_act)

    def __call__(self, x):
        h = self.intermediate(x)  # (B, L, F)
        # In training the activation act(h) is recomputed in the backward pass instead of kept
        # for it (only h is): B·L·F fewer values held per layer, at the same step time (MiniLM,
        # B=32, L=64: 283 instead of 357 MB of step temporaries). Eval/export trace no remat.
        project = _project if self.dropout.deterministic else nnx.remat(_project)
        y = self.dropout(project(self, h))
        return self.norm(x + y).astype(x.dtype)


def _project(mlp: FeedForward, h: jax.Array) -> jax.Array:
    return mlp.output(mlp.act(h))


class EncoderLayer(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.attention = SelfAttention(config, rngs=rngs)
        self.mlp = FeedForward(config, rngs=rngs)

    def __call__(self, x, mask, *, return_probs: bool = False):
        x, probs = self.attention(x, mask, return_probs=return_probs)
        return self.mlp(x), probs
