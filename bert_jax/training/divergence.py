"""Where a run began to diverge, so that a NaN stop keeps a checkpoint from before it.

A diverging run rarely goes from a sane loss to NaN in one step: the loss first leaves its range
(e.g. 7 -> 9e6 -> 3e10 -> NaN) while still finite. Checkpoints written in that stretch hold wrecked
weights; resuming from one with a lower learning rate only reaches the NaN again. So the Trainer
keeps, on device and at no host-sync cost, a small record updated every step:
  first_bad:    first step whose loss or gradient norm was not finite (0: none yet);
  stretch:      first step of the current run of *abnormal* steps (0: the last step was normal),
                abnormal = not finite, or loss > SPIKE_FACTOR * average + SPIKE_MARGIN;
  average:      exponential moving average of the normal steps' losses.
The loss of step s is computed on the weights after s - 1 updates, so an abnormal loss at step s
condemns checkpoint s - 1 too: the checkpoint to keep is the newest at or before s - 2. While a
stretch lasts, the Trainer writes no checkpoint (the good ones are not rotated out by bad ones).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

SPIKE_FACTOR = 2.0  # a loss more than double its recent average ...
SPIKE_MARGIN = 1.0  # ... plus one (nats): batch-to-batch noise at low losses is not divergence
DECAY = 0.9  # of the average: about the last 10 normal steps


def init() -> dict:
    """The record before the first step (replicate it on the mesh)."""
    zero = jnp.zeros((), jnp.int32)
    return {"first_bad": zero, "stretch": zero, "average": jnp.zeros(()), "seen": zero}


def update(record: dict, metrics: dict, step) -> dict:
    """The record after `step`, whose train metrics hold "loss" and "grad_norm" (jit this)."""
    loss = jnp.asarray(metrics["loss"], jnp.float32)
    finite = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])
    seen = record["seen"] > 0
    spike = seen & (loss > SPIKE_FACTOR * record["average"] + SPIKE_MARGIN)
    abnormal = ~finite | spike
    step = jnp.int32(step)
    stretch = jnp.where(abnormal, jnp.where(record["stretch"] == 0, step, record["stretch"]), 0)
    average = jnp.where(seen, DECAY * record["average"] + (1 - DECAY) * loss, loss)
    already_bad = record["first_bad"] != 0
    return {
        "first_bad": jnp.where(~already_bad & ~finite, step, record["first_bad"]),
        # Frozen once a step was not finite: it marks where that divergence began.
        "stretch": jnp.where(already_bad, record["stretch"], stretch),
        "average": jnp.where(abnormal, record["average"], average),
        "seen": record["seen"] + (~abnormal).astype(jnp.int32),
    }


@dataclasses.dataclass(frozen=True)
class Health:
    """The record on the host, read at log and checkpoint steps."""

    first_bad: int  # 0: every step so far was finite
    stretch: int  # 0: the latest step was normal

    @classmethod
    def read(cls, record: dict) -> Health:
        values = jax.device_get({k: record[k] for k in ("first_bad", "stretch")})
        return cls(int(values["first_bad"]), int(values["stretch"]))

    @property
    def diverged_from(self) -> int:
        """The first step of the divergence that ended in a non-finite step (0: none)."""
        if not self.first_bad:
            return 0
        return self.stretch if 0 < self.stretch <= self.first_bad else self.first_bad

    def checkpoint_to_keep(self, steps: list[int]) -> int | None:
        """The newest of checkpoint `steps` made before the divergence began, or None."""
        good = [s for s in steps if s <= self.diverged_from - 2]
        return max(good) if good else None
