"""Tokens/s of one full MLM training step (forward, backward, AdamW) — bert_jax against HF peers.

    python benchmarks/train_step.py --size mini                      # B=16, L=128
    python benchmarks/train_step.py --size base --repeats 7 --json

Rows (same shapes, same 15% masked positions, same dropout, same optimizer; each in its own
process, timed round-robin one step at a time so machine noise hits every row alike):
  bert_jax        our Trainer.train_step (jit, donated state) + MaskedLMObjective, float32
  bert_jax_bf16   the same with BertConfig(dtype="bfloat16") (params and optimizer stay fp32)
  hf_torch        transformers BertForMaskedLM (PyTorch, eager) + torch.optim.AdamW
  hf_flax         transformers 4.57 FlaxBertForMaskedLM + optax.adamw under jax.jit
                  (its own venv: bash benchmarks/setup_peers.sh)
Our MLM head runs only at the P masked positions (B, P, vocab); the HF models compute logits at
every position (B, L, vocab). That is a design difference in our favour and is counted as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from workload import OUR_KEYS, VOCAB, Workload, flops_per_token, make_batch, serve, trainer_config  # noqa: E402  (after the sys.path line)

PEERS = ("hf_torch", "hf_flax")


# ---- the bert_jax worker ------------------------------------------------------------------------
def bert_jax_worker(w: Workload, dtype: str, warmup: int) -> None:
    import jax
    from flax import nnx

    from bert_jax.model.config import BertConfig
    from bert_jax.model.modeling import BertForMaskedLM
    from bert_jax.training import sharding
    from bert_jax.training.objectives import MaskedLMObjective
    from bert_jax.training.trainer import Trainer

    config = BertConfig.preset(
        w.size,
        vocab_size=VOCAB,
        hidden_dropout_prob=w.hidden_dropout,
        attention_probs_dropout_prob=w.attention_dropout,
        dtype=dtype,
    )
    model = BertForMaskedLM(config, rngs=nnx.Rngs(0))
    cfg = trainer_config(w.batch)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(model, MaskedLMObjective(), cfg, workdir)
        state = trainer.restore_or_init(iter([]))
        b = make_batch(w)
        batch = sharding.put_batch({k: b[k] for k in OUR_KEYS}, trainer.mesh)
        holder = [state]

        def step():
            holder[0], metrics = trainer.train_step(holder[0], batch)
            jax.block_until_ready(metrics)

        serve(step, warmup, {"jax": jax.__version__, "dtype": dtype})
        trainer.close()


# ---- the driver ----------------------------------------------------------------------------------
def peer_python(name: str) -> str | None:
    if name == "hf_flax":
        path = os.environ.get(
            "BERT_JAX_HF_FLAX_PYTHON", os.path.join(HERE, ".venv-hf-flax", "bin", "python")
        )
        return path if os.path.exists(path) else None
    return sys.executable


def worker_command(name: str, w: Workload, warmup: int) -> list[str] | None:
    if name.startswith("bert_jax"):
        dtype = "bfloat16" if name.endswith("bf16") else "float32"
        return [
            sys.executable,
            os.path.join(HERE, "train_step.py"),
            "--worker",
            name,
            "--workload",
            w.to_json(),
            "--dtype",
            dtype,
            "--warmup",
            str(warmup),
        ]
    python = peer_python(name)
    if python is None:
        return None
    return [python, os.path.join(HERE, "peers.py"), name, w.to_json(), "--warmup", str(warmup)]


class Worker:
    """A worker process (see workload.serve), optionally pinned to `cpus` with extra `env`."""

    def __init__(
        self, name: str, cmd: list[str], cpus: set[int] | None = None, env: dict | None = None
    ):
        self.name = name
        env = dict(
            os.environ, TF_CPP_MIN_LOG_LEVEL="3", TOKENIZERS_PARALLELISM="false", **(env or {})
        )
        if cpus:  # pinned before the interpreter starts any thread
            cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.info: dict = {}
        self.times: list[float] = []  # wall seconds per step
        self.cpu: list[float] = []  # process CPU seconds per step

    def wait_ready(self) -> bool:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()
            print(f"[{self.name}] failed to start:\n{err[-3000:]}", file=sys.stderr)
            return False
        self.info = json.loads(line)
        return True

    def time(self, steps: int) -> None:
        self.proc.stdin.write(json.dumps({"cmd": "time", "steps": steps}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        self.times += reply["times"]
        self.cpu += reply["cpu"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()


def matmul_peak(n: int = 4096, repeats: int = 5) -> dict[str, float]:
    """Measured FLOP/s of a big (n, n) @ (n, n) jnp.dot: float32, and bfloat16 in → f32 out;
    per wall second and per CPU second (`<dtype>_per_cpu_s`, robust to other load)."""
    import jax
    import jax.numpy as jnp

    out = {}
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
        f(a, a).block_until_ready()
        times, cpu = [], []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            f(a, a).block_until_ready()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out[name] = 2 * n**3 / statistics.median(times)
        out[f"{name}_per_cpu_s"] = 2 * n**3 / statistics.median(cpu)
    return out


def run(
    w: Workload,
    rows: list[str],
    repeats: int,
    warmup: int,
    quiet: bool,
    cpus: set[int] | None = None,
) -> dict:
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log("measuring the fp32/bf16 matmul peak (jnp.dot 4096x4096) ...")
    if cpus:
        os.sched_setaffinity(0, cpus)  # the peak of the cores the workers get
    peak = matmul_peak()
    workers, skipped = [], {}
    for name in rows:
        cmd = worker_command(name, w, warmup)
        if cmd is None:
            skipped[name] = "peer venv missing: bash benchmarks/setup_peers.sh"
            continue
        workers.append(Worker(name, cmd, cpus))
    log(f"compiling + {warmup} warm-up steps in {len(workers)} worker processes ...")
    ready = []
    for wk in workers:
        if wk.wait_ready():
            ready.append(wk)
        else:
            skipped[wk.name] = "worker failed (see stderr)"
    try:
        for r in range(repeats):  # round-robin: one step of each, `repeats` times
            for wk in ready:
                wk.time(1)
            log(
                f"round {r + 1}/{repeats}: "
                + ", ".join(f"{wk.name} {wk.times[-1] * 1e3:.0f} ms" for wk in ready)
            )
    finally:
        for wk in workers:
            wk.close()

    results = {}
    for wk in ready:
        med = statistics.median(wk.times)
        ours = wk.name.startswith("bert_jax")
        fpt = flops_per_token(w, head_fraction=w.masked / w.seq if ours else 1.0)
        tps = w.tokens / med
        cpu = statistics.median(wk.cpu)
        results[wk.name] = {
            "tokens_per_sec": tps,
            "tokens_per_cpu_sec": w.tokens / cpu,
            "median_cpu_s": cpu,
            "median_step_s": med,
            "min_step_s": min(wk.times),
            "max_step_s": max(wk.times),
            "flops_per_token": fpt,
            "flops_per_sec": tps * fpt,
            "fraction_of_fp32_peak": tps * fpt / peak["float32"],
            "flops_per_cpu_sec": fpt * w.tokens / cpu,
            "fraction_of_fp32_peak_cpu": fpt * w.tokens / cpu / peak["float32_per_cpu_s"],
            "info": wk.info,
        }
    return {
        "peak": peak,
        "results": results,
        "skipped": skipped,
        "cpus": sorted(cpus or os.sched_getaffinity(0)),
    }


def report(w: Workload, out: dict, as_json: bool) -> None:
    res = out["results"]
    peers = {k: v["tokens_per_sec"] for k, v in res.items() if k in PEERS}
    best_peer = max(peers.values()) if peers else None
    ratio = lambda k: (res[k]["tokens_per_sec"] / best_peer) if best_peer and k in res else None
    cpu_peers = {k: v["tokens_per_cpu_sec"] for k, v in res.items() if k in PEERS}
    best_cpu = max(cpu_peers.values()) if cpu_peers else None
    cpu_ratio = lambda k: (
        (res[k]["tokens_per_cpu_sec"] / best_cpu) if best_cpu and k in res else None
    )
    if as_json:
        print(
            json.dumps(
                {
                    "size": w.size,
                    "batch": w.batch,
                    "seq": w.seq,
                    "masked_per_row": w.masked,
                    "cpus": out["cpus"],
                    "tokens_per_sec": {k: v["tokens_per_sec"] for k, v in res.items()},
                    "ratio_vs_best_peer": ratio("bert_jax"),
                    "ratio_vs_best_peer_bf16": ratio("bert_jax_bf16"),
                    "tokens_per_cpu_sec": {k: v["tokens_per_cpu_sec"] for k, v in res.items()},
                    "ratio_vs_best_peer_cpu_time": cpu_ratio("bert_jax"),
                    "flops_per_token": {k: v["flops_per_token"] for k, v in res.items()},
                    "fraction_of_fp32_matmul_peak": {
                        k: v["fraction_of_fp32_peak"] for k, v in res.items()
                    },
                    "fraction_of_fp32_matmul_peak_cpu_time": {
                        k: v["fraction_of_fp32_peak_cpu"] for k, v in res.items()
                    },
                    "matmul_peak_flops": out["peak"],
                    "skipped": out["skipped"],
                    "step_seconds": {
                        k: [v["median_step_s"], v["min_step_s"], v["max_step_s"]]
                        for k, v in res.items()
                    },
                }
            )
        )
        return
    p = out["peak"]
    print(
        f"\nBERT-{w.size} MLM train step, B={w.batch} L={w.seq} P={w.masked} masked/row, "
        f"dropout {w.hidden_dropout}/{w.attention_dropout}, cores {out['cpus']}\nmatmul peak "
        f"(jnp.dot 4096²): fp32 {p['float32'] / 1e9:.0f} GFLOP/s wall, "
        f"{p['float32_per_cpu_s'] / 1e9:.0f} GFLOP per CPU-s; bf16 {p['bfloat16'] / 1e9:.0f} "
        f"GFLOP/s wall, {p['bfloat16_per_cpu_s'] / 1e9:.0f} GFLOP per CPU-s"
    )
    print(
        f"{'implementation':<15} {'tokens/s':>9} {'step ms (min-max)':>21} {'vs best peer':>12}"
        f" {'tok/CPU-s':>10} {'vs peer (CPU)':>13} {'GFLOP/tok':>9} {'GFLOP/s':>8}"
        f" {'% peak':>7} {'GFLOP/CPU-s':>11} {'% peak (CPU)':>12}"
    )
    fmt = lambda r: f"{r:.2f}x" if r else "-"
    for name, v in sorted(res.items(), key=lambda kv: -kv[1]["tokens_per_sec"]):
        low, high = v["min_step_s"] * 1e3, v["max_step_s"] * 1e3
        span = f"{v['median_step_s'] * 1e3:.0f} ({low:.0f}-{high:.0f})"
        print(
            f"{name:<15} {v['tokens_per_sec']:>9,.0f} {span:>21} {fmt(ratio(name)):>12} "
            f"{v['tokens_per_cpu_sec']:>10,.0f} {fmt(cpu_ratio(name)):>13} "
            f"{v['flops_per_token'] / 1e9:>9.3f} {v['flops_per_sec'] / 1e9:>8.1f} "
            f"{100 * v['fraction_of_fp32_peak']:>6.0f}% {v['flops_per_cpu_sec'] / 1e9:>11.1f} "
            f"{100 * v['fraction_of_fp32_peak_cpu']:>11.0f}%"
        )
    for name, why in out["skipped"].items():
        print(f"{name:<15} skipped: {why}")
    print(
        "tokens/s: wall clock, median of interleaved steps. tok/CPU-s: tokens per second of "
        "process CPU time (all threads; robust to other load on the machine).\n"
        "% peak: achieved matmul FLOP rate / the fp32 jnp.dot peak above, by wall clock and by "
        "CPU time.\n"
        "GFLOP/tok = 3 x forward matmul FLOPs (workload.flops_per_token); bert_jax runs the MLM "
        f"head on P/L = {w.masked}/{w.seq} of the tokens, HF on all of them."
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--size", default="mini", choices=["tiny", "mini", "small", "medium", "base", "large"]
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7, help="timed steps per row (>= 5)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per row, compile included")
    ap.add_argument("--hidden-dropout", type=float, default=0.1)
    ap.add_argument(
        "--attention-dropout",
        type=float,
        default=0.1,
        help="0 lets bert_jax use the fused attention path",
    )
    ap.add_argument(
        "--cpus",
        default="",
        help="pin every worker (and the peak measurement) to these cores, e.g. 0",
    )
    ap.add_argument("--rows", default="bert_jax,bert_jax_bf16,hf_torch,hf_flax")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    # internal: run one of our rows as a worker process
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        bert_jax_worker(Workload.from_json(args.workload), args.dtype, args.warmup)
        return
    if args.repeats < 5:
        ap.error("--repeats must be at least 5")
    w = Workload(args.size, args.batch, args.seq, args.hidden_dropout, args.attention_dropout)
    cpus = {int(c) for c in args.cpus.split(",") if c.strip()} or None
    out = run(
        w,
        [r.strip() for r in args.rows.split(",") if r.strip()],
        args.repeats,
        args.warmup,
        quiet=False,
        cpus=cpus,
    )
    report(w, out, args.json)


if __name__ == "__main__":
    main()
