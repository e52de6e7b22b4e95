"""Batches of task features: padding, length buckets and length-sorted order.

Few distinct shapes mean few compilations: a batch is padded to one of a few lengths
(`length_buckets`) and, in evaluation, always to the same number of rows (padding rows carry
`weights` 0). Training shuffles within and across buckets (`shuffled_batches`); evaluation and
prediction walk the features in length order (`sorted_batches`). Used by fine-tuning, evaluation,
prediction and embeddings alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from bert_jax.tasks.features import IGNORE_INDEX


def shuffled_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    pad_to_multiple_of: int = 8,
    drop_remainder: bool = False,
) -> list[np.ndarray]:
    """Index batches of similar length so short texts don't pay for the longest one in the set.

    Examples are sorted by padded length (rounded up to `pad_to_multiple_of`) and cut into batches.
    With `shuffle`, ties within a padded length are broken randomly and the batch order is shuffled,
    both from `seed`. Every index appears exactly once (unless `drop_remainder` drops the last
    short batch).
    """
    lengths = np.asarray(lengths, np.int64)
    padded = -(-lengths // pad_to_multiple_of) * pad_to_multiple_of
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    order = np.lexsort((tiebreak, padded))  # primary key: padded length
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if drop_remainder and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def epoch_order(
    padded: Sequence[int], batch_size: int, *, seed: int, epoch: int
) -> list[np.ndarray]:
    """Training epoch `epoch`'s batches (index arrays into the examples, whose padded lengths are
    `padded`): same-length batches in an order shuffled by (seed, epoch) alone, so that a resumed
    run, or another framework fed the same batches, sees exactly these."""
    return shuffled_batches(
        padded, batch_size, shuffle=True, seed=seed * 1_000_003 + epoch, pad_to_multiple_of=1
    )


def pad_batch(
    features: Sequence[dict], pad_id: int, multiple_of: int = 8, max_length: int | None = None
) -> dict[str, np.ndarray]:
    """Pads a list of feature dicts to (B, L), L = longest rounded up to `multiple_of`.

    Returns int32 "input_ids" (pad_id), "token_type_ids" (0), "attention_mask" (1 = real token),
    and when present: "labels" — (B, L) padded with -100 for per-token labels, else (B,) int32 or
    float32 — and "start_positions"/"end_positions" (B,). Other keys (offsets, word ids, example
    indices) are host-side metadata and are left out.
    """
    longest = max(len(f["input_ids"]) for f in features)
    length = -(-longest // multiple_of) * multiple_of
    if max_length is not None:
        length = max(min(length, max_length), longest)
    batch = {
        "input_ids": np.full((len(features), length), pad_id, np.int32),
        "token_type_ids": np.zeros((len(features), length), np.int32),
        "attention_mask": np.zeros((len(features), length), np.int32),
    }
    token_labels = "labels" in features[0] and np.ndim(features[0]["labels"]) == 1
    if token_labels:
        batch["labels"] = np.full((len(features), length), IGNORE_INDEX, np.int32)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        batch["input_ids"][i, :n] = f["input_ids"]
        batch["attention_mask"][i, :n] = 1
        if "token_type_ids" in f:
            batch["token_type_ids"][i, :n] = f["token_type_ids"]
        if token_labels:
            batch["labels"][i, :n] = f["labels"]
    if "labels" in features[0] and not token_labels:
        y = np.asarray([f["labels"] for f in features])
        batch["labels"] = y.astype(np.float32 if y.dtype.kind == "f" else np.int32)
    for key in ("start_positions", "end_positions"):
        if key in features[0]:
            batch[key] = np.asarray([f[key] for f in features], np.int32)
    return batch


def length_buckets(max_length: int, smallest: int = 16, per_octave: int = 2) -> list[int]:
    """Padded lengths a batch may take: `per_octave` steps between consecutive powers of two from
    `smallest`, rounded up to multiples of 8, below `max_length`; then `max_length` itself (never
    rounded up: a model with 130 positions takes no 136-token batch). Past 32 tokens, rounding up
    to a bucket pads a text by at most a third (per_octave=2) or a fifth (per_octave=4).
    per_octave=2 (training: few shapes to compile): 64 → [16, 24, 32, 48, 64];
    384 → [16, 24, 32, 48, 64, 96, 128, 192, 256, 384].
    per_octave=4 (prediction): 128 → [16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128]."""
    top = int(max_length)
    sizes, power = {smallest}, smallest
    while power < top:
        step = power // per_octave
        sizes.update(-(-(power + k * step) // 8) * 8 for k in range(1, per_octave + 1))
        power *= 2
    return sorted(s for s in sizes if s < top) + [top]


def fitted_buckets(lengths: Sequence[int], max_length: int, count: int = 4) -> list[int]:
    """At most `count` padded lengths fitted to the data: multiples of 8 from 16 (the last one
    covers the longest example, never past `max_length`) chosen to minimise the padded tokens.

    Each bucket is one compiled shape for training and one for evaluation; a fixed ladder over
    16..max_length compiles shapes the data barely uses. Exact by dynamic programming over the
    distinct rounded lengths (at most max_length / 8 of them)."""
    lengths = np.minimum(np.asarray(lengths, np.int64), max_length)
    if lengths.size == 0 or count < 1:
        return length_buckets(max_length)
    # Below 16 tokens a bucket of its own saves little compute but costs two compilations.
    rounded = np.minimum(np.maximum(-(-lengths // 8) * 8, 16), max_length)
    sizes, counts = np.unique(rounded, return_counts=True)  # ascending candidate boundaries
    covered = np.concatenate([[0], np.cumsum(counts)])  # examples at or below each candidate
    n, k_max = len(sizes), min(count, len(sizes))
    # cost[k, j]: fewest padded tokens for the examples up to sizes[j] with k buckets, the last
    # one at sizes[j]; choice[k, j]: the previous bucket's index.
    cost = np.full((k_max + 1, n), np.inf)
    choice = np.zeros((k_max + 1, n), np.int64)
    cost[1] = covered[1:] * sizes
    for k in range(2, k_max + 1):
        for j in range(k - 1, n):
            options = cost[k - 1, :j] + (covered[j + 1] - covered[1 : j + 1]) * sizes[j]
            choice[k, j] = int(np.argmin(options))
            cost[k, j] = options[choice[k, j]]
    buckets, j = [], n - 1
    for k in range(k_max, 0, -1):
        buckets.append(int(sizes[j]))
        j = choice[k, j]
    return sorted(buckets)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket holding `length` tokens (the largest if none does)."""
    return next((b for b in buckets if b >= length), buckets[-1])


