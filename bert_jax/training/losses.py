"""Losses for every head, in float32, each in two forms from one function.

`X_sum(...) -> (sum, count)` is what training uses: the objectives (objectives.py) add sums and
counts over the *whole* batch, so k micro-batches give exactly the gradient of one big batch.
`X(...)` is the mean HF PyTorch reports, literally `sum / max(count, 1)` of `X_sum`: the parity
tests (tests/test_parity_hf.py) check these means against transformers, and tests/test_objectives.py
checks that each objective's loss equals them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from bert_jax.tasks.features import IGNORE_INDEX

SumCount = tuple[jax.Array, jax.Array]


def mean(sum_count: SumCount) -> jax.Array:
    """sum / count (a count of 0 gives 0: nothing to average)."""
    total, count = sum_count
    return total / jnp.maximum(count, 1.0)


def weighted_cross_entropy(logits, labels, weights) -> SumCount:
    """Σ w·CE and Σ w. logits (..., C), labels (...) int, weights (...) float."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    weights = weights.astype(jnp.float32)
    return jnp.sum(ce * weights), jnp.sum(weights)


# Each loss's per-element weights: its count is their sum, computable from the batch alone (the
# Trainer divides micro-batch sums by whole-batch counts known before the model runs).


def _ones_if_none(weights, labels) -> jax.Array:
    return jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)


def qa_side_weights(positions, length: int, weights=None) -> jax.Array:
    """(B,) weight of each row's start (or end) CE: 0 where the position is >= L (HF clamps it
    to L and ignores it)."""
    return (jnp.clip(positions, 0, length) < length) * _ones_if_none(weights, positions)


def qa_count(start_positions, end_positions, length: int, weights=None) -> jax.Array:
    """`qa_loss_sum`'s count for sequences of `length` tokens."""
    start = qa_side_weights(start_positions, length, weights)
    end = qa_side_weights(end_positions, length, weights)
    return (jnp.sum(start) + jnp.sum(end)) / 2.0


def token_weights(labels) -> jax.Array:
    """(B, L) 1 where a token has a label, 0 at IGNORE_INDEX."""
    return (labels != IGNORE_INDEX).astype(jnp.float32)


def mlm_loss_sum(logits, masked_ids, masked_weights) -> SumCount:
    """CE over real masked positions. logits (B, P, V); masked_ids/weights (B, P)."""
    return weighted_cross_entropy(logits, masked_ids, masked_weights)


def classification_loss_sum(logits, labels, weights=None) -> SumCount:
    """CE over rows; logits (B, C), labels (B,), weights (B,) (None: all 1; 0 marks padding).
    With C == 1 it is regression: squared error."""
    weights = _ones_if_none(weights, labels)
    if logits.shape[-1] == 1:
        error = logits[..., 0].astype(jnp.float32) - labels.astype(jnp.float32)
        return jnp.sum(weights * error**2), jnp.sum(weights)
    return weighted_cross_entropy(logits, labels, weights)


def token_classification_loss_sum(logits, labels) -> SumCount:
    """CE over tokens whose label is not IGNORE_INDEX. logits (B, L, C), labels (B, L)."""
    safe = jnp.where(labels == IGNORE_INDEX, 0, labels)
    return weighted_cross_entropy(logits, safe, token_weights(labels))


def qa_loss_sum(start_logits, end_logits, start_positions, end_positions, weights=None) -> SumCount:
    """(CE(start) + CE(end)) / 2 per row; logits (B, L), positions (B,), weights (B,) (None: all 1).

    As HF, positions are clamped to [0, L] and a position equal to L (an answer outside the window)
    is ignored. HF averages each side over its own valid rows; here sum and count are halves of
    both sides' totals, which is the same whenever a row's start and end are both valid or both
    not (always so for our features: a window without the answer points both at [CLS])."""
    length = start_logits.shape[-1]
    total = 0.0
    for logits, positions in ((start_logits, start_positions), (end_logits, end_positions)):
        side = qa_side_weights(positions, length, weights)
        safe = jnp.clip(positions, 0, length - 1)  # ignored rows: any in-range index
        total = total + weighted_cross_entropy(logits, safe, side)[0] / 2.0
    return total, qa_count(start_positions, end_positions, length, weights)


def mlm_loss(logits, masked_ids, masked_weights) -> jax.Array:
    """Mean CE over real masked positions (`mlm_loss_sum`'s sum / count)."""
    return mean(mlm_loss_sum(logits, masked_ids, masked_weights))


def classification_loss(logits, labels, weights=None) -> jax.Array:
    """Mean CE, or mean squared error when logits (B, 1) (`classification_loss_sum`)."""
    return mean(classification_loss_sum(logits, labels, weights))


def token_classification_loss(logits, labels) -> jax.Array:
    """Mean CE over labelled tokens (`token_classification_loss_sum`)."""
    return mean(token_classification_loss_sum(logits, labels))


def qa_loss(start_logits, end_logits, start_positions, end_positions, weights=None) -> jax.Array:
    """(CE(start) + CE(end)) / 2 (`qa_loss_sum`)."""
    return mean(qa_loss_sum(start_logits, end_logits, start_positions, end_positions, weights))
