"""Orbax CheckpointManager over the full training state, plus a JSON side-car for the data pipeline.

Each step directory holds two items:
  state/  the array pytree (params as `nnx.State`, optax state, step, raw rng key data) — orbax
          flattens `nnx.State` like any pytree and restores it as `nnx.State`, so no conversion.
  data/   a small JSON dict (e.g. the data iterator's position).

Saves are synchronous and atomic (written to a `<step>.orbax-checkpoint-tmp*` dir, then renamed),
so once `save` returns the checkpoint survives a SIGKILL; a save killed half-way leaves only a temp
dir, which is never listed and is cleaned up when the next Checkpointer opens the directory.
`restore` walks back from the newest step past any that fail to read (truncated or deleted files).
A save that fails for a full disk, a quota, a read-only file system or a permission is one
BertJaxError naming the directory (orbax/tensorstore raise these as their own exception types).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import shutil
import sys
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
        self.discard_after(step - 1)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))
        )
        try:
            with _orbax_errors_raised_not_logged():
                saved = self._manager.save(step, args=args)
                self._manager.wait_until_finished()
        except Exception as e:  # orbax/tensorstore wrap OS errors in their own types
            reason = _storage_failure(e)
            if reason is None:
                raise
            self._remove_partial(step)
            raise BertJaxError(
                f"{self.directory}: cannot write checkpoint step {step} ({reason}); make room "
                "(or fix the permissions) and rerun: it resumes from the last complete checkpoint"
            ) from None
        return bool(saved)

    def discard_after(self, step: int) -> list[int]:
        """Delete the checkpoints after `step`; returns their steps."""
        gone = [s for s in self.all_steps() if s > step]
        for s in gone:
            self._manager.delete(s)
        return gone

    def _remove_partial(self, step: int) -> None:
        """The temporary dir of a failed save (it may fill the disk); orbax would only remove it
        when the next run opens the directory."""
        if "://" in self.directory:
            return
        for path in glob.glob(os.path.join(glob.escape(self.directory), f"{step}.orbax-*tmp*")):
            shutil.rmtree(path, ignore_errors=True)

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


# Messages of the OS errors that are the user's to fix (orbax/tensorstore raise e.g. `ValueError:
# RESOURCE_EXHAUSTED: ... Failed to write ...: No space left on device [os_error_code='28']`).
_STORAGE_ERRORS = {
    errno.ENOSPC: "No space left on device",
    errno.EDQUOT: "Disk quota exceeded",
    errno.EROFS: "Read-only file system",
    errno.EACCES: "Permission denied",
}


def _storage_failure(error: BaseException) -> str | None:
    """The reason if `error` (or an error it wraps) is a full disk, a quota, a read-only file
    system or a permission; else None (a bug: its traceback is kept)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRORS:
            return _STORAGE_ERRORS[error.errno]
        for reason in _STORAGE_ERRORS.values():
            if reason in str(error):
                return reason
        error = error.__cause__ or error.__context__
    return None


class _DropErrorRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def _orbax_errors_raised_not_logged():
    """Orbax logs an error of its writer threads (with a traceback) through absl and then raises
    it to the caller; keep only the raise, which the caller turns into one line or a traceback.
    After a failure the echoes of the abandoned writes stay muted: late "Event loop is closed"
    callbacks (see below) and asyncio's "Task exception was never retrieved" for the writes
    orbax gave up on, logged whenever those tasks are collected."""
    loggers, drop = [logging.getLogger(name) for name in ("absl", "asyncio")], _DropErrorRecords()
    for logger in loggers:
        logger.addFilter(drop)
    previous = sys.unraisablehook
    sys.unraisablehook = _closed_loop_callbacks_ignored(previous)
    yield  # on failure the exception propagates from here and the muting stays
    sys.unraisablehook = previous
    for logger in loggers:
        logger.removeFilter(drop)


def _closed_loop_callbacks_ignored(previous):
    """sys.unraisablehook `previous` minus `RuntimeError: Event loop is closed`: once a write of
    a save fails, tensorstore still completes the others orbax gave up on, and each one's
    callback into orbax's closed event loop is reported so (a traceback each, hundreds of
    lines, during the save and after it). They say nothing the error raised does not."""

    def hook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    return hook


def _with_shardings(tree: Any) -> Any:
    """Every leaf as a ShapeDtypeStruct carrying a sharding, so orbax places arrays directly."""
    fallback = NamedSharding(Mesh(np.array(jax.devices()), ("all",)), P())

    def leaf(x):
        sharding = getattr(x, "sharding", None) or fallback
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(leaf, tree)
