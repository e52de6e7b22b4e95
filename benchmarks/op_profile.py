"""Op-level profile of bert_jax's CPU train step: jax.profiler trace → thread-time per HLO op,
grouped into categories (encoder/decoder matmuls, dropout RNG, softmax, copies, ...).

    python benchmarks/profile_cpu.py --size mini --ops [--op-variant '{"dtype": "bfloat16"}']

The trace is read with `jax.profiler.ProfileData`; each op is classified by the opcodes inside it
(and inside the computations it calls), taken from the compiled HLO text.
"""

from __future__ import annotations

import json
import os
import tempfile

import profile_cpu
from workload import Workload

# Categories of HLO thunks, first match wins, decided from the opcodes inside each (fused) op.
CATEGORIES = (
    ("matmul: MLM decoder (vocab)", lambda ops, shape: "dot" in ops and "30522" in shape),
    ("matmul: encoder", lambda ops, shape: "dot" in ops),
    (
        "dropout RNG (threefry bits, masks)",
        lambda ops, shape: (
            {"shift-right-logical", "xor"} <= ops or "rng-bit-generator" in ops or "u32[" in shape
        ),
    ),
    ("scatter (gather/take_along_axis grads)", lambda ops, shape: "scatter" in ops),
    ("argmax (accuracy metric)", lambda ops, shape: "iota" in ops and "reduce" in ops),
    ("softmax / cross-entropy", lambda ops, shape: "exponential" in ops),
    ("GELU (erf)", lambda ops, shape: "erf" in ops),
    ("LayerNorm", lambda ops, shape: "rsqrt" in ops),
    ("reductions (bias grads, norms)", lambda ops, shape: "reduce" in ops),
    ("gather (embeddings, masked positions)", lambda ops, shape: "gather" in ops),
    (
        "copies / transposes",
        lambda ops, shape: (
            ops <= {"copy", "bitcast", "transpose", "parameter", "reshape", "broadcast"}
        ),
    ),
)


def _hlo_index(hlo: str) -> dict[str, tuple[set[str], str]]:
    """instruction name → (opcodes it runs, incl. inside called computations; its result shape
    followed by the signatures of the computations it calls, i.e. its operand shapes)."""
    import re

    comps: dict[str, set[str]] = {}
    headers: dict[str, str] = {}
    calls: dict[str, list[str]] = {}
    instr: dict[str, tuple[str, str, list[str]]] = {}
    current = None
    line_re = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+(?: \S+)*?) ([a-z\-]+)\(")
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head and not line.startswith(" "):
            current = head.group(1)
            comps[current], calls[current] = set(), []
            headers[current] = line
            continue
        m = line_re.match(line)
        if not m or current is None:
            continue
        name, shape, opcode = m.groups()
        called = re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
        comps[current].add(opcode)
        calls[current] += called
        instr[name] = (opcode, shape, called)

    def closure(comp, seen):
        if comp in seen or comp not in comps:
            return set()
        seen.add(comp)
        out = set(comps[comp])
        for c in calls[comp]:
            out |= closure(c, seen)
        return out

    index = {}
    for name, (opcode, shape, called) in instr.items():
        ops = {opcode}
        for c in called:
            ops |= closure(c, set())
        signature = " ".join([shape] + [headers.get(c, "") for c in called])
        index[name] = (
            ops - {"fusion", "parameter", "constant", "get-tuple-element", "tuple"},
            signature,
        )
    return index


def op_profile(w: Workload, opts: dict, steps: int = 3) -> None:
    """Trace `steps` train steps with jax.profiler and print thread-time per category of op."""
    import collections
    import glob

    import jax

    from bert_jax.training import sharding
    from bert_jax.training.trainer import Trainer

    if opts.get("prng"):
        jax.config.update("jax_default_prng_impl", opts["prng"])
    for patch in opts.get("patches", []):
        getattr(profile_cpu, f"_patch_{patch}")()
    trainer, state, batch = profile_cpu._build(w, opts, Trainer, sharding)
    hlo = trainer.grad_step.lower(state["params"], state["step"], batch).compile().as_text()
    index = _hlo_index(hlo)
    for _ in range(2):
        state, metrics = trainer.train_step(state, batch)
        jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory() as trace_dir:
        import time

        t0 = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                state, metrics = trainer.train_step(state, batch)
                jax.block_until_ready(metrics)
        wall = (time.perf_counter() - t0) / steps
        path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
        profile = jax.profiler.ProfileData.from_file(path)
        per_op: collections.Counter = collections.Counter()
        for plane in profile.planes:
            for line in plane.lines:
                for event in line.events:
                    if event.name in index:
                        per_op[event.name] += event.duration_ns / steps
    per_cat: collections.Counter = collections.Counter()
    top: dict[str, list] = collections.defaultdict(list)
    for name, ns in per_op.items():
        ops, shape = index[name]
        cat = next((c for c, test in CATEGORIES if test(ops, shape)), "other elementwise")
        per_cat[cat] += ns
        top[cat].append((ns, name, shape))
    total = sum(per_cat.values())
    print(
        f"\nBERT-{w.size} B={w.batch} L={w.seq} {json.dumps(opts)}: {wall * 1e3:.0f} ms/step "
        f"wall (traced), {total / 1e6:.0f} ms/step of op thread-time"
    )
    print(f"{'category':<42} {'ms/step':>8} {'share':>6}  biggest op")
    for cat, ns in per_cat.most_common():
        ns_top, name, shape = max(top[cat])
        print(
            f"{cat:<42} {ns / 1e6:>8.1f} {100 * ns / total:>5.1f}%  {name} {shape.split()[0][:32]} "
            f"{ns_top / 1e6:.1f} ms"
        )
    trainer.close()
