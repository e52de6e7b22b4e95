"""Why a GPU train step is slow: A/B variants of the BERT MLM step, then its top GPU kernels.

    python benchmarks/gpu_breakdown.py [--size base --seq 128 --batch 256]
        [--only "fp32;bf16, no dropout"]

Variants (same process, one after another, median of --repeats steps): the gpu.py step (bf16,
dropout 0.1/0), with cuDNN attention forced (GPU only), without dropout, with plain bf16 dots
instead of bert_jax.model.precision's, fp32, and a quarter of the batch (a fixed per-step cost
shows as a time that does not shrink). Then a
jax.profiler trace of the baseline step: total GPU time per kernel name, largest first.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import glob
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gpu import H100_BF16_DENSE, build, time_steps
from workload import Workload, flops_per_token


@contextlib.contextmanager
def attention_implementation(name: str | None):
    """Trace with `jax.nn.dot_product_attention(implementation=name)` (None: JAX's choice)."""
    import jax

    original = jax.nn.dot_product_attention
    if name:
        jax.nn.dot_product_attention = functools.partial(original, implementation=name)
    try:
        yield
    finally:
        jax.nn.dot_product_attention = original


def kernel_profile(trainer, state, batch, steps: int = 3, top: int = 25) -> None:
    import jax

    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                state, metrics = trainer.train_step(state, batch)
                jax.block_until_ready(metrics)
        path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
        profile = jax.profiler.ProfileData.from_file(path)
    per_kernel: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for plane in profile.planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            if "Stream" not in line.name and "stream" not in line.name:
                continue
            for event in line.events:
                per_kernel[event.name] += event.duration_ns / steps
                count[event.name] += 1
    total = sum(per_kernel.values())
    print(f"\nkernel time per step: {total / 1e6:.1f} ms over {len(per_kernel)} kernel names")
    for name, ns in per_kernel.most_common(top):
        print(
            f"{ns / 1e6:8.2f} ms {100 * ns / max(total, 1):5.1f}%  x{count[name] // steps:<4} "
            f"{name[:110]}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="base")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE / 1e12)
    ap.add_argument("--only", help="variant names to run, separated by ';'")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    import gc

    import jax

    print(jax.devices(), jax.__version__)
    w = Workload(args.size, args.batch, args.seq, 0.1, 0.0)
    no_dropout = Workload(args.size, args.batch, args.seq, 0.0, 0.0)
    quarter = Workload(args.size, args.batch // 4, args.seq, 0.1, 0.0)
    # name: (workload, dtype, plain bf16 dots, attention implementation)
    variants = {
        "bf16, dropout 0.1 (gpu.py)": (w, "bfloat16", False, None),
        "bf16, cudnn attention": (w, "bfloat16", False, "cudnn"),
        "bf16, no dropout": (no_dropout, "bfloat16", False, None),
        "bf16, plain bf16 dots": (w, "bfloat16", True, None),
        "fp32": (w, "float32", False, None),
        "bf16, batch / 4": (quarter, "bfloat16", False, None),
    }
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(";")}
    print(f"{'variant':30} {'step ms':>8} {'tokens/s':>10} {'MFU':>6} {'first loss':>11}")
    for name, (wv, dtype, plain, attention) in variants.items():
        with attention_implementation(attention):
            trainer, state, batch = build(wv, dtype, plain)
            seconds, state, loss = time_steps(trainer, state, batch, args.repeats)
        fpt = flops_per_token(wv, head_fraction=wv.masked / wv.seq)
        mfu = wv.tokens / seconds * fpt / (args.peak_tflops * 1e12)
        print(
            f"{name:30} {seconds * 1e3:8.1f} {wv.tokens / seconds:10,.0f} {100 * mfu:5.1f}% "
            f"{loss:11.5f}",
            flush=True,
        )
        if name.endswith("(gpu.py)") and not args.no_profile:
            kernel_profile(trainer, state, batch)
        trainer.close()
        del trainer, state, batch
        gc.collect()


if __name__ == "__main__":
    main()
