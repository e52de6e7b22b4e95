"""Orbax CheckpointManager over the full training state, plus a JSON side-car for the data pipeline.

Each step directory holds two items:
  state/  the array pytree (params as `nnx.State`, optax state, step, raw rng key data) — orbax
          flattens `nnx.State` like any pytree and restores it as `nnx.State`, so no conversion.
  data/   a small JSON dict (e.g. the data iterator's position).

Saves are synchronous and atomic (written to a `<step>.orbax-checkpoint-tmp*` dir, then renamed),
so once `save` returns the checkpoint survives a SIGKILL; a save killed half-way leaves only a temp
dir, which is never listed and is cleaned up when the next Checkpointer opens the directory.
`restore` walks back from the newest step past any that fail to read (truncated or deleted files).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bert_jax.errors import BertJaxError


class Checkpointer:
    """Keeps the newest `max_to_keep` checkpoints of (state pytree, data dict) under `directory`.

    Call every method on every process; orbax coordinates who writes what.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3):
        directory = os.fspath(directory)
        if "://" not in directory:  # local paths must be absolute for orbax; keep gs:// etc. as is
            directory = os.path.abspath(directory)
        self.directory = directory
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=max_to_keep),
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,
        )
        self._manager = ocp.CheckpointManager(
            directory, options=options, item_names=("state", "data")
        )

    def latest_step(self) -> int | None:
        """Newest step on disk (not checked for readability), or None."""
        self._manager.reload()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict) -> bool:
        """Write `state` and `data_state` as checkpoint `step`; returns whether it saved.

        Checkpoints at steps >= `step` are deleted first: they belong to a run we resumed from an
        earlier step (or are the unreadable one we skipped), so the directory keeps a single
        timeline. The Trainer decides when to save (`train.checkpoint_every`).
        """
        step = int(step)
        for stale in self.all_steps():
            if stale >= step:
                self._manager.delete(stale)
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))
            ),
        )
        self._manager.wait_until_finished()
        return bool(saved)

    def restore(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """Restore the newest readable checkpoint into the structure of `abstract_state`.

        `abstract_state` leaves are `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`) or arrays;
        restored arrays get their `.sharding` (replicated over all devices where it is missing).
        An unreadable newest checkpoint is skipped with a warning naming its step.
        Returns `(step, state, data_state)`, or None when the directory has no checkpoint.
        """
        steps = self.all_steps()
        if not steps:
            return None
        target = _with_shardings(abstract_state)
        errors = []
        for step in reversed(steps):
            try:
                out = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # orbax/tensorstore raise many types for a damaged step
                first_line = (str(e).splitlines() or [""])[0][:200]
                errors.append(f"step {step}: {type(e).__name__}: {first_line}")
                if step != steps[0]:
                    warnings.warn(
                        f"checkpoint step {step} in {self.directory} is unreadable "
                        f"({type(e).__name__}); falling back to an earlier step",
                        stacklevel=2,
                    )
                continue
            return step, out.state, dict(out.data or {})
        raise BertJaxError(
            f"no checkpoint in {self.directory} could be restored into the given state "
            f"({errors[-1]})"
        )

    def close(self) -> None:
        self._manager.close()


def _with_shardings(tree: Any) -> Any:
    """Every leaf as a ShapeDtypeStruct carrying a sharding, so orbax places arrays directly."""
    fallback = NamedSharding(Mesh(np.array(jax.devices()), ("all",)), P())

    def leaf(x):
        sharding = getattr(x, "sharding", None) or fallback
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(leaf, tree)
