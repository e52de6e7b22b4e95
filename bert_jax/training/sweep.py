"""Hyper-parameter search over fine-tuning configs: grid or random, resumable, failure-tolerant.

Each trial is a set of config overrides run by the normal fine-tuning path (`finetune(config,
subdir)`) in `DIR/trials/<name>/`. `DIR/sweep.jsonl` records every trial's settings, metric, time
and status; a rerun skips trials already recorded there. The best trial's model is copied to
`DIR/best/`.
The default search space is the BERT paper's fine-tuning grid (Devlin et al. 2019, appendix A.3).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import time
import traceback

import numpy as np

from bert_jax.errors import BertJaxError
from bert_jax.io import append_jsonl, read_text, staged_dir, write_json, write_text
from bert_jax.model.hf import SAVED_FILES
from bert_jax.training import validation
from bert_jax.training.experiment_config import apply_overrides, load_config_file, set_override
from bert_jax.training.workdir import claim

TRIAL_FILE = "sweep_trial.json"  # in DIR/best: which trial the model came from

PAPER_GRID = {
    "optimizer.learning_rate": ["5e-5", "3e-5", "2e-5"],
    "train.batch_size": ["16", "32"],
    "train.epochs": ["2", "3", "4"],
}


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """["key=v1,v2", ...] → {key: [v1, v2]}."""
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        choices = [v for v in values.split(",") if v.strip()]
        if not sep or not key or not choices:
            raise BertJaxError(f"--grid {spec!r}: expected key=v1,v2,...")
        grid[key.strip()] = [v.strip() for v in choices]
    return grid


def parse_space(specs: list[str]) -> dict[str, tuple[float, float, bool, bool]]:
    """["key=lo:hi[:log]", ...] → {key: (lo, hi, log, integer)}."""
    space = {}
    for spec in specs:
        key, sep, rng = spec.partition("=")
        parts = rng.split(":")
        if (
            not sep
            or not key
            or len(parts) not in (2, 3)
            or (len(parts) == 3 and parts[2] != "log")
        ):
            raise BertJaxError(f"--space {spec!r}: expected key=lo:hi or key=lo:hi:log")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise BertJaxError(f"--space {spec!r}: lo and hi must be numbers") from None
        log = len(parts) == 3
        if not lo < hi or (log and lo <= 0):
            raise BertJaxError(f"--space {spec!r}: need lo < hi (and lo > 0 for log)")
        integer = all(p.lstrip("-").isdigit() for p in parts[:2])
        space[key.strip()] = (lo, hi, log, integer)
    return space


def grid_trials(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def random_trials(space, n: int, seed: int) -> list[dict[str, str]]:
    """`n` samples: uniform or log-uniform in each range; or, with a grid (dict of lists) as the
    space, distinct grid points drawn without replacement."""
    if n < 1:
        raise BertJaxError(f"--random {n}: need at least one trial")
    rng = np.random.default_rng(seed)
    if all(isinstance(v, list) for v in space.values()):
        points = grid_trials(space)
        return [points[i] for i in rng.permutation(len(points))[:n]]
    trials = []
    for _ in range(n):
        trial = {}
        for key in sorted(space):
            lo, hi, log, integer = space[key]
            x = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
            trial[key] = str(int(round(x))) if integer else f"{x:.4g}"
        trials.append(trial)
    return trials


def trial_name(settings: dict[str, str]) -> str:
    return "_".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(settings.items())).replace(
        "/", "-"
    )


def _read_records(path: str) -> dict[str, dict]:
    """The records of sweep.jsonl. A torn last line (the sweep was killed mid-write) is cut off,
    so that the next record starts on a line of its own; that trial runs again."""
    if not os.path.exists(path):
        return {}
    text = read_text(path)
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        write_text(path, text)
    records = {}
    for n, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            raise BertJaxError(f"{path} line {n}: not a JSON record") from None
        if record is not None:
            records[record["trial"]] = record
    return records


def _trial_config(config_path: str, base_overrides, settings: dict[str, str]):
    config = apply_overrides(load_config_file(config_path), list(base_overrides))
    for key, value in settings.items():
        set_override(config, key, value)
    return config


def _run_trial(run_trial, config, record: dict) -> dict:
    """`record` completed with the trial's status, metric (or error) and seconds."""
    start = time.perf_counter()
    try:
        metrics = run_trial(config, record["workdir"])
        metric = metrics.get("best_metric", "accuracy")
        record.update(status="ok", metric=metric, value=float(metrics[metric]), metrics=metrics)
    except Exception as e:  # a failed trial is recorded and the sweep goes on
        message = str(e) if isinstance(e, BertJaxError) else traceback.format_exception_only(e)[-1]
        record.update(status="failed", error=message.strip())
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def run_sweep(
    config_path: str,
    workdir: str,
    trials: list[dict[str, str]],
    *,
    base_overrides: list[str] = (),
    retry_failed: bool = False,
    run_trial=None,
) -> list[dict]:
    """Run each trial not yet recorded in workdir/sweep.jsonl; return all records, best first.

    Every override is checked against the config before anything runs, so a typo in a key is one
    error line, not N failed trials. `run_trial(config, subdir) -> metrics` defaults to finetune.
    """
    if not trials:
        raise BertJaxError(
            "the search space is empty: give --grid key=v1,v2 or --random N --space ..."
        )
    for settings in trials:  # validate every key and value up front
        validation.check_config(_trial_config(config_path, base_overrides, settings), "finetune")
    if run_trial is None:
        from bert_jax.training.finetune import finetune as run_trial

    # Locked for the whole sweep; the trials' common settings must be those the workdir holds.
    with claim(workdir, _trial_config(config_path, base_overrides, {}), "sweep"):
        return _run_trials(config_path, workdir, trials, base_overrides, retry_failed, run_trial)


