"""Hyper-parameter sweep: ranking, best model copy, resume, failures recorded, bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from flax import nnx

from bert_jax.cli import main
from bert_jax.errors import BertJaxError
from bert_jax.model.config import BertConfig
from bert_jax.model.modeling import BertModel
from bert_jax.tokenizer import BertTokenizer
from bert_jax.training import sweep

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "finetune", "classify_csv.py")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_dir):
    """A tiny random BERT and a CSV where the label is whether the text contains 'excellent'."""
    root = tmp_path_factory.mktemp("sweep")
    tok = BertTokenizer.from_pretrained(minilm_dir)
    model_dir = str(root / "model")
    BertModel(
        BertConfig.tiny(vocab_size=tok.vocab_size, max_position_embeddings=64), rngs=nnx.Rngs(0)
    ).save_pretrained(model_dir, tok)
    rng = np.random.default_rng(0)
    filler = ["the", "movie", "plot", "was", "a", "with", "actors", "and", "scenes", "long"]
    lines = ["text,label"]
    for i in range(160):
        words = list(rng.choice(filler, size=6))
        label = i % 2
        if label:
            words.insert(int(rng.integers(0, 6)), "excellent")
        lines.append(f"{' '.join(words)},{'pos' if label else 'neg'}")
    csv = root / "data.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    overrides = [
        f"--config.model={model_dir}",
        f"--config.data.train_file={csv}",
        "--config.data.max_length=16",
        "--config.train.batch_size=16",
        "--config.train.epochs=2",
        "--config.train.progress=false",
    ]
    return root, overrides


def test_sweep_ranks_trials_copies_best_and_resumes(setup, capsys):
    root, overrides = setup
    workdir = str(root / "run")
    argv = [
        "sweep",
        "--config",
        CONFIG,
        "--workdir",
        workdir,
        "--grid",
        "optimizer.learning_rate=1e-6,3e-3",
        *overrides,
    ]
    assert main(argv) == 0
    best_line = json.loads(capsys.readouterr().out)
    with open(os.path.join(workdir, "sweep.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert all(r["metric"] == "accuracy" and r["seconds"] > 0 for r in records)
    by_lr = {r["settings"]["optimizer.learning_rate"]: r for r in records}
    assert by_lr["3e-3"]["value"] > by_lr["1e-6"]["value"]  # the sane learning rate learns the rule
    assert best_line["trial"] == by_lr["3e-3"]["trial"]
    best = os.path.join(workdir, "best")
    trial_model = os.path.join(by_lr["3e-3"]["workdir"], "model")
    with (
        open(os.path.join(best, "model.safetensors"), "rb") as a,
        open(os.path.join(trial_model, "model.safetensors"), "rb") as b,
    ):
        assert a.read() == b.read()

    # Rerun: nothing runs again.
    calls = []
    ranked = sweep.run_sweep(
        CONFIG,
        workdir,
        sweep.grid_trials({"optimizer.learning_rate": ["1e-6", "3e-3"]}),
        base_overrides=overrides,
        run_trial=lambda *a: calls.append(a),
    )
    assert calls == [] and ranked[0]["trial"] == best_line["trial"]


def test_failed_trial_is_recorded_and_sweep_goes_on(setup, tmp_path):
    _, overrides = setup
    # max_length 100000 is a valid override but fails at run time (beyond max positions).
    trials = sweep.grid_trials({"data.max_length": ["100000", "16"], "train.epochs": ["1"]})
    ranked = sweep.run_sweep(CONFIG, str(tmp_path), trials, base_overrides=overrides)
    status = {r["settings"]["data.max_length"]: r for r in ranked}
    assert (
        status["100000"]["status"] == "failed"
        and "data.max_length 100000 exceeds" in status["100000"]["error"]
    )
    assert status["16"]["status"] == "ok" and ranked[0] is status["16"]
    assert os.path.isdir(tmp_path / "best")


def test_random_search_samples_in_range():
    space = sweep.parse_space(["optimizer.learning_rate=1e-5:1e-3:log", "train.batch_size=8:32"])
    trials = sweep.random_trials(space, 20, seed=0)
    lrs = [float(t["optimizer.learning_rate"]) for t in trials]
    assert all(1e-5 <= x <= 1e-3 for x in lrs) and min(lrs) < 1e-4 < max(lrs)
    assert all(
        t["train.batch_size"].isdigit() and 8 <= int(t["train.batch_size"]) <= 32 for t in trials
    )
    assert sweep.random_trials(space, 20, seed=0) == trials
    with pytest.raises(BertJaxError, match="at least one trial"):
        sweep.random_trials(space, 0, seed=0)
    paper = sweep.random_trials(sweep.PAPER_GRID, 5, seed=1)
    assert len({sweep.trial_name(t) for t in paper}) == 5
    assert len(sweep.grid_trials(sweep.PAPER_GRID)) == 18


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--grid", "optimizer.no_such_key=1,2"], "unknown config key"),
        (["--grid", "optimizer.learning_rate="], "expected key=v1,v2"),
        (["--random", "2", "--space", "optimizer.learning_rate=5:1"], "need lo < hi"),
        (["--random", "0"], "--random: must be at least 1"),
    ],
)
def test_bad_sweep_input_is_one_error_line(argv, expected, tmp_path, capsys):
    code = main(["sweep", "--config", CONFIG, "--workdir", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_empty_space_is_an_error(tmp_path):
    with pytest.raises(BertJaxError, match="search space is empty"):
        sweep.run_sweep(CONFIG, str(tmp_path), [])
