"""A training workdir belongs to one run at a time, and to one config.

`pretrain`, `finetune` and `sweep` claim their workdir for the whole run (`claim`, or the
`claims_workdir` decorator on `fn(config, workdir, ...)`):
  1. the config's values are checked against their ranges (validation.py) before the disk is
     touched;
  2. the workdir must be a writable directory (created if missing);
  3. an advisory lock, `fcntl.flock` on WORKDIR/.lock, is taken without waiting: a second run on
     the same workdir fails with one line naming the holder's PID instead of interleaving
     checkpoints and metrics. The kernel drops the lock when the holder exits in any way
     (SIGKILL included), so there is nothing to clean up;
  4. the config is compared with WORKDIR/experiment_config.json: once the workdir holds results of
     a config (a trained tokenizer, prepared data, checkpoints, a model), a run whose model, data
     or tokenizer settings (or train.seed / batch_size) differ is refused with one line listing
     the changes; optimizer fields and run lengths may change (a lower learning rate is the way
     out of a NaN stop). Only then is experiment_config.json (re)written;
  5. temporaries that killed runs of ours left in the workdir (`.tmp-NAME-PID-*`, `*.old`) are
     removed, and a workdir this run created is removed again if the run fails before writing
     anything but its bookkeeping.
With several processes (jax.distributed) only process 0 does 2-5: all share one workdir.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from typing import Any

import jax

from bert_jax.errors import BertJaxError
from bert_jax.io import pid_alive, read_json, write_json
from bert_jax.training import sharding, validation

LOCK_FILE = ".lock"
CONFIG_FILE = "experiment_config.json"

# What a run compares with the workdir's remembered config: names equal to an entry, or under an
# entry ending in ".". Compute settings that leave results unchanged may differ between runs.
REMEMBERED = {
    "pretrain": ("data.", "model.", "train.seed", "train.batch_size"),
    "finetune": ("task", "model", "data.", "train.seed", "train.batch_size"),
}
REMEMBERED["sweep"] = REMEMBERED["finetune"]
NOT_REMEMBERED = {"dtype", "model.dtype", "data.prepare_workers", "data.length_buckets"}

# Entries that are results of a config: once one exists, the config may no longer change.
RESULTS = ("tokenizer", "dataset", "model", "best", "trials", "sweep.jsonl", "best.json")

# io.py's temporaries: `.tmp-NAME-PID-XXXXXXXX` (mkstemp/mkdtemp), `....old` (replace_dir).
_TEMPORARY = re.compile(r"^\.tmp-.+-(\d+)-[a-z0-9_]{8}(\.old)?$")


def claims_workdir(kind: str):
    """Decorator: `fn(config, workdir, ...)` runs inside `claim(workdir, config, kind)`."""

    def decorate(fn):
        @functools.wraps(fn)
        def run(config, workdir, *args, **kwargs):
            with claim(workdir, config, kind):
                return fn(config, workdir, *args, **kwargs)

        return run

    return decorate


@contextlib.contextmanager
def claim(workdir: str, config: Any, kind: str) -> Iterator[None]:
    """Hold `workdir` for a run of `kind` ("pretrain" | "finetune" | "sweep") with `config` (see
    the module docstring); the lock is released when the block exits."""
    validation.check_config(config, "pretrain" if kind == "pretrain" else "finetune")
    sharding.maybe_initialize_distributed()
    if jax.process_index() != 0:
        yield
        return
    created = _make_workdir(workdir)
    lock = WorkdirLock(workdir)
    try:
        _remove_stale_temporaries(workdir)
        remember_config(workdir, config, kind)
        yield
    except BaseException:
        if created:
            _remove_if_unused(workdir)
        raise
    finally:
        lock.release()


def _make_workdir(workdir: str) -> bool:
    """Create `workdir` if missing (returns whether it did); one error line if it cannot be a
    writable directory."""
    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        raise BertJaxError(f"{workdir}: exists and is not a directory (--workdir needs one)")
    created = not os.path.exists(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise BertJaxError(f"{workdir}: cannot create the workdir ({e.strerror})") from None
    # access() reports a read-only file system even to root; permissions for everyone else.
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise BertJaxError(f"{workdir}: the workdir is not writable")
    return created


class WorkdirLock:
    """An exclusive `flock` on WORKDIR/.lock, taken without waiting; the file holds the holder's
    PID and host (for the message the next run prints)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # umask applies
        except OSError as e:
            raise BertJaxError(f"{workdir}: cannot write here ({e.strerror})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(self._fd)
            raise BertJaxError(
                f"{workdir}: in use by another run ({holder}); wait for it to finish or use "
                "another --workdir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)

    def _holder(self) -> str:
        with contextlib.suppress(OSError):
            fields = os.pread(self._fd, 200, 0).decode(errors="replace").split()
            if fields and fields[0].isdigit():
                return f"PID {fields[0]}" + (f" on {fields[1]}" if len(fields) > 1 else "")
        return "PID unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} of a nested dict, leaves as JSON would hold them (tuples become lists)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _remembered(flat: dict[str, Any], kind: str) -> dict[str, Any]:
    entries = REMEMBERED[kind]
    return {
        name: value
        for name, value in flat.items()
        if name not in NOT_REMEMBERED
        and any(name == e or (e.endswith(".") and name.startswith(e)) for e in entries)
    }


def _holds_results(workdir: str) -> bool:
    if any(os.path.lexists(os.path.join(workdir, name)) for name in RESULTS):
        return True
    checkpoints = os.path.join(workdir, "checkpoints")
    return os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))


def config_changes(workdir: str, config: Any, kind: str) -> list[str]:
    """`name: old -> new` for each remembered setting of `config` that differs from the one in
    WORKDIR/experiment_config.json (none if there is no such file). Settings either lacks (a
    field added in a later version) are not compared."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return []
    old = _remembered(_flat(read_json(path)), kind)
    new = _remembered(_flat(_as_json(config)), kind)
    return [
        f"{name}: {old[name]!r} -> {new[name]!r}"
        for name in sorted(old.keys() & new.keys())
        if old[name] != new[name]
    ]


def _as_json(config: Any) -> dict:
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(data, default=str))


def remember_config(workdir: str, config: Any, kind: str) -> None:
    """Refuse `config` if the workdir holds results of other settings; else write it to
    WORKDIR/experiment_config.json."""
    changes = config_changes(workdir, config, kind)
    if changes and _holds_results(workdir):
        shown = "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
        raise BertJaxError(
            f"{workdir} holds a run with other settings ({shown}); its checkpoints, tokenizer "
            f"and data belong to those. Use a new --workdir, or rerun with the settings in "
            f"{os.path.join(workdir, CONFIG_FILE)}"
        )
    write_json(os.path.join(workdir, CONFIG_FILE), _as_json(config))


def _remove_stale_temporaries(workdir: str) -> None:
    """Temporaries of io.py's atomic writes whose process is gone (killed mid-save)."""
    for name in os.listdir(workdir):
        match = _TEMPORARY.match(name)
        if not match or int(match[1]) == os.getpid() or pid_alive(int(match[1])):
            continue
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def _remove_if_unused(workdir: str) -> None:
    """Remove a workdir this run created if it holds only bookkeeping (the lock, the config, an
    empty checkpoints dir): a run that failed early leaves nothing behind."""
    with contextlib.suppress(OSError):
        entries = set(os.listdir(workdir))
        checkpoints = os.path.join(workdir, "checkpoints")
        if "checkpoints" in entries and os.listdir(checkpoints):
            return
        if entries <= {LOCK_FILE, CONFIG_FILE, "checkpoints"}:
            shutil.rmtree(workdir)
