"""The pretraining input pipeline: deterministic, resumable, sharded batches of masked rows.

The global batch for step s is a pure function of (seed, s): positions s*B .. (s+1)*B - 1 of the
endless sequence "epoch 0 order, epoch 1 order, ...", where epoch e's order is a permutation of the
rows seeded by (seed, e), and each row is masked with (seed, e, row index). Resuming is therefore
just "start at step s" (the state is the step), any batch can be rebuilt with `batch_at(s)`, and
hosts never need to talk: host h takes the h-th contiguous block of each global batch, so the
global array the hosts assemble (in process order) is the one-host batch, row for row. grain runs
the batch function in a background thread and keeps `prefetch` batches ready.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator

import grain
import jax
import numpy as np

from bert_jax.data.masking import MaskingConfig, mask_batch
from bert_jax.data.packing import build_nsp_rows, build_packed_rows
from bert_jax.errors import BertJaxError

# The training step consumes exactly these (plus next_sentence_label (B,) in NSP mode).
BATCH_KEYS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "segment_ids",
    "position_ids",
    "masked_positions",
    "masked_ids",
    "masked_weights",
)


def pretrain_rows(
    docs, tokenizer, max_length: int, *, nsp: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
    """Packed MLM rows, or NSP sentence-pair rows when `nsp`."""
    if nsp:
        return build_nsp_rows(docs, tokenizer, max_length, seed)
    return build_packed_rows(docs, tokenizer, max_length)


class PretrainBatches(Iterator[dict[str, np.ndarray]]):
    """Endless iterator of this host's share of each global batch (dict of numpy arrays)."""

    def __init__(
        self,
        rows: dict[str, np.ndarray],
        *,
        batch_size: int,
        seed: int,
        masking: MaskingConfig,
        shard_index: int | None = None,
        shard_count: int | None = None,
        shuffle: bool = True,
        prefetch: int = 2,
    ):
        self.rows = _check_rows(rows)
        self.num_rows = len(rows["input_ids"])
        self.batch_size, self.seed, self.masking, self.shuffle = batch_size, seed, masking, shuffle
        self.shard_index = jax.process_index() if shard_index is None else shard_index
        self.shard_count = jax.process_count() if shard_count is None else shard_count
        self.local_batch_size = _local_batch_size(batch_size, self.shard_index, self.shard_count)
        self.prefetch = prefetch
        self._step = 0
        self._iter = None  # grain iterator, (re)built lazily from self._step

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return _permutation(self.num_rows, self.seed, epoch, self.shuffle)

    def global_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, row indices) of the global batch at `step`, each of shape (batch_size,)."""
        if step < 0:
            raise BertJaxError(f"step {step} is negative")
        pos = step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        epochs, within = np.divmod(pos, self.num_rows)
        index = np.empty_like(pos)
        for e in np.unique(epochs):  # a batch can straddle an epoch boundary
            sel = epochs == e
            index[sel] = self._epoch_order(int(e))[within[sel]]
        return epochs, index

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """This host's part of the global batch at `step`, rebuilt from scratch."""
        epochs, index = self.global_rows(step)
        epochs = _host_block(epochs, self.shard_index, self.shard_count)
        index = _host_block(index, self.shard_index, self.shard_count)
        return _masked(self.rows, index, epochs, self.seed, self.masking)

    def __iter__(self) -> PretrainBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.prefetch <= 0:
            batch = self.batch_at(self._step)
        else:
            if self._iter is None:
                steps = grain.MapDataset.range(self._step, sys.maxsize).map(self.batch_at)
                options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=self.prefetch)
                self._iter = iter(steps.to_iter_dataset(options))
            batch = next(self._iter)
        self._step += 1
        return batch

    def get_state(self) -> dict:
        """JSON-able: the next step, plus what must match for it to mean the same batches."""
        return {
            "step": self._step,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_rows": self.num_rows,
            "shuffle": self.shuffle,
        }

    def set_state(self, state: dict) -> None:
        """Continue from a `get_state()` result (next batch = batch_at(state['step']))."""
        for key in ("seed", "batch_size", "num_rows", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise BertJaxError(
                    f"data state was saved with {key}={state[key]!r} but this "
                    f"pipeline has {key}={getattr(self, key)!r}"
                )
        self.close()
        self._step = int(state["step"])

    def close(self) -> None:
        """Stop the background prefetch thread (also done on set_state)."""
        if self._iter is not None:
            getattr(self._iter, "close", lambda: None)()
            self._iter = None


def eval_batches(
    rows: dict[str, np.ndarray],
    batch_size: int,
    seed: int,
    *,
    masking: MaskingConfig,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over all rows in order, masked with (seed, epoch 0, row index): the same batches
    every time. The last global batch is padded with all-zero rows (attention_mask 0,
    masked_weights 0, next_sentence_label 0); sharded like PretrainBatches."""
    rows = _check_rows(rows)
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    _local_batch_size(batch_size, shard_index, shard_count)
    n = len(rows["input_ids"])
    for start in range(0, n, batch_size):
        index = _host_block(np.arange(start, start + batch_size), shard_index, shard_count)
        real = index < n
        batch = _masked(rows, np.where(real, index, 0), np.zeros_like(index), seed, masking)
        for value in batch.values():  # padding rows: zeros everywhere, so zero weight
            value[~real] = 0
        yield batch


def _host_block(x: np.ndarray, shard_index: int, shard_count: int) -> np.ndarray:
    """Host `shard_index`'s rows of a global batch: a contiguous block, as `put_batch` (and so
    per-row randomness such as dropout) expects rows in process order."""
    n = len(x) // shard_count
    return x[shard_index * n : (shard_index + 1) * n]


@functools.lru_cache(maxsize=4)
def _permutation(num_rows: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(num_rows)
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def _masked(rows, index, epochs, seed, masking: MaskingConfig) -> dict[str, np.ndarray]:
    picked = {k: v[index] for k, v in rows.items()}
    batch = mask_batch(picked, seed=seed, epochs=epochs, indices=index, **masking.kwargs())
    keys = BATCH_KEYS + (("next_sentence_label",) if "next_sentence_label" in batch else ())
    return {k: batch[k].astype(np.float32 if k == "masked_weights" else np.int32) for k in keys}


def _check_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [k for k in BATCH_KEYS[:5] if k not in rows]
    if missing:
        raise BertJaxError(f"rows lack {', '.join(missing)}")
    n = len(rows["input_ids"])
    if n == 0:
        raise BertJaxError("no rows: the corpus produced no examples")
    for k, v in rows.items():
        if len(v) != n:
            raise BertJaxError(f"rows[{k!r}] has {len(v)} rows, input_ids has {n}")
    return rows


def _local_batch_size(batch_size: int, shard_index: int, shard_count: int) -> int:
    if batch_size <= 0 or batch_size % shard_count:
        raise BertJaxError(
            f"batch_size={batch_size} must be a positive multiple of the "
            f"{shard_count} data shards (hosts)"
        )
    if not 0 <= shard_index < shard_count:
        raise BertJaxError(f"shard_index={shard_index} is outside 0..{shard_count - 1}")
    return batch_size // shard_count
