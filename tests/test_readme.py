"""The README stays true: its CLI examples and the main-job script run (shortened), and every
subcommand it documents exists with a --help."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bert_jax.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# Appended to the README's training commands so the test takes seconds, not minutes.
SHORT_PRETRAIN = (
    " --config.train.steps=4 --config.optimizer.warmup_steps=1 --config.train.batch_size=8"
    " --config.data.max_length=32 --config.data.vocab_size=1000"
    " --config.model.max_position_embeddings=64"
    " --config.train.eval_every=4 --config.train.checkpoint_every=4 --config.train.log_every=2"
    " --config.train.eval_batches=1 --config.train.progress=false"
)
SHORT_DATA = (
    " --config.data.max_train_examples=48 --config.data.max_eval_examples=32"
    " --config.data.max_length=32"
)
SHORT_FINETUNE = (
    SHORT_DATA
    + " --config.train.epochs=1 --config.train.batch_size=16 --config.train.progress=false"
)


def readme_examples() -> list[str]:
    text = open(README, encoding="utf-8").read()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def shorten(line: str) -> str:
    if " pretrain " in line:
        return line + SHORT_PRETRAIN
    if " finetune " in line or " sweep " in line:
        return line + SHORT_FINETUNE
    if " evaluate " in line and "--config " in line:
        return line + SHORT_DATA
    return line


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory) -> str:
    """A `.venv/bin` stand-in pointing at this interpreter, so the README's lines run verbatim."""
    root = tmp_path_factory.mktemp("repo")
    bin_path = root / ".venv" / "bin"
    bin_path.mkdir(parents=True)
    for name, command in (
        ("python", sys.executable),
        ("bert-jax", f"{sys.executable} -m bert_jax.cli"),
    ):
        wrapper = bin_path / name
        wrapper.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        wrapper.chmod(0o755)
    for name in ("configs", "scripts"):
        (root / name).symlink_to(os.path.join(ROOT, name))
    return str(root)


def test_readme_cli_examples_run(bin_dir):
    lines = readme_examples()
    assert len(lines) >= 10
    documented = {m.group(1) for m in (re.search(r"bert-jax (\S+)", ln) for ln in lines) if m}
    assert documented >= {
        "embed",
        "convert",
        "tokenizer",
        "pretrain",
        "fill-mask",
        "evaluate",
        "finetune",
        "predict",
        "explain",
        "sweep",
    }
    script = "set -euo pipefail\n" + "\n".join(
        f"echo '>>> {i}'\n{shorten(line)} > out_{i}.txt" for i, line in enumerate(lines)
    )
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=bin_dir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for i, line in enumerate(lines):
        if (
            "bert-jax" in line
            and " convert " not in line
            and " tokenizer " not in line
            and " pretrain " not in line
            and " finetune " not in line
        ):
            out = open(os.path.join(bin_dir, f"out_{i}.txt"), encoding="utf-8").read()
            assert out.strip(), f"README example printed nothing: {line}"


def test_demo_script_runs_shortened(bin_dir, tmp_path):
    env = _env()
    env.update(
        RUNS=str(tmp_path / "runs"), PRETRAIN_ARGS=SHORT_PRETRAIN, FINETUNE_ARGS=SHORT_FINETUNE
    )
    proc = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=bin_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "mlm_accuracy" in out and "unigram entropy" in out  # scores beside their baselines
    assert "accuracy" in out and "a model that ignores the text" in out
    runs = tmp_path / "runs"
    assert os.path.isfile(runs / "tweet_sentiment" / "model" / "model.safetensors")
    for run in ("tiny_shakespeare", "tweet_sentiment"):
        assert (runs / run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_every_subcommand_in_the_readme_has_help(capsys):
    text = open(README, encoding="utf-8").read()
    table = {m.group(1) for m in re.finditer(r"^\| `bert-jax ([a-z-]+)", text, re.M)}
    parser = build_parser()
    subcommands = set(parser._subparsers._group_actions[0].choices)
    assert table == subcommands, (table, subcommands)
    for name in subcommands:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.strip()