def _run_trials(config_path, workdir, trials, base_overrides, retry_failed, run_trial):
    log_path = os.path.join(workdir, "sweep.jsonl")
    records = _read_records(log_path)
    for settings in trials:
        name = trial_name(settings)
        done = records.get(name)
        if done and (done["status"] == "ok" or not retry_failed):
            continue
        record = {
            "trial": name,
            "settings": settings,
            "workdir": os.path.join(workdir, "trials", name),
        }
        config = _trial_config(config_path, base_overrides, settings)
        records[name] = _run_trial(run_trial, config, record)
        append_jsonl(log_path, record)
    ranked = rank(list(records.values()))
    _copy_best(ranked, workdir)
    return ranked


def rank(records: list[dict]) -> list[dict]:
    """Successful trials best first (lower is better for losses), then failed ones."""
    ok = [r for r in records if r["status"] == "ok" and not math.isnan(r["value"])]
    lower = lambda r: r["metric"].endswith("loss") or r["metric"] == "mse"
    ok.sort(key=lambda r: r["value"] if lower(r) else -r["value"])
    return ok + [r for r in records if r not in ok]


def _copy_best(ranked: list[dict], workdir: str) -> None:
    if not ranked or ranked[0]["status"] != "ok":
        return
    source = os.path.join(ranked[0]["workdir"], "model")
    if not os.path.isdir(source):
        return
    with staged_dir(os.path.join(workdir, "best"), owned=SAVED_FILES | {TRIAL_FILE}) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        trial = {k: ranked[0][k] for k in ("trial", "settings", "metric", "value")}
        write_json(os.path.join(tmp, TRIAL_FILE), trial)


def summary_table(ranked: list[dict]) -> str:
    lines = [f"{'rank':>4}  {'metric':>10}  {'value':>8}  {'seconds':>8}  trial"]
    for i, r in enumerate(ranked, 1):
        if r["status"] == "ok":
            lines.append(
                f"{i:>4}  {r['metric']:>10}  {r['value']:>8.4f}  {r['seconds']:>8.1f}  {r['trial']}"
            )
        else:
            failed = f"{'-':>4}  {'failed':>10}  {'':>8}  {r['seconds']:>8.1f}"
            lines.append(f"{failed}  {r['trial']}: {r['error']}")
    return "\n".join(lines)
