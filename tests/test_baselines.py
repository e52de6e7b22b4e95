"""The context-free baseline printed beside MLM scores: entropy and majority share of the
held-out tokens, specials and padding excluded, masked tokens put back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bert_jax.data.baselines import batches_unigram_baseline, unigram_baseline


def test_unigram_baseline_is_the_entropy_and_majority_share_of_real_tokens():
    ids = np.array([[2, 5, 6, 6, 3, 0], [2, 7, 6, 3, 0, 0]])
    real = ids != 0
    got = unigram_baseline(ids, real, special_ids={0, 1, 2, 3, 4})
    p = np.array([1, 3, 1]) / 5  # tokens 5, 6 (x3), 7
    assert got["unigram_loss"] == pytest.approx(-(p * np.log(p)).sum())
    assert got["unigram_accuracy"] == pytest.approx(0.6)


def test_masked_tokens_are_put_back_before_counting():
    batch = {
        "input_ids": np.array([[2, 4, 9, 4, 3]]),  # two [MASK]s (id 4) hide 8 and 9
        "attention_mask": np.ones((1, 5), np.int32),
        "masked_positions": np.array([[1, 3, 0]]),
        "masked_ids": np.array([[8, 9, 0]]),
        "masked_weights": np.array([[1.0, 1.0, 0.0]]),
    }
    got = batches_unigram_baseline([batch], special_ids={0, 1, 2, 3, 4})
    assert got["unigram_accuracy"] == pytest.approx(2 / 3)  # 8, 9, 9
    assert got["unigram_loss"] == pytest.approx(
        -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    )
