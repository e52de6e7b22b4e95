"""What trains is what the parity tests check: each objective's combined loss (the sums and counts
the Trainer divides) equals the `losses.*` mean that tests/test_parity_hf.py compares with
transformers, on random logits, labels and padding weights; and sums over micro-batches add up to
the whole batch's (exact gradient accumulation)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.tasks.features import IGNORE_INDEX
from bert_jax.training import losses
from bert_jax.training.objectives import (
    ClassificationObjective,
    MaskedLMObjective,
    QAObjective,
    TokenClassificationObjective,
    combined_loss,
    make_objective,
)

B, L, P, V, C = 6, 10, 4, 13, 5


def _objective_loss(objective, outputs, batch):
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    sums, metrics = objective.sums(outputs, batch)
    counts = objective.counts(batch)
    return float(combined_loss(sums, counts)), sums, metrics, counts


def _ce(logits, labels):
    """Per-element cross-entropy in float64 numpy: the independent reference."""
    logits = np.asarray(logits, np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return logz - np.take_along_axis(logits, labels[..., None], -1)[..., 0]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _weights(rng, n):
    """Row weights with padding rows (0) at the end, as the batchers make them."""
    w = np.ones(n, np.float32)
    w[-2:] = 0.0
    return w


@pytest.mark.parametrize("nsp", [False, True])
def test_masked_lm_objective_equals_the_parity_tested_losses(rng, nsp):
    mlm_logits = rng.normal(size=(B, P, V)).astype(np.float32) * 3
    ids = rng.integers(0, V, (B, P))
    masked_weights = (rng.random((B, P)) < 0.7).astype(np.float32)
    attention = np.ones((B, L), np.int32)
    attention[-1] = 0  # a padding row: no NSP loss
    nsp_logits = rng.normal(size=(B, 2)).astype(np.float32)
    nsp_labels = rng.integers(0, 2, B)
    batch = dict(
        masked_ids=ids,
        masked_weights=masked_weights,
        attention_mask=attention,
        next_sentence_label=nsp_labels,
    )
    outputs = (jnp.asarray(mlm_logits), jnp.asarray(nsp_logits)) if nsp else mlm_logits
    loss, sums, metrics, counts = _objective_loss(MaskedLMObjective(nsp), outputs, batch)

    expected = losses.mlm_loss(mlm_logits, ids, masked_weights)
    reference = (_ce(mlm_logits, ids) * masked_weights).sum() / masked_weights.sum()
    if nsp:
        real = attention[:, 0].astype(np.float32)
        expected += losses.classification_loss(nsp_logits, nsp_labels, real)
        reference += (_ce(nsp_logits, nsp_labels) * real).sum() / real.sum()
        hits = (nsp_logits.argmax(-1) == nsp_labels) * real
        assert float(metrics["nsp_accuracy"] / counts["nsp"]) == pytest.approx(hits.sum() / 5)
    np.testing.assert_allclose(loss, float(expected), rtol=1e-6)
    np.testing.assert_allclose(loss, reference, rtol=1e-5)
    hits = (mlm_logits.argmax(-1) == ids) * masked_weights
    assert float(metrics["mlm_accuracy"]) == pytest.approx(hits.sum())
    assert sums.keys() == ({"mlm", "nsp"} if nsp else {"mlm"})


def test_nsp_with_every_row_real_is_the_unweighted_classification_loss(rng):
    """The parity test scores NSP with `classification_loss(logits, labels)` (no weights)."""
    nsp_logits = rng.normal(size=(B, 2)).astype(np.float32)
    labels = rng.integers(0, 2, B)
    batch = dict(
        masked_ids=np.zeros((B, P), np.int32),
        masked_weights=np.zeros((B, P), np.float32),  # no MLM term: NSP alone
        attention_mask=np.ones((B, L), np.int32),
        next_sentence_label=labels,
    )
    mlm_logits = jnp.zeros((B, P, V))
    loss, *_ = _objective_loss(MaskedLMObjective(nsp=True), (mlm_logits, nsp_logits), batch)
    np.testing.assert_allclose(loss, float(losses.classification_loss(nsp_logits, labels)), 1e-6)


@pytest.mark.parametrize("regression", [False, True])
def test_classification_objective_equals_the_parity_tested_loss(rng, regression):
    weights = _weights(rng, B)
    if regression:
        logits = rng.normal(size=(B, 1)).astype(np.float32)
        labels = rng.normal(size=B).astype(np.float32)
        reference = ((logits[:, 0] - labels) ** 2 * weights).sum() / weights.sum()
    else:
        logits = rng.normal(size=(B, C)).astype(np.float32)
        labels = rng.integers(0, C, B)
        reference = (_ce(logits, labels) * weights).sum() / weights.sum()
    batch = dict(labels=labels, weights=weights)
    objective = make_objective("classification", regression)
    assert objective == ClassificationObjective(regression)
    loss, _, metrics, counts = _objective_loss(objective, jnp.asarray(logits), batch)
    np.testing.assert_allclose(loss, float(losses.classification_loss(logits, labels, weights)))
    np.testing.assert_allclose(loss, reference, rtol=1e-5)
    if regression:
        assert metrics == {} and objective.metric_counts == {}
    else:
        hits = ((logits.argmax(-1) == labels) * weights).sum()
        assert float(metrics["accuracy"] / counts["classification"]) == pytest.approx(hits / 4)
    # Without padding rows the weighted loss is the unweighted one the parity test calls.
    full = dict(labels=labels, weights=np.ones(B, np.float32))
    loss, *_ = _objective_loss(objective, jnp.asarray(logits), full)
    np.testing.assert_allclose(loss, float(losses.classification_loss(logits, labels)), 1e-6)


def test_token_classification_objective_skips_ignored_labels(rng):
    logits = rng.normal(size=(B, L, C)).astype(np.float32)
    labels = rng.integers(0, C, (B, L))
    labels[:, 0] = IGNORE_INDEX  # [CLS]
    labels[:, 7:] = IGNORE_INDEX  # padding and continuation pieces
    labels[-1] = IGNORE_INDEX  # a padding row
    objective = make_objective("ner")
    assert objective == TokenClassificationObjective()
    loss, _, metrics, counts = _objective_loss(objective, jnp.asarray(logits), dict(labels=labels))
    valid = labels != IGNORE_INDEX
    assert float(counts["ner"]) == valid.sum()
    np.testing.assert_allclose(loss, float(losses.token_classification_loss(logits, labels)))
    reference = _ce(logits, np.where(valid, labels, 0))[valid].mean()
    np.testing.assert_allclose(loss, reference, rtol=1e-5)
    hits = (logits.argmax(-1) == labels)[valid].sum()
    assert float(metrics["token_accuracy"]) == hits


def test_qa_objective_equals_the_parity_tested_loss(rng):
    start_logits = rng.normal(size=(B, L)).astype(np.float32)
    end_logits = rng.normal(size=(B, L)).astype(np.float32)
    start = rng.integers(0, L, B)
    end = rng.integers(0, L, B)
    start[1], end[1] = L, L + 3  # an answer outside the window: ignored (HF clamps to L)
    weights = _weights(rng, B)
    batch = dict(
        input_ids=np.zeros((B, L), np.int32),
        start_positions=start,
        end_positions=end,
        weights=weights,
    )
    objective = make_objective("qa")
    assert objective == QAObjective()
    loss, *_ = _objective_loss(
        objective, (jnp.asarray(start_logits), jnp.asarray(end_logits)), batch
    )
    expected = losses.qa_loss(start_logits, end_logits, start, end, weights)
    np.testing.assert_allclose(loss, float(expected), rtol=1e-6)
    kept = (weights > 0) & (np.arange(B) != 1)  # HF: each side's mean over its valid rows
    side = lambda logits, at: _ce(logits, np.minimum(at, L - 1))[kept].mean()
    reference = (side(start_logits, start) + side(end_logits, end)) / 2
    np.testing.assert_allclose(loss, reference, rtol=1e-5)


@pytest.mark.parametrize(
    "objective, make_batch",
    [
        (
            MaskedLMObjective(nsp=True),
            lambda r: (
                (r.normal(size=(B, P, V)), r.normal(size=(B, 2))),
                dict(
                    masked_ids=r.integers(0, V, (B, P)),
                    masked_weights=(r.random((B, P)) < 0.5).astype(np.float32),
                    attention_mask=np.ones((B, L), np.int32),
                    next_sentence_label=r.integers(0, 2, B),
                ),
            ),
        ),
        (
            TokenClassificationObjective(),
            lambda r: (
                r.normal(size=(B, L, C)),
                dict(
                    labels=np.where(r.random((B, L)) < 0.3, IGNORE_INDEX, r.integers(0, C, (B, L)))
                ),
            ),
        ),
    ],
)
def test_micro_batch_sums_add_up_to_the_whole_batch(rng, objective, make_batch):
    """Exact accumulation: the halves' sums over the whole batch's counts give its loss."""
    outputs, batch = make_batch(rng)
    outputs = jax_tree(outputs)
    whole, *_ = _objective_loss(objective, outputs, batch)
    counts = objective.counts({k: jnp.asarray(v) for k, v in batch.items()})
    total = 0.0
    for half in (slice(0, B // 2), slice(B // 2, B)):
        part = {k: jnp.asarray(v[half]) for k, v in batch.items()}
        sums, _ = objective.sums(jax_tree(outputs, half), part)
        total += float(combined_loss(sums, counts))
    np.testing.assert_allclose(total, whole, rtol=1e-5)


def jax_tree(outputs, rows=slice(None)):
    if isinstance(outputs, tuple):
        return tuple(jnp.asarray(o, jnp.float32)[rows] for o in outputs)
    return jnp.asarray(outputs, jnp.float32)[rows]
