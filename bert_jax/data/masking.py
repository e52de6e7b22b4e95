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
        return cls(
            vocab_size=tokenizer.vocab_size,
            mask_id=tokenizer.mask_id,
            special_ids=tuple(sorted(tokenizer.special_ids)),
            **overrides,
        )

    def kwargs(self) -> dict:
        return dataclasses.asdict(self)


def mask_row(
    row: dict[str, np.ndarray],
    *,
    seed: int,
    epoch: int,
    index: int,
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int],
    mask_rate: float = 0.15,
    max_predictions: int = 20,
    whole_word: bool = False,
) -> dict[str, np.ndarray]:
    """Mask one row (a dict of 1-D arrays with input_ids, attention_mask, and word_ids if
    whole_word). Returns a new dict: the row with input_ids masked, plus masked_positions and
    masked_ids (int32, sorted by position) and masked_weights (float32, 1 real / 0 padding), all
    of length max_predictions.

    Eligible tokens are real (attention_mask 1) and not special. The row gets
    min(max_predictions, max(1, round(mask_rate * eligible))) predictions (0 if none eligible).
    With whole_word, whole words (tokens sharing a word_id) are picked in random order, skipping
    any that would overshoot the count, so a word is masked entirely or not at all.
    """
    out = mask_batch(
        {k: np.asarray(v)[None] for k, v in row.items()},
        seed=seed,
        epochs=[epoch],
        indices=[index],
        vocab_size=vocab_size,
        mask_id=mask_id,
        special_ids=special_ids,
        mask_rate=mask_rate,
        max_predictions=max_predictions,
        whole_word=whole_word,
    )
    return {k: v[0] for k, v in out.items()}


def mask_batch(
    rows: dict[str, np.ndarray],
    *,
    seed: int,
    epochs: Sequence[int] | np.ndarray,
    indices: Sequence[int] | np.ndarray,
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int],
    mask_rate: float = 0.15,
    max_predictions: int = 20,
    whole_word: bool = False,
) -> dict[str, np.ndarray]:
    """`mask_row` for a batch (dict of (B, ...) arrays); row b uses (seed, epochs[b], indices[b]).

    Row b's result equals mask_row on that row alone, so batch composition never changes masks.
    Only the per-row random draws (and whole-word selection) loop in Python.
    """
    ids = np.asarray(rows["input_ids"])  # (B, L)
    batch, length = ids.shape
    if len(epochs) != batch or len(indices) != batch:
        raise BertJaxError(f"{batch} rows but {len(epochs)} epochs and {len(indices)} indices")
    specials = np.asarray(sorted(set(int(s) for s in special_ids)), np.int64)
    eligible = np.asarray(rows["attention_mask"]).astype(bool)
    for s in specials:  # a few ids: faster than np.isin
        eligible &= ids != s
    n_eligible = eligible.sum(1)
    k = np.minimum(max_predictions, np.maximum(1, np.round(mask_rate * n_eligible)))
    k = np.where(n_eligible > 0, k, 0).astype(np.int64)  # (B,)

    scores, u, random_ids = _row_draws(
        seed,
        epochs,
        indices,
        length,
        max_predictions,
        vocab_size - int((specials < vocab_size).sum()),
    )

    if whole_word:
        if "word_ids" not in rows:
            raise BertJaxError("whole-word masking needs word_ids in the rows")
        word_ids = np.asarray(rows["word_ids"])
        chosen = np.zeros((batch, length), bool)
        for b in range(batch):
            chosen[b, _pick_whole_words(word_ids[b], eligible[b], int(k[b]), scores[b])] = True
    else:
        # The k eligible positions with the smallest scores: a uniform sample without replacement.
        order = np.argsort(np.where(eligible, scores, 2.0), axis=1, kind="stable")
        chosen = np.zeros((batch, length), bool)
        np.put_along_axis(chosen, order, np.arange(length) < k[:, None], axis=1)
    return _masked_rows(rows, ids, chosen, u, random_ids, specials, mask_id, max_predictions)


def _masked_rows(rows, ids, chosen, u, random_ids, specials, mask_id: int, max_predictions: int):
    """`rows` with the `chosen` (B, L) positions replaced 80/10/10 ([MASK] / random / kept by the
    draws `u`), and the masked_positions/masked_ids/masked_weights (B, P) the loss reads."""
    length = ids.shape[1]
    # Chosen positions in ascending order, padded with `length` (sorts last), cut to P.
    pos = np.sort(np.where(chosen, np.arange(length), length), axis=1)
    if max_predictions > length:
        pos = np.pad(pos, ((0, 0), (0, max_predictions - length)), constant_values=length)
    pos = pos[:, :max_predictions]
    valid = pos < length  # (B, P)
    pos = np.where(valid, pos, 0)
    original = np.take_along_axis(ids, pos, axis=1)
    replacement = np.where(
        u < 0.8, mask_id, np.where(u < 0.9, _non_special_ids(random_ids, specials), original)
    )
    out = dict(rows)
    out["input_ids"] = ids.copy()
    b_idx, j_idx = np.nonzero(valid)
    out["input_ids"][b_idx, pos[b_idx, j_idx]] = replacement[b_idx, j_idx]
    out["masked_positions"] = np.where(valid, pos, 0).astype(np.int32)
    out["masked_ids"] = np.where(valid, original, 0).astype(np.int32)
    out["masked_weights"] = valid.astype(np.float32)
    return out


def _row_draws(seed, epochs, indices, length: int, max_predictions: int, n_random: int):
    """Each row's random numbers from its own (seed, epoch, index) stream, in fixed-size draws so
    that a row's stream never depends on outcomes: position scores (B, L), the 80/10/10 draw
    (B, P) and random replacement ids (B, P) below `n_random`."""
    batch = len(epochs)
    scores = np.empty((batch, length))
    u = np.empty((batch, max_predictions))
    random_ids = np.empty((batch, max_predictions), np.int64)
    for b in range(batch):
        rng = np.random.default_rng([seed, int(epochs[b]), int(indices[b])])
        scores[b] = rng.random(length)
        u[b] = rng.random(max_predictions)
        random_ids[b] = rng.integers(0, n_random, size=max_predictions)
    return scores, u, random_ids


def _pick_whole_words(
    word_ids: np.ndarray, eligible: np.ndarray, k: int, scores: np.ndarray
) -> np.ndarray:
    """Positions of whole words, visited in order of their first token's score, totalling at
    most k tokens (a word that would overshoot is skipped, as in google-research/bert)."""
    word_ids = word_ids.astype(np.int64)
    # An eligible token without a word (-1) counts as a one-token word of its own.
    orphan = eligible & (word_ids < 0)
    word_ids = np.where(orphan, -2 - np.arange(len(word_ids)), word_ids)
    pos = np.flatnonzero(eligible)
    words, first, inverse, counts = np.unique(
        word_ids[pos], return_index=True, return_inverse=True, return_counts=True
    )
    chosen = np.zeros(len(words), bool)
    budget = k
    for w in np.argsort(scores[pos[first]], kind="stable"):
        if budget == 0:
            break
        if counts[w] <= budget:
            chosen[w] = True
            budget -= counts[w]
    return pos[chosen[inverse]]


def _non_special_ids(draws: np.ndarray, specials: np.ndarray) -> np.ndarray:
    """Map draws from [0, vocab - #specials) onto the ids in [0, vocab) that are not special."""
    out = draws.astype(np.int64)
    for s in specials:  # ascending: shift past each special id at or below the running value
        out = out + (out >= s)
    return out
