"""`bert-jax export`: StableHLO reloaded in a fresh process, ONNX under onnxruntime, the portable
attention switch, one-line errors, and the destination rules."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.cli import main
from bert_jax.errors import BertJaxError
from bert_jax.inference.export import export_model
from bert_jax.model import BertConfig, BertForPreTraining, BertForTokenClassification, load_model
from bert_jax.model.attention import dot_product_attention, portable_attention
from bert_jax.model.forward import jit_forward
from bert_jax.model.modernbert import ModernBertForSequenceClassification
from bert_jax.model.modernbert_config import ModernBertConfig
from bert_jax.tokenizer import BertTokenizer

# Two shapes, neither of them the export's own check batch (2, 16).
SHAPES = [(3, 21), (1, 40)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text("the cat sat on the mat\nwhat a lovely day it is\n" * 20)
    return BertTokenizer.train([str(corpus)], vocab_size=60, min_frequency=1)


@pytest.fixture(scope="module")
def modernbert_dir(tmp_path_factory, tokenizer):
    """A ModernBERT classifier: 4 layers, half window 4, so 21/40-token rows use both kinds."""
    config = ModernBertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=64,
        local_attention=8,
        pad_token_id=tokenizer.pad_id,
    ).with_labels(["neg", "neutral", "pos"])
    directory = tmp_path_factory.mktemp("modernbert") / "model"
    ModernBertForSequenceClassification(config, rngs=nnx.Rngs(0)).save_pretrained(
        directory, tokenizer=tokenizer
    )
    return directory


@pytest.fixture(scope="module")
def bert_ner_dir(tmp_path_factory, tokenizer):
    config = BertConfig.tiny(vocab_size=tokenizer.vocab_size, max_position_embeddings=64)
    directory = tmp_path_factory.mktemp("bert") / "model"
    model = BertForTokenClassification(config.with_labels(["O", "B-X", "I-X"]), rngs=nnx.Rngs(1))
    model.save_pretrained(directory, tokenizer=tokenizer)
    return directory


@pytest.fixture(scope="module")
def served_modernbert(tmp_path_factory, modernbert_dir):
    """The ModernBERT classifier exported through the command line (StableHLO)."""
    served = tmp_path_factory.mktemp("served") / "served"
    assert main(["export", "--model", str(modernbert_dir), "--out", str(served)]) == 0
    return served


def _inputs(shape, vocab, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, shape).astype(np.int32)
    mask = np.ones(shape, np.int32)
    if shape[0] > 1:
        mask[1, shape[1] // 3 :] = 0
    types = np.zeros(shape, np.int32)
    types[:, shape[1] // 2 :] = 1
    return ids, types, mask


def _logits(model, **batch):
    return model(**batch)


def _model_outputs(directory, batches):
    """The model's own logits for each (ids, types, mask) batch, jitted (not op by op)."""
    forward = jit_forward(load_model(str(directory)), _logits)
    return [
        np.asarray(forward(input_ids=ids, token_type_ids=types, attention_mask=mask))
        for ids, types, mask in batches
    ]


_FRESH = """
    import sys, numpy as np, bert_jax
    served = bert_jax.load_exported(sys.argv[1])
    batches = np.load(sys.argv[2])
    results = {}
    for i in range(len(batches.files) // 3):
        out = served(batches[f"ids{i}"], batches[f"types{i}"], batches[f"mask{i}"])
        results.update({f"{name}{i}": value for name, value in out.items()})
    assert "flax" not in sys.modules  # the loader needs no model code
    np.savez(sys.argv[3], **results)
"""


