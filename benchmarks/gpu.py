"""bert_jax MLM training throughput and MFU on one GPU: BERT-base/-large, L 128/512, bf16,
fused attention (jax.nn.dot_product_attention → cuDNN) on and off.

    python benchmarks/gpu.py [--sizes base,large] [--seqs 128,512] [--repeats 10] [--json]

Without a GPU it prints one line saying so and exits 0. MFU = tokens/s x FLOPs/token / peak,
with FLOPs/token from workload.flops_per_token (3 x forward matmuls, MLM head at P/L of the
tokens) and peak = H100 SXM dense bf16, 989 TFLOP/s (pass --peak-tflops for another card).
"fused off" runs the explicit einsum + softmax path with the same math (dropout 0 both ways),
so the difference is the kernel alone.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from workload import OUR_KEYS, VOCAB, Workload, flops_per_token, make_batch, trainer_config  # noqa: E402  (after the sys.path line)

H100_BF16_DENSE = 989e12
# Global batch per (size, seq): about 32k-64k tokens a step, within 80 GB with AdamW state.
BATCH = {("base", 128): 256, ("base", 512): 64, ("large", 128): 128, ("large", 512): 32}


@contextlib.contextmanager
def einsum_attention(enabled: bool):
    """Route bert_jax's attention through the explicit einsum path while tracing."""
    import bert_jax.model.modeling as model_mod
    from bert_jax.model import attention

    if not enabled:
        yield
        return

    def explicit(q, k, v, mask, **kw):
        kw["return_probs"] = True
        return attention.dot_product_attention(q, k, v, mask, **kw)[0], None

    original = model_mod.dot_product_attention
    model_mod.dot_product_attention = explicit
    try:
        yield
    finally:
        model_mod.dot_product_attention = original


def build(w: Workload, dtype: str = "bfloat16", plain_dots: bool = False):
    """(Trainer, state, batch) of the MLM step for `w` (its dropout rates; max length 512).
    `plain_dots` builds the dense layers with lax.dot_general instead of
    bert_jax.model.precision's."""
    import jax
    from flax import nnx

    import bert_jax.model.modeling as model_mod
    from bert_jax.model.config import BertConfig
    from bert_jax.training import sharding
    from bert_jax.training.objectives import MaskedLMObjective
    from bert_jax.training.trainer import Trainer

    config = BertConfig.preset(
        w.size,
        vocab_size=VOCAB,
        max_position_embeddings=512,
        hidden_dropout_prob=w.hidden_dropout,
        attention_probs_dropout_prob=w.attention_dropout,
        dtype=dtype,
    )
    original = model_mod.dot_general
    if plain_dots:
        model_mod.dot_general = jax.lax.dot_general
    try:
        model = model_mod.BertForMaskedLM(config, rngs=nnx.Rngs(0))
    finally:
        model_mod.dot_general = original
    workdir = tempfile.mkdtemp(prefix="bert_jax_gpu_")
    trainer = Trainer(model, MaskedLMObjective(), trainer_config(w.batch), workdir)
    state = trainer.restore_or_init(iter([]))
    b = make_batch(w)
    return trainer, state, sharding.put_batch({k: b[k] for k in OUR_KEYS}, trainer.mesh)


def time_steps(trainer, state, batch, repeats: int, warmup: int = 3):
    """(median step seconds, state, loss of the first step)."""
    import jax

    times, first_loss = [], None
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        state, metrics = trainer.train_step(state, batch)
        jax.block_until_ready(metrics)
        first_loss = float(metrics["loss"]) if first_loss is None else first_loss
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), state, first_loss


def measure(w: Workload, fused: bool, repeats: int, warmup: int) -> dict:
    with einsum_attention(not fused):  # active while the step is traced (its first call)
        trainer, state, batch = build(w)
        seconds, state, _ = time_steps(trainer, state, batch, repeats, warmup)
    trainer.close()
    del state, batch, trainer
    gc.collect()
    return {"median_step_s": seconds, "tokens_per_sec": w.tokens / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="base,large")
    ap.add_argument("--seqs", default="128,512")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE / 1e12)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import jax

    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        print("benchmarks/gpu.py: no GPU visible to JAX (jax.devices('gpu') is empty): skipped")
        return
    peak = args.peak_tflops * 1e12
    rows = []
    for size in args.sizes.split(","):
        for seq in (int(s) for s in args.seqs.split(",")):
            w = Workload(size, BATCH.get((size, seq), max(8, 32768 // seq)), seq, 0.1, 0.0)
            fpt = flops_per_token(w, head_fraction=w.masked / w.seq)
            for fused in (True, False):
                r = measure(w, fused, args.repeats, args.warmup)
                r.update(
                    size=size,
                    seq=seq,
                    batch=w.batch,
                    fused_attention=fused,
                    flops_per_token=fpt,
                    mfu=r["tokens_per_sec"] * fpt / peak,
                )
                rows.append(r)
                print(
                    f"{size} L={seq} B={w.batch} fused={fused}: {r['tokens_per_sec']:,.0f} "
                    f"tok/s, MFU {100 * r['mfu']:.1f}%",
                    file=sys.stderr,
                    flush=True,
                )
    if args.json:
        print(json.dumps({"device": str(gpus[0].device_kind), "peak_flops": peak, "rows": rows}))
        return
    print(
        f"\n{gpus[0].device_kind}, bf16 compute, dropout 0.1/0.0, MFU vs "
        f"{args.peak_tflops:.0f} TFLOP/s"
    )
    print(
        f"{'model':<7} {'L':>4} {'B':>4} {'attention':<8} {'tokens/s':>11} {'step ms':>8} "
        f"{'MFU':>6}"
    )
    for r in rows:
        print(
            f"{r['size']:<7} {r['seq']:>4} {r['batch']:>4} "
            f"{'fused' if r['fused_attention'] else 'einsum':<8} {r['tokens_per_sec']:>11,.0f} "
            f"{r['median_step_s'] * 1e3:>8.1f} {100 * r['mfu']:>5.1f}%"
        )


if __name__ == "__main__":
    main()
