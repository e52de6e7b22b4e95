"""Dynamic MLM masking as a pure function of (seed, epoch, row index).

Each row draws from its own generator `np.random.default_rng([seed, epoch, index])`, so a row's
masks do not depend on batch order, worker count, or how a run was resumed, and a new epoch
masks the same row differently. Chosen tokens become [MASK] 80%, a random non-special token 10%,
and stay unchanged 10% of the time (BERT, Devlin et al. 2019, appendix A.1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from bert_jax.errors import BertJaxError


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """What `mask_row` needs besides the row and its (seed, epoch, index)."""

    vocab_size: int
    mask_id: int
    special_ids: tuple[int, ...]  # never masked, never drawn as random replacements
    mask_rate: float = 0.15
    max_predictions: int = 20  # P: masked_positions etc. have this width
    whole_word: bool = False

    @classmethod
    def for_tokenizer(cls, tokenizer, **overrides) -> MaskingConfig:
        return cls(vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
                   special_ids=tuple(sorted(tokenizer.special_ids)), **overrides)

    def kwargs(self) -> dict:
        return dataclasses.asdict(self)


def mask_row(row: dict[str, np.ndarray], *, seed: int, epoch: int, index: int, vocab_size: int,
             mask_id: int, special_ids: Iterable[int], mask_rate: float = 0.15,
             max_predictions: int = 20, whole_word: bool = False) -> dict[str, np.ndarray]:
    """Mask one row (a dict of 1-D arrays with input_ids, attention_mask, and word_ids if
    whole_word). Returns a new dict: the row with input_ids masked, plus masked_positions and
    masked_ids (int32, sorted by position) and masked_weights (float32, 1 real / 0 padding), all
    of length max_predictions.

    Eligible tokens are real (attention_mask 1) and not special. The row gets
    min(max_predictions, max(1, round(mask_rate * eligible))) predictions (0 if none eligible).
    With whole_word, whole words (tokens sharing a word_id) are picked in random order, skipping
    any that would overshoot the count, so a word is masked entirely or not at all.
    """
    specials = np.asarray(sorted(set(int(s) for s in special_ids)), np.int64)
    ids = np.asarray(row["input_ids"])
    eligible = np.asarray(row["attention_mask"]).astype(bool)
    for s in specials:  # a few ids: faster than np.isin
        eligible &= ids != s
    n_eligible = int(eligible.sum())
    k = min(max_predictions, max(1, round(mask_rate * n_eligible))) if n_eligible else 0
    rng = np.random.default_rng([seed, epoch, index])
    if whole_word:
        if "word_ids" not in row:
            raise BertJaxError("whole-word masking needs word_ids in the rows")
        positions = _pick_whole_words(np.asarray(row["word_ids"]), eligible, k, rng)
    else:
        candidates = np.flatnonzero(eligible)
        positions = np.sort(candidates[rng.permutation(len(candidates))[:k]])
    n = len(positions)
    # Always draw both arrays, so the row's stream is the same whatever the outcomes are.
    u = rng.random(n)
    random_ids = _non_special_ids(rng.integers(0, vocab_size - _count_below(specials, vocab_size),
                                               size=n), specials)
    original = ids[positions]
    new_ids = np.where(u < 0.8, mask_id, np.where(u < 0.9, random_ids, original))
    out = dict(row)
    out["input_ids"] = ids.copy()
    out["input_ids"][positions] = new_ids
    out["masked_positions"] = np.zeros(max_predictions, np.int32)
    out["masked_ids"] = np.zeros(max_predictions, np.int32)
    out["masked_weights"] = np.zeros(max_predictions, np.float32)
    out["masked_positions"][:n] = positions
    out["masked_ids"][:n] = original
    out["masked_weights"][:n] = 1.0
    return out


def mask_batch(rows: dict[str, np.ndarray], *, seed: int, epochs: Sequence[int] | np.ndarray,
               indices: Sequence[int] | np.ndarray, **mask_kwargs) -> dict[str, np.ndarray]:
    """`mask_row` over a batch (dict of (B, ...) arrays); row b uses (seed, epochs[b], indices[b]).

    Exactly equal to stacking mask_row results, so batch composition never changes a row's masks.
    """
    batch = len(indices)
    masked = [mask_row({k: v[b] for k, v in rows.items()}, seed=seed, epoch=int(epochs[b]),
                       index=int(indices[b]), **mask_kwargs) for b in range(batch)]
    if not masked:
        raise BertJaxError("cannot mask an empty batch")
    return {k: np.stack([m[k] for m in masked]) for k in masked[0]}


def _pick_whole_words(word_ids: np.ndarray, eligible: np.ndarray, k: int, rng) -> np.ndarray:
    """Positions of whole words, visited in random order, totalling at most k tokens."""
    word_ids = word_ids.astype(np.int64)
    # An eligible token without a word (-1) counts as a one-token word of its own.
    orphan = eligible & (word_ids < 0)
    word_ids = np.where(orphan, -2 - np.arange(len(word_ids)), word_ids)
    pos = np.flatnonzero(eligible)
    words, inverse, counts = np.unique(word_ids[pos], return_inverse=True, return_counts=True)
    chosen = np.zeros(len(words), bool)
    budget = k
    for w in rng.permutation(len(words)):
        if budget == 0:
            break
        if counts[w] <= budget:
            chosen[w] = True
            budget -= counts[w]
    return pos[chosen[inverse]]  # ascending, since pos is


def _count_below(specials: np.ndarray, vocab_size: int) -> int:
    return int((specials < vocab_size).sum())


def _non_special_ids(draws: np.ndarray, specials: np.ndarray) -> np.ndarray:
    """Map draws from [0, vocab - #specials) onto the ids in [0, vocab) that are not special."""
    out = draws.astype(np.int64)
    for s in specials:  # ascending: shift past each special id at or below the running value
        out = out + (out >= s)
    return out
