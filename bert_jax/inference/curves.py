"""Training curves from `metrics.jsonl`: loss and accuracy against step, one line per run.

`bert-jax plot WORKDIR [WORKDIR ...] --out curves.png` draws the runs side by side: the left panel
holds the losses (train and eval), the right one the eval scores (accuracy, F1, ...), so a glance
shows whether a run learns and where it stops. Needs matplotlib (`pip install 'bert-jax[plot]'`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

from bert_jax.errors import BertJaxError
from bert_jax.io import read_text

# Scores worth a curve, in the order a reader looks for them.
SCORES = (
    "mlm_accuracy",
    "nsp_accuracy",
    "accuracy",
    "token_accuracy",
    "f1",
    "exact_match",
    "pearson",
    "mcc",
    "macro_f1",
)


def read_metrics(workdir: str) -> list[dict]:
    """The lines of WORKDIR/metrics.jsonl (a torn last line from a killed run is skipped)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise BertJaxError(f"{path}: not found (expected a bert-jax pretrain/finetune workdir)")
    rows = []
    for line in read_text(path).splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    if not rows:
        raise BertJaxError(f"{path}: holds no metrics yet")
    return rows


def curves(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{"train loss" | "eval loss" | "eval <score>": (steps, values)} from metrics rows."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        split = row.get("split", "train")
        names = ["loss"] + ([s for s in SCORES if s in row] if split == "eval" else [])
        for name in names:
            value = row.get(name)
            if isinstance(value, (int, float)) and math.isfinite(value):
                steps, values = out.setdefault(f"{split} {name}", ([], []))
                steps.append(row["step"])
                values.append(float(value))
    return out


def plot_runs(workdirs: Sequence[str], out: str, *, title: str | None = None) -> str:
    """Write a PNG of the runs' curves to `out` (atomically); returns `out`."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BertJaxError("plotting needs matplotlib: pip install 'bert-jax[plot]'") from None
    runs = {os.path.basename(os.path.normpath(w)) or w: curves(read_metrics(w)) for w in workdirs}
    figure = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(figure)
    losses, scores = figure.subplots(1, 2)
    for run, series in runs.items():
        prefix = f"{run}: " if len(runs) > 1 else ""
        for name, (steps, values) in series.items():
            axis = losses if name.endswith("loss") else scores
            style = "-" if name.startswith("train") else "o-"
            axis.plot(steps, values, style, label=prefix + name, markersize=3)
    for axis, label in ((losses, "loss (nats)"), (scores, "score")):
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    figure.suptitle(title or ", ".join(runs))
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.tmp-{os.getpid()}.png"
    try:
        figure.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out
