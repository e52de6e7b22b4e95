"""Where bert_jax's CPU training step spends its time, and which levers move it.

    python benchmarks/profile_cpu.py --size mini --set breakdown
    python benchmarks/profile_cpu.py --size base --set levers --repeats 5
    python benchmarks/profile_cpu.py --size mini --set xla_flags
    python benchmarks/profile_cpu.py --size mini --ops [--op-variant '{"dtype": "bfloat16"}']

Every variant is a worker process (workload.serve) timed round-robin with the baseline, one step
at a time, so machine noise hits all of them alike; the table gives each median relative to the
baseline (our real Trainer.train_step, fp32, dropout 0.1/0.1, like train_step.py's bert_jax row).
Nothing in bert_jax/ is edited: levers that need a code change are prototyped here by
monkeypatching (see `_patch_*`), to size the gain before anyone writes the real change.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_step import Worker  # noqa: E402  (after the sys.path line)
from workload import OUR_KEYS, VOCAB, Workload, make_batch, serve, trainer_config  # noqa: E402  (after the sys.path line)

# name: (worker options, extra environment). Options: mode step|fwd|grad|opt, dtype, prng
# (jax_default_prng_impl), head masked|full, attn_dropout/hidden_dropout overrides, patches.
SETS = {
    "breakdown": {
        "step (baseline)": ({}, {}),
        "forward + loss": ({"mode": "fwd"}, {}),
        "forward + backward": ({"mode": "grad"}, {}),
        "optimizer update only": ({"mode": "opt"}, {}),
        "step, no dropout": ({"hidden_dropout": 0.0, "attn_dropout": 0.0}, {}),
        "step, MLM head at all L": ({"head": "full"}, {}),
    },
    "levers": {
        "step (baseline)": ({}, {}),
        "bf16 compute": ({"dtype": "bfloat16"}, {}),
        "attn dropout 0 (fused path)": ({"attn_dropout": 0.0}, {}),
        "attn dropout 0, einsum path": ({"attn_dropout": 0.0, "patches": ["einsum_attention"]}, {}),
        "prng rbg (dropout masks)": ({"prng": "rbg"}, {}),
        "prng unsafe_rbg": ({"prng": "unsafe_rbg"}, {}),
        "fused QKV matmul": ({"patches": ["fused_qkv"]}, {}),
        "lean MLM loss (no argmax)": ({"head": "lean"}, {}),
        "bf16 compute + lean loss": ({"dtype": "bfloat16", "head": "lean"}, {}),
    },
    "xla_flags": {
        "step (baseline)": ({}, {}),
        "multi_thread_eigen=false": ({}, {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}),
        "use_xnnpack=false": ({}, {"XLA_FLAGS": "--xla_cpu_use_xnnpack=false"}),
        "use_onednn=true": ({}, {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}),
        "ynn fusion dot": ({}, {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}),
        "xnn graph fusion greedy": (
            {},
            {
                "XLA_FLAGS": "--xla_cpu_experimental_xnn_graph_fusion_mode"
                "=XNN_GRAPH_FUSION_MODE_GREEDY"
            },
        ),
        "prefer_vector_width=512": ({}, {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=512"}),
        "enable_fast_math=true": ({}, {"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"}),
    },
}


# ---- prototypes of code changes (monkeypatches of bert_jax, applied in the worker only) ---------
def _patch_einsum_attention():
    """Force the explicit einsum+softmax attention even when the fused path would run."""
    import bert_jax.model.modeling as model_mod
    from bert_jax.model import attention

    def explicit(q, k, v, mask, **kw):
        kw["return_probs"] = True
        context, _ = attention.dot_product_attention(q, k, v, mask, **kw)
        return context, None

    model_mod.dot_product_attention = explicit


def _patch_fused_qkv():
    """One (D, 3D) matmul for Q, K, V instead of three (D, D) ones (weights concatenated per step;
    a real change would store the fused kernel)."""
    import jax.numpy as jnp

    import bert_jax.model.modeling as model_mod

    def call(self, x, mask, *, return_probs=False):
        batch, length, _ = x.shape
        kernel = jnp.concatenate(
            [self.query.kernel[...], self.key.kernel[...], self.value.kernel[...]], axis=1
        )
        bias = jnp.concatenate([self.query.bias[...], self.key.bias[...], self.value.bias[...]])
        dtype = self.query.dtype
        qkv = jnp.dot(x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)
        qkv = qkv.reshape(batch, length, 3, self.num_heads, -1)  # (B, L, 3, H, D/H)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        drop = self.attention_dropout
        training = not drop.deterministic and drop.rate > 0.0
        context, probs = model_mod.dot_product_attention(
            q,
            k,
            v,
            mask,
            dropout_rate=drop.rate if training else 0.0,
            dropout_rng=drop.rngs() if training else None,
            return_probs=return_probs,
        )
        y = self.dropout(self.output(context.reshape(batch, length, -1)))
        return self.norm(x + y).astype(x.dtype), probs

    model_mod.SelfAttention.__call__ = call


class FullHeadMLMObjective:
    """MaskedLMObjective with HF's layout: logits at all L positions, CE where a label is set."""

    metric_counts = {"mlm_accuracy": "mlm"}

    def outputs(self, model, batch):
        from bert_jax.model.forward import encoder_inputs

        return model(**encoder_inputs(batch))  # (B, L, vocab)

    def counts(self, batch):
        import jax.numpy as jnp

        return {"mlm": jnp.sum(batch["labels"] >= 0).astype(jnp.float32)}

    def sums(self, logits, batch):
        import jax.numpy as jnp

        from bert_jax.training.losses import weighted_cross_entropy

        labels = batch["labels"]
        weights = (labels >= 0).astype(jnp.float32)
        ids = jnp.maximum(labels, 0)
        total, _ = weighted_cross_entropy(logits, ids, weights)
        correct = jnp.sum((jnp.argmax(logits, -1) == ids) * weights)
        return {"mlm": total}, {"mlm_accuracy": correct}


