"""Throughput of our pretraining input pipeline on ONE core, beside what BERT-mini's step eats.

    python benchmarks/pipeline.py [--seq 128] [--batch 16] [--repeats 7] [--json]

Stages (the same calls `bert_jax.training.pretrain.train_and_evaluate` makes):
  corpus      bert_jax.data.sources.bundled_shakespeare()                 (once per run)
  tokenizer   BertTokenizer.train(vocab 8192), as configs/pretrain/tiny_shakespeare.py (once)
  rows        pipeline.pretrain_rows: tokenize every sentence + pack     (once per run)
  batches     PretrainBatches.batch_at: gather rows + mask_batch         (every step)
  prefetched  PretrainBatches' grain iterator (background thread, same core)
The pipeline runs pinned to core 0 (os.sched_setaffinity; Rust tokenizers limited to 1 thread);
the BERT-mini step (train_step.py's bert_jax worker) runs on all cores, timed in alternation.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizers' thread pool, before it starts
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7, help="rounds of (batches, one train step)")
    ap.add_argument("--batches-per-round", type=int, default=20)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--no-train-step", action="store_true", help="skip the BERT-mini comparison")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from train_step import Worker, worker_command
    from workload import Workload

    # Start the train-step worker first (all cores), then pin this process to one core.
    worker = None
    if not args.no_train_step:
        w = Workload("mini", args.batch, args.seq)
        worker = Worker("bert_jax", worker_command("bert_jax", w, warmup=3))
    os.sched_setaffinity(0, {args.core})

    from bert_jax.data.masking import MaskingConfig
    from bert_jax.data.packing import real_token_fraction
    from bert_jax.data.pipeline import PretrainBatches, pretrain_rows
    from bert_jax.data.sources import bundled_shakespeare
    from bert_jax.tokenizer import BertTokenizer

    docs, t_corpus = timed(bundled_shakespeare)
    lines = [s for d in docs for s in d]
    tokenizer, t_tok = timed(lambda: BertTokenizer.train(iter(lines), vocab_size=8192))
    rows, t_rows = timed(lambda: pretrain_rows(docs, tokenizer, args.seq))
    n_rows = len(rows["input_ids"])
    real = real_token_fraction(rows)
    corpus_tokens = int(rows["attention_mask"].sum())  # incl. [CLS]/[SEP] per segment
    segments = int((rows["position_ids"] == 0).sum() - (rows["attention_mask"] == 0).sum())
    masking = MaskingConfig.for_tokenizer(tokenizer, max_predictions=round(0.15 * args.seq))
    batches = PretrainBatches(rows, batch_size=args.batch, seed=0, masking=masking, prefetch=0)
    prefetched = PretrainBatches(rows, batch_size=args.batch, seed=0, masking=masking, prefetch=2)
    batches.batch_at(0), next(prefetched)  # warm-up

    step = 0
    batch_times, batch_cpu, prefetch_times = [], [], []
    if worker is not None and not worker.wait_ready():
        worker = None
    for r in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(args.batches_per_round):
            batches.batch_at(step)
            step += 1
        batch_times.append((time.perf_counter() - t0) / args.batches_per_round)
        batch_cpu.append((time.process_time() - c0) / args.batches_per_round)
        t0 = time.perf_counter()
        for _ in range(args.batches_per_round):
            next(prefetched)
        prefetch_times.append((time.perf_counter() - t0) / args.batches_per_round)
        if worker is not None:
            worker.time(1)
        print(
            f"round {r + 1}/{args.repeats}: batch {batch_times[-1] * 1e3:.2f} ms, prefetched "
            f"{prefetch_times[-1] * 1e3:.2f} ms"
            + (f", train step {worker.times[-1] * 1e3:.0f} ms" if worker else ""),
            file=sys.stderr,
            flush=True,
        )
    prefetched.close()
    if worker is not None:
        worker.close()

    positions = args.batch * args.seq
    b_med, p_med = statistics.median(batch_times), statistics.median(prefetch_times)
    b_cpu = statistics.median(batch_cpu)
    out = {
        "seq": args.seq,
        "batch": args.batch,
        "core": args.core,
        "corpus": {
            "documents": len(docs),
            "sentences": len(lines),
            "rows": n_rows,
            "segments": segments,
            "real_tokens": corpus_tokens,
            "real_token_fraction": real,
            "seconds": t_corpus,
        },
        "tokenizer_train_s": t_tok,
        "rows": {
            "seconds": t_rows,
            "rows_per_sec": n_rows / t_rows,
            "tokens_per_sec": corpus_tokens / t_rows,
        },
        "batches": {
            "ms_per_batch": b_med * 1e3,
            "examples_per_sec": args.batch / b_med,
            "tokens_per_sec": positions / b_med,
            "cpu_ms_per_batch": b_cpu * 1e3,
            "tokens_per_cpu_sec": positions / b_cpu,
        },
        "prefetched": {
            "ms_per_batch": p_med * 1e3,
            "examples_per_sec": args.batch / p_med,
            "tokens_per_sec": positions / p_med,
        },
    }
    if worker is not None:
        s_med = statistics.median(worker.times)
        s_cpu = statistics.median(worker.cpu)
        out["bert_mini_step"] = {
            "ms_per_step": s_med * 1e3,
            "tokens_per_sec": positions / s_med,
            "examples_per_sec": args.batch / s_med,
            "cpu_ms_per_step": s_cpu * 1e3,
            "pipeline_headroom": s_med / b_med,
            "pipeline_headroom_cpu": s_cpu / b_cpu,
        }
    if args.json:
        print(json.dumps(out))
        return
    c = out["corpus"]
    print(
        f"\nInput pipeline on core {args.core}, L={args.seq}, B={args.batch}: "
        f"{c['documents']} documents, {c['sentences']} lines -> {n_rows} packed rows "
        f"({segments} segments), real-token fraction {real:.3f}"
    )
    print(f"{'stage':<34} {'time':>10} {'examples/s':>12} {'tokens/s':>12}")
    print(f"{'corpus (bundled_shakespeare)':<34} {t_corpus:>9.2f}s {'':>12} {'':>12}")
    print(f"{'tokenizer train (vocab 8192)':<34} {t_tok:>9.2f}s {'':>12} {'':>12}")
    print(
        f"{'tokenize + pack (pretrain_rows)':<34} {t_rows:>9.2f}s "
        f"{out['rows']['rows_per_sec']:>12,.0f} {out['rows']['tokens_per_sec']:>12,.0f}"
    )
    for key, label in (
        ("batches", "mask + batch (batch_at)"),
        ("prefetched", "grain iterator, prefetch 2"),
    ):
        v = out[key]
        print(
            f"{label:<34} {v['ms_per_batch']:>8.2f}ms {v['examples_per_sec']:>12,.0f} "
            f"{v['tokens_per_sec']:>12,.0f}"
        )
    if "bert_mini_step" in out:
        v = out["bert_mini_step"]
        print(
            f"{'BERT-mini train step (all cores)':<34} {v['ms_per_step']:>8.0f}ms "
            f"{v['examples_per_sec']:>12,.0f} {v['tokens_per_sec']:>12,.0f}"
        )
        print(
            f"one core of masking feeds {v['pipeline_headroom']:.0f}x what the BERT-mini step "
            f"consumes (wall clock); per CPU-second, masking costs 1/"
            f"{v['pipeline_headroom_cpu']:.0f} of the step ({b_cpu * 1e3:.1f} vs "
            f"{v['cpu_ms_per_step']:.0f} CPU-ms per batch)"
        )
    print(
        "tokens/s of batches = row positions (B*L) per second; tokenize+pack tokens/s = real "
        "tokens (incl. [CLS]/[SEP]) per second"
    )


if __name__ == "__main__":
    main()
