"""Where training metrics go: `metrics.jsonl` always, TensorBoard scalars when asked.

JSON lines are the record (resume cuts them back to the restored step, `bert-jax plot` draws them);
TensorBoard is for watching a long run live (`tensorboard --logdir WORKDIR/tensorboard`), through
`tensorboardX` (optional extra `[tensorboard]`, no TensorFlow needed), as the JAX examples do.
Only process 0 writes; every process counts tokens for the throughput.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax

from bert_jax.errors import BertJaxError
from bert_jax.io import append_jsonl, write_text


class MetricWriter:
    """Lines `{"step", "split", **scalars}` in WORKDIR/metrics.jsonl (cut back to `step`, the
    step the run starts from) and, with `tensorboard`, the scalars as `split/name` events under
    WORKDIR/tensorboard."""

    def __init__(self, workdir: str, step: int, *, tensorboard: bool = False):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.is_main = jax.process_index() == 0
        self._tb = None
        if self.is_main:
            _truncate(self.path, step)
            if tensorboard:
                self._tb = _summary_writer(os.path.join(workdir, "tensorboard"), step)
        self.tokens, self.start = 0, time.perf_counter()

    def count_tokens(self, n: int) -> None:
        self.tokens += n

    def write(self, step: int, split: str, scalars: dict) -> None:
        if not self.is_main:
            return
        append_jsonl(self.path, {"step": step, "split": split, **scalars})
        if self._tb is not None:
            for name, value in scalars.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{split}/{name}", value, step)
            self._tb.flush()

    def train(self, step: int, metrics: dict) -> dict:
        """Log a train line with the tokens/s since the previous one; returns the line's values."""
        elapsed = time.perf_counter() - self.start
        tokens_per_sec = jax.process_count() * self.tokens / max(elapsed, 1e-9)
        self.tokens, self.start = 0, time.perf_counter()
        values = {**metrics, "tokens_per_sec": tokens_per_sec}
        self.write(step, "train", values)
        return values

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _summary_writer(logdir: str, step: int):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise BertJaxError(
            "train.tensorboard=True needs tensorboardX: pip install 'bert-jax[tensorboard]'"
        ) from None
    # purge_step: a resumed run drops the events logged after its checkpoint, as metrics.jsonl.
    return SummaryWriter(logdir, purge_step=step or None)


def _truncate(path: str, step: int) -> None:
    """On resume, drop lines logged after the restored checkpoint (they will be logged again);
    on a fresh start (step 0), drop them all."""
    if not os.path.exists(path):
        return
    if step == 0:
        os.remove(path)
        return
    with open(path, encoding="utf-8") as f:
        lines = [ln for ln in f if _logged_step(ln) <= step]
    write_text(path, "".join(lines))


def _logged_step(line: str) -> float:
    """The step of a metrics line; a torn line (process killed mid-write) counts as after all."""
    try:
        return json.loads(line)["step"] if line.endswith("\n") else math.inf
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf
