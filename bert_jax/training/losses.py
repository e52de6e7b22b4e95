"""Losses for every head, in float32. Each returns a scalar mean, matching HF PyTorch's reductions.

For gradient accumulation the MLM loss is also available as (sum, count) so micro-batches can be
combined exactly: mean over all masked tokens of the big batch, not a mean of means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

IGNORE_INDEX = -100  # label value that contributes nothing (HF convention)


def weighted_cross_entropy(logits, labels, weights) -> tuple[jax.Array, jax.Array]:
    """Σ w·CE and Σ w. logits (..., C), labels (...) int, weights (...) float."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    weights = weights.astype(jnp.float32)
    return jnp.sum(ce * weights), jnp.sum(weights)


def mlm_loss(logits, masked_ids, masked_weights) -> jax.Array:
    """Mean CE over real masked positions. logits (B, P, V); masked_ids/weights (B, P)."""
    total, count = weighted_cross_entropy(logits, masked_ids, masked_weights)
    return total / jnp.maximum(count, 1.0)


def classification_loss(logits, labels) -> jax.Array:
    """Mean CE; logits (B, C), labels (B,). With C == 1 it is regression: mean squared error."""
    if logits.shape[-1] == 1:
        return jnp.mean((logits[..., 0] - labels.astype(jnp.float32)) ** 2)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def token_classification_loss(logits, labels) -> jax.Array:
    """Mean CE over tokens whose label is not IGNORE_INDEX. logits (B, L, C), labels (B, L)."""
    valid = labels != IGNORE_INDEX
    total, count = weighted_cross_entropy(logits, jnp.where(valid, labels, 0), valid)
    return total / jnp.maximum(count, 1.0)


def qa_loss(start_logits, end_logits, start_positions, end_positions) -> jax.Array:
    """(CE(start) + CE(end)) / 2; logits (B, L), positions (B,). As HF: positions are clamped to
    [0, L] and a position equal to L (an answer outside the window) is ignored."""
    length = start_logits.shape[-1]

    def one_side(logits, positions):
        positions = jnp.clip(positions, 0, length)
        valid = positions < length
        total, count = weighted_cross_entropy(logits, jnp.where(valid, positions, 0), valid)
        return total / jnp.maximum(count, 1.0)

    return (one_side(start_logits, start_positions) + one_side(end_logits, end_positions)) / 2.0