def _run_fresh(served, tmp_path, batches):
    """Run the export in a new interpreter on `batches` [(ids, types, mask)]; its outputs."""
    arrays = {}
    for i, (ids, types, mask) in enumerate(batches):
        arrays.update({f"ids{i}": ids, f"types{i}": types, f"mask{i}": mask})
    np.savez(tmp_path / "in.npz", **arrays)
    script = [sys.executable, "-c", textwrap.dedent(_FRESH), str(served)]
    subprocess.run(
        script + [str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        check=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    return np.load(tmp_path / "out.npz")


@pytest.mark.parametrize("model", ["modernbert", "bert_ner"])
def test_stablehlo_export_reloads_in_a_fresh_process(request, tmp_path, model):
    model_dir = request.getfixturevalue(f"{model}_dir")
    if model == "modernbert":
        served = request.getfixturevalue("served_modernbert")
    else:
        served = tmp_path / "served"
        export_model(model_dir, served)
    manifest = json.loads((served / "export.json").read_text())
    assert manifest["platforms"] == ["cpu", "cuda", "tpu"]
    assert manifest["check_max_abs_diff"] <= 1e-5
    assert {"tokenizer.json", "vocab.txt", "model.jax_export"} <= set(os.listdir(served))

    batches = [_inputs(shape, 40, seed) for seed, shape in enumerate(SHAPES)]
    out = _run_fresh(served, tmp_path, batches)
    expected_all = _model_outputs(model_dir, batches)
    for i, ((_, _, mask), expected) in enumerate(zip(batches, expected_all)):
        real = mask.astype(bool) if expected.ndim == 3 else slice(None)  # NER: real tokens
        np.testing.assert_allclose(out[f"logits{i}"][real], expected[real], atol=1e-5)
        probs = np.asarray(jax.nn.softmax(expected, axis=-1))
        np.testing.assert_allclose(out[f"probabilities{i}"][real], probs[real], atol=1e-5)


def test_exported_predict_matches_the_predictor(modernbert_dir, served_modernbert):
    import bert_jax
    from bert_jax.inference.predict import Predictor

    texts = ["what a lovely day", "the cat sat on the mat " * 5]
    got = bert_jax.load_exported(served_modernbert).predict(texts)
    expected = Predictor.from_pretrained(modernbert_dir).predict(texts)
    for g, e in zip(got, expected):
        assert g["label"] == e["label"]
        np.testing.assert_allclose(
            list(g["scores"].values()), list(e["scores"].values()), atol=1e-5
        )


def test_onnx_export_runs_under_onnxruntime(modernbert_dir, tmp_path):
    pytest.importorskip("jax2onnx", reason="pip install 'bert-jax[export]'")
    pytest.importorskip("onnxruntime", reason="pip install 'bert-jax[export]'")
    import bert_jax

    manifest = export_model(modernbert_dir, tmp_path / "served", format="onnx")
    assert manifest["files"][0] == "model.onnx" and manifest["check_max_abs_diff"] <= 1e-4
    served = bert_jax.load_exported(tmp_path / "served")
    batches = [_inputs(shape, 40, seed) for seed, shape in enumerate(SHAPES)]
    for batch, expected in zip(batches, _model_outputs(modernbert_dir, batches)):
        np.testing.assert_allclose(served(*batch)["logits"], expected, atol=1e-4)


def test_portable_attention_never_asks_for_cudnn(monkeypatch):
    """On a GPU, bf16 attention asks for cuDNN's kernel (a GPU-only custom call); inside
    `portable_attention` (what export traces under) it must not."""
    asked = []
    real = jax.nn.dot_product_attention

    def spy(*args, implementation=None, **kwargs):
        asked.append(implementation)
        return real(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    q = jnp.ones((1, 4, 2, 8), jnp.bfloat16)
    mask = jnp.ones((1, 1, 1, 4), bool)
    dot_product_attention(q, q, q, mask)
    with portable_attention():
        dot_product_attention(q, q, q, mask)
    assert asked == ["cudnn", None]


def _error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    return err


def test_unsupported_exports_give_one_error_line(
    modernbert_dir, tokenizer, tmp_path, capsys, monkeypatch
):
    out = str(tmp_path / "served")
    args = ["export", "--model", str(modernbert_dir), "--out", out]
    assert "float16" in _error_line(capsys, args + ["--dtype", "float16"])
    assert "float32 only" in _error_line(capsys, args + ["--format", "onnx", "--dtype", "bfloat16"])
    with monkeypatch.context() as m:  # as on a machine without the [export] extra
        find_spec = importlib.util.find_spec
        m.setattr(importlib.util, "find_spec", lambda n: None if n == "jax2onnx" else find_spec(n))
        assert "bert-jax[export]" in _error_line(capsys, args + ["--format", "onnx"])
    assert "invalid choice" in _error_line(capsys, args + ["--format", "tflite"])

    pretraining = tmp_path / "pretraining"
    config = BertConfig.tiny(vocab_size=tokenizer.vocab_size, max_position_embeddings=64)
    BertForPreTraining(config, rngs=nnx.Rngs(0)).save_pretrained(pretraining, tokenizer=tokenizer)
    assert "no servable output" in _error_line(
        capsys, ["export", "--model", str(pretraining), "--out", out]
    )
    untokenized = tmp_path / "weights-only"
    BertForTokenClassification(config, rngs=nnx.Rngs(0)).save_pretrained(untokenized)
    with pytest.raises(BertJaxError, match="no tokenizer files"):
        export_model(untokenized, out)
    assert not os.path.exists(out)  # nothing half-written


def test_export_refuses_a_directory_of_foreign_files(
    modernbert_dir, served_modernbert, tmp_path, capsys
):
    out = tmp_path / "served"
    shutil.copytree(served_modernbert, out)  # an earlier export ...
    (out / "notes.txt").write_text("mine")  # ... plus a file of the user's
    err = _error_line(capsys, ["export", "--model", str(modernbert_dir), "--out", str(out)])
    assert "notes.txt" in err and (out / "notes.txt").read_text() == "mine"

    (out / "notes.txt").unlink()
    export_model(modernbert_dir, out, dtype="bfloat16")  # an earlier export alone is replaced
    assert json.loads((out / "export.json").read_text())["dtype"] == "bfloat16"