def make_batch(
    features: Sequence[dict], index: Sequence[int], rows: int, length: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Features `index` padded to (rows, length). Rows past len(index) repeat the first feature with
    `weights` 0 (and token labels -100), so every batch of a run has one of a few fixed shapes."""
    index = list(index)
    chosen = [features[i] for i in index] + [features[index[0]]] * (rows - len(index))
    batch = pad_batch(chosen, pad_id, multiple_of=length, max_length=length)
    batch["weights"] = (np.arange(rows) < len(index)).astype(np.float32)  # (rows,) 0 = padding row
    if "labels" in batch and batch["labels"].ndim == 2:
        batch["labels"][len(index) :] = IGNORE_INDEX
    return batch


def sorted_batches(
    features: Sequence[dict],
    batch_size: int,
    buckets: Sequence[int],
    pad_id: int,
    *,
    fixed_rows: bool = True,
) -> Iterator[tuple[np.ndarray, dict]]:
    """(indices, batch) over all features in length order.

    fixed_rows=True (evaluation): every batch has `batch_size` rows. fixed_rows=False (prediction):
    a batch has the next power of two at or above its size, and is also cut before a feature whose
    padded length is more than twice the batch's first, so one long outlier does not pad a whole
    batch of short texts to its length."""
    lengths = np.array([len(f["input_ids"]) for f in features])
    padded = np.array([bucket_for(n, buckets) for n in lengths])
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        stop = min(start + batch_size, len(order))
        if not fixed_rows:  # sorted: the first feature past twice the first padded length
            stop = start + int(
                np.searchsorted(padded[order[start:stop]], 2 * padded[order[start]], side="right")
            )
        index = order[start:stop]
        rows = batch_size if fixed_rows else min(batch_size, 1 << (len(index) - 1).bit_length())
        yield index, make_batch(features, index, rows, padded[index].max(), pad_id)
        start = stop


def rows_of(out, index, lengths, token_level: bool) -> list:
    """Split a batch output (array or tuple of arrays, leading dim = rows) into per-example values;
    token-level outputs are cut to each example's own length."""
    if isinstance(out, (tuple, list)):
        parts = [rows_of(o, index, lengths, token_level) for o in out]
        return list(zip(*parts))
    out = np.asarray(out)
    return [out[j, : lengths[i]] if token_level else out[j] for j, i in enumerate(index)]
