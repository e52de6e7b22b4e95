"""What an MLM score means: the same held-out tokens scored by a model that ignores context.

A unigram model predicts every masked token from the tokens' frequencies alone: its expected loss
is the entropy of the held-out documents' token distribution, and its accuracy the share of the
most frequent token. A pretrained model that only reaches those numbers has learnt frequencies,
not language; the gap below them is what context bought.
"""

from __future__ import annotations

import numpy as np


def unigram_baseline(input_ids: np.ndarray, real: np.ndarray, special_ids) -> dict[str, float]:
    """{"unigram_loss" (nats), "unigram_accuracy"} over the maskable tokens: `input_ids` (R, L)
    where `real` (R, L) is true, special tokens excluded (they are never masked)."""
    ids = np.asarray(input_ids)[np.asarray(real, bool)]
    ids = ids[~np.isin(ids, np.asarray(sorted(special_ids)))]
    if ids.size == 0:
        return {"unigram_loss": float("nan"), "unigram_accuracy": float("nan")}
    counts = np.bincount(ids).astype(np.float64)
    p = counts[counts > 0] / ids.size
    entropy = max(0.0, float(-(p * np.log(p)).sum()))
    return {"unigram_loss": entropy, "unigram_accuracy": float(p.max())}


def batches_unigram_baseline(batches, special_ids) -> dict[str, float]:
    """`unigram_baseline` over the original tokens of masked batches (the masked positions put
    back from `masked_ids`): the same held-out rows the MLM evaluation scores."""
    ids, real = [], []
    for batch in batches:
        original = np.array(batch["input_ids"], copy=True)
        rows, cols = np.nonzero(np.asarray(batch["masked_weights"]) > 0)
        original[rows, np.asarray(batch["masked_positions"])[rows, cols]] = np.asarray(
            batch["masked_ids"]
        )[rows, cols]
        ids.append(original)
        real.append(np.asarray(batch["attention_mask"]) > 0)
    if not ids:
        return unigram_baseline(np.zeros((0, 0), np.int64), np.zeros((0, 0), bool), special_ids)
    return unigram_baseline(np.concatenate(ids), np.concatenate(real), special_ids)