class LeanMLMObjective(FullHeadMLMObjective):
    """Prototype of a cheaper MaskedLMObjective.sums, same values:
      - CE as logsumexp(logits) - logits[label], the label logit picked with a one-hot product
        (its gradient is elementwise; take_along_axis's is a scatter-add into (B, P, vocab));
      - accuracy as `logits[label] >= max(logits)` (a max-reduce shared with logsumexp) instead
        of argmax (a variadic (value, index) reduce over the vocabulary, slow on XLA:CPU).
    (Ties count as correct, where argmax would pick the first; with float logits that is moot.)"""

    def outputs(self, model, batch):
        from bert_jax.model.forward import encoder_inputs

        # (B, P, V) fp32
        return model(masked_positions=batch["masked_positions"], **encoder_inputs(batch))

    def counts(self, batch):
        import jax.numpy as jnp

        return {"mlm": jnp.sum(batch["masked_weights"].astype(jnp.float32))}

    def sums(self, logits, batch):
        import jax
        import jax.numpy as jnp

        ids, weights = batch["masked_ids"], batch["masked_weights"].astype(jnp.float32)
        one_hot = jax.nn.one_hot(ids, logits.shape[-1], dtype=logits.dtype)
        label_logit = jnp.sum(logits * one_hot, axis=-1)  # (B, P)
        top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
        lse = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
        ce = lse - label_logit
        correct = jax.lax.stop_gradient(label_logit) >= top
        return {"mlm": jnp.sum(ce * weights)}, {"mlm_accuracy": jnp.sum(correct * weights)}


# ---- the worker ----------------------------------------------------------------------------------
def profile_worker(w: Workload, opts: dict, warmup: int) -> None:
    import jax

    if opts.get("prng"):
        jax.config.update("jax_default_prng_impl", opts["prng"])
    for patch in opts.get("patches", []):
        globals()[f"_patch_{patch}"]()
    import jax.numpy as jnp
    import optax

    from bert_jax.training import sharding
    from bert_jax.training.objectives import loss_sums
    from bert_jax.training.trainer import Trainer

    trainer, state, batch = _build(w, opts, Trainer, sharding)
    objective = trainer.objective
    mode = opts.get("mode", "step")
    holder = [state]
    key = jax.random.key(0)

    def loss(params):
        terms, _ = loss_sums(objective, trainer._model(params, key), batch)
        return terms["mlm"] / jnp.maximum(objective.counts(batch)["mlm"], 1.0)

    if mode == "step":

        def run():
            holder[0], metrics = trainer.train_step(holder[0], batch)
            return metrics
    elif mode == "fwd":
        f = jax.jit(loss)
        run = lambda: f(holder[0]["params"])
    elif mode == "grad":
        f = jax.jit(jax.grad(loss))
        run = lambda: f(holder[0]["params"])
    elif mode == "opt":
        grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), holder[0]["params"])

        def update(state, grads):
            updates, opt_state = trainer.tx.update(grads, state["opt_state"], state["params"])
            return {
                "params": optax.apply_updates(state["params"], updates),
                "opt_state": opt_state,
                "step": state["step"] + 1,
            }

        f = jax.jit(update, donate_argnums=0)

        def run():
            holder[0] = f(holder[0], grads)
            return holder[0]["step"]
    else:
        raise ValueError(mode)

    serve(lambda: jax.block_until_ready(run()), warmup, {"jax": jax.__version__})
    trainer.close()


