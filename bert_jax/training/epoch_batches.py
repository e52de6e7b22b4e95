"""Fine-tuning's training batches: endless, length-bucketed, epoch-shuffled and resumable."""

from __future__ import annotations

import math

import jax
import numpy as np

from bert_jax.errors import BertJaxError
from bert_jax.tasks.batching import bucket_for, epoch_order, make_batch
from bert_jax.training.sharding import process_rows


class StopAfter(Exception):
    """`train.stop_after` reached (the run resumes when started again); args[0] is the step."""


class EpochBatches:
    """Endless training batches, resumable: epoch e is the length-bucketed batches of `batch_size`
    features in an order shuffled by (seed, e), the last one padded with weight-0 rows. Batch `step`
    is a pure function of (seed, step), so the state is just the step. Each process gets its
    contiguous block of rows of the global batch. With `stop_after` > 0, asking for batch
    `stop_after` raises `StopAfter`."""

    def __init__(
        self,
        features: list[dict],
        *,
        batch_size: int,
        buckets: list[int],
        pad_id: int,
        seed: int,
        stop_after: int = 0,
    ):
        if not features:
            raise BertJaxError("no training examples")
        self.features, self.batch_size, self.pad_id, self.seed = features, batch_size, pad_id, seed
        self.padded = np.array([bucket_for(len(f["input_ids"]), buckets) for f in features])
        self.steps_per_epoch = math.ceil(len(features) / batch_size)
        if batch_size % jax.process_count():
            raise BertJaxError(
                f"train.batch_size {batch_size} must divide over {jax.process_count()} processes"
            )
        self.stop_after = stop_after
        self._step, self._epoch, self._order = 0, None, None

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order = epoch_order(self.padded, self.batch_size, seed=self.seed, epoch=epoch)
            self._epoch = epoch
        index = self._order[i]
        length = int(self.padded[index].max())
        return process_rows(make_batch(self.features, index, self.batch_size, length, self.pad_id))

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.stop_after and self._step >= self.stop_after:
            raise StopAfter(self._step)
        batch = self.batch_at(self._step)
        self._step += 1
        return batch

    def get_state(self) -> dict:
        return {
            "step": self._step,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_examples": len(self.features),
        }

    def set_state(self, state: dict) -> None:
        for key, mine in (
            ("seed", self.seed),
            ("batch_size", self.batch_size),
            ("num_examples", len(self.features)),
        ):
            if key in state and state[key] != mine:
                raise BertJaxError(
                    f"the checkpoint's data was {key}={state[key]} but this run has "
                    f"{key}={mine}; use a new workdir for a different setup"
                )
        self._step = int(state["step"])
