"""The compute dtype chosen for the machine, the persistent compilation cache, `bert-jax plot`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bert_jax.cli import main
from bert_jax.errors import BertJaxError
from bert_jax.model.device import describe_dtype, resolve_dtype
from bert_jax.xla_flags import prefer_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "platform, flags, expected",
    [
        (
            "cpu",
            frozenset({"avx2", "avx512f", "avx512_bf16"}),
            "bfloat16",
        ),  # Sapphire Rapids, Zen 4
        ("cpu", frozenset({"avx2", "amx_bf16", "amx_tile"}), "bfloat16"),
        ("cpu", frozenset({"avx2", "avx512f"}), "float32"),  # bf16 emulated: slower than fp32
        ("cpu", frozenset(), "float32"),
        ("gpu", frozenset(), "bfloat16"),
        ("tpu", frozenset(), "bfloat16"),
    ],
)
def test_auto_dtype_follows_the_hardware(platform, flags, expected):
    assert resolve_dtype("auto", platform=platform, flags=flags) == expected
    assert resolve_dtype("", platform=platform, flags=flags) == expected
    assert resolve_dtype("float32", platform=platform, flags=flags) == "float32"  # explicit wins
    assert expected in describe_dtype("auto", expected)


def test_unknown_dtype_names_the_choices():
    with pytest.raises(BertJaxError, match="dtype must be one of"):
        resolve_dtype("fp8")


def test_preferred_xla_flags_are_added_unless_the_user_names_them():
    env = {}
    assert prefer_flags(env) == "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    mine = "--xla_cpu_enable_concurrency_optimized_scheduler=true --xla_cpu_use_xnnpack=false"
    env = {"XLA_FLAGS": mine}
    assert prefer_flags(env) == mine  # the user's value wins
    env = {"XLA_FLAGS": "--xla_cpu_use_xnnpack=false"}
    assert prefer_flags(env).split() == [
        "--xla_cpu_use_xnnpack=false",
        "--xla_cpu_enable_concurrency_optimized_scheduler=false",
    ]


def test_importing_bert_jax_sets_flags_that_xla_accepts():
    # XLA aborts on a flag it does not know when its backend starts: this run proves it reads
    # and accepts ours (and that importing bert_jax adds them before any backend exists).
    code = (
        "import os, bert_jax, jax.numpy as jnp; print(float(jnp.ones(3).sum()));"
        "print(os.environ['XLA_FLAGS'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    total, flags = out.stdout.split("\n")[:2]
    assert total == "3.0" and "xla_cpu_enable_concurrency_optimized_scheduler=false" in flags


def test_second_process_loads_compiled_code_from_the_cache(tmp_path):
    # A small BERT's forward: compiling it takes longer than the cache's 0.2 s threshold.
    script = """
import numpy as np
from flax import nnx
from jax._src import monitoring
from bert_jax.model import BertConfig, BertModel
from bert_jax.model.device import enable_compilation_cache
from bert_jax.model.forward import jit_forward
hits = []
monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
enable_compilation_cache()
config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                    intermediate_size=64)
forward = jit_forward(BertModel(config, rngs=nnx.Rngs(0)), lambda m, **b: m(**b).pooler_output)
forward(input_ids=np.ones((2, 16), np.int32)).block_until_ready()
print(len(hits))
"""
    env = {**os.environ, "BERT_JAX_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": ROOT}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout.split()[-1]
        for _ in range(2)
    ]
    assert runs[0] == "0" and int(runs[1]) >= 1
    assert os.listdir(tmp_path / "cache")


def test_plot_writes_a_png_of_each_run(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for run, slope in (("a", 1.0), ("b", 0.5)):
        (tmp_path / run).mkdir()
        lines = [{"step": s, "split": "train", "loss": 5 - slope * s / 10} for s in range(1, 11)]
        lines += [
            {"step": s, "split": "eval", "loss": 5 - slope * s / 12, "mlm_accuracy": s / 20}
            for s in (5, 10)
        ]
        text = "".join(json.dumps(x) + "\n" for x in lines) + '{"step": 11, "spl'  # torn line
        (tmp_path / run / "metrics.jsonl").write_text(text)
    out = tmp_path / "curves.png"
    code = main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
    assert code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    code = main(["plot", str(tmp_path / "missing"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "metrics.jsonl: not found" in err


def test_pretrain_writes_tensorboard_scalars_and_the_plot_reads_its_metrics(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    pytest.importorskip("matplotlib")
    work = tmp_path / "run"
    overrides = [
        "--config.train.steps=4", "--config.optimizer.warmup_steps=1",
        "--config.train.batch_size=8", "--config.data.max_length=32",
        "--config.data.vocab_size=300", "--config.model.max_position_embeddings=32",
        "--config.train.eval_every=2", "--config.train.checkpoint_every=4",
        "--config.train.log_every=2", "--config.train.eval_batches=1",
        "--config.train.progress=false", "--config.train.tensorboard=true",
    ]  # fmt: skip
    config = os.path.join(ROOT, "configs", "pretrain", "tiny_shakespeare.py")
    assert main(["pretrain", "--config", config, "--workdir", str(work), *overrides]) == 0
    events = list((work / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    raw = events[0].read_bytes()
    assert b"train/loss" in raw and b"eval/mlm_accuracy" in raw
    assert main(["plot", str(work), "--out", str(tmp_path / "c.png")]) == 0