def _build(w: Workload, opts: dict, Trainer, sharding):
    import numpy as np
    from flax import nnx

    from bert_jax.model.config import BertConfig
    from bert_jax.model.modeling import BertForMaskedLM
    from bert_jax.training.objectives import MaskedLMObjective

    config = BertConfig.preset(
        w.size,
        vocab_size=VOCAB,
        hidden_dropout_prob=opts.get("hidden_dropout", w.hidden_dropout),
        attention_probs_dropout_prob=opts.get("attn_dropout", w.attention_dropout),
        dtype=opts.get("dtype", "float32"),
    )
    model = BertForMaskedLM(config, rngs=nnx.Rngs(0))
    cfg = trainer_config(w.batch)
    objectives = {"full": FullHeadMLMObjective, "lean": LeanMLMObjective}
    objective = objectives.get(opts.get("head"), MaskedLMObjective)()
    keys = OUR_KEYS + (("labels",) if opts.get("head") == "full" else ())
    trainer = Trainer(model, objective, cfg, tempfile.mkdtemp(prefix="bert_jax_bench_"))
    state = trainer.restore_or_init(iter([]))
    b = make_batch(w)
    batch = sharding.put_batch(
        {k: b[k].astype(np.int32) if k == "labels" else b[k] for k in keys}, trainer.mesh
    )
    return trainer, state, batch


# ---- the driver ----------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="mini")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--set", default="breakdown", choices=sorted(SETS))
    ap.add_argument("--only", default="", help="comma-separated variant names from the set")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cpus", default="")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--ops",
        action="store_true",
        help="in this process: trace 3 steps, print op thread-time by category",
    )
    ap.add_argument("--op-variant", default="{}", help="worker options (JSON) for --ops")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        profile_worker(Workload.from_json(args.workload), json.loads(args.worker), args.warmup)
        return
    w = Workload(args.size, args.batch, args.seq)
    if args.ops:
        from op_profile import op_profile

        op_profile(w, json.loads(args.op_variant))
        return
    variants = SETS[args.set]
    if args.only:
        keep = {"step (baseline)"} | {s.strip() for s in args.only.split(",")}
        variants = {k: v for k, v in variants.items() if k in keep}
    cpus = {int(c) for c in args.cpus.split(",") if c.strip()} or None
    # Start workers one at a time, so each compiles and warms up without the others' noise.
    # Idle workers keep their state: at BERT-base each holds ~2.5 GB (use --only to pick fewer).
    workers, ready = [], []
    for name, (opts, env) in variants.items():
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            json.dumps(opts),
            "--workload",
            w.to_json(),
            "--warmup",
            str(args.warmup),
        ]
        workers.append(Worker(name, cmd, cpus, env))
        if workers[-1].wait_ready():
            ready.append(workers[-1])
    try:
        for r in range(args.repeats):
            for wk in ready:
                wk.time(1)
            print(
                f"round {r + 1}/{args.repeats}: "
                + ", ".join(f"{wk.name} {wk.times[-1] * 1e3:.0f}" for wk in ready),
                file=sys.stderr,
                flush=True,
            )
    finally:
        for wk in workers:
            wk.close()
    base = statistics.median(ready[0].times)
    rows = {wk.name: statistics.median(wk.times) for wk in ready}
    cpu = {wk.name: statistics.median(wk.cpu) for wk in ready}
    base_cpu = cpu[ready[0].name]
    if args.json:
        print(
            json.dumps(
                {
                    "size": w.size,
                    "batch": w.batch,
                    "seq": w.seq,
                    "set": args.set,
                    "median_step_s": rows,
                    "median_cpu_s": cpu,
                }
            )
        )
        return
    print(
        f"\nBERT-{w.size} B={w.batch} L={w.seq}, set {args.set!r}: median of {args.repeats} "
        "interleaved steps"
    )
    print(
        f"{'variant':<30} {'median ms':>10} {'tokens/s':>10} {'vs baseline':>12} "
        f"{'CPU-s/step':>11} {'vs baseline (CPU)':>18}"
    )
    for name, med in rows.items():
        print(
            f"{name:<30} {med * 1e3:>10.1f} {w.tokens / med:>10,.0f} {base / med:>11.2f}x "
            f"{cpu[name]:>11.2f} {base_cpu / cpu[name]:>17.2f}x"
        )


if __name__ == "__main__":
    main()
