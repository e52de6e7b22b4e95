"""The package reads as layers and stays that way: import contracts hold (and a violation fails
them), modules stay small, and running a model twice compiles once."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "bert_jax")
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint_imports(cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": cwd}
    return subprocess.run([LINT_IMPORTS], cwd=cwd, env=env, capture_output=True, text=True)


def test_layer_contracts_hold_and_a_violation_breaks_them(tmp_path):
    assert _lint_imports(ROOT).returncode == 0
    shutil.copytree(PACKAGE, tmp_path / "bert_jax", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path)
    trainer = tmp_path / "bert_jax" / "training" / "trainer.py"
    trainer.write_text(trainer.read_text() + "\nfrom bert_jax.inference import predict  # noqa\n")
    broken = _lint_imports(str(tmp_path))
    assert broken.returncode != 0 and "BROKEN" in broken.stdout


def _source_files():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _source_files():
        source = open(path, encoding="utf-8").read()
        lines = source.splitlines()
        if len(lines) > 400:
            too_long.append(f"{path}: {len(lines)} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = node.end_lineno - node.lineno + 1
                # A long function must say why, in a comment on the line above its `def`.
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                if span > 60 and not above.startswith("# Long:"):
                    too_long.append(f"{path}:{node.lineno} {node.name}: {span} lines")
    assert not too_long, "\n".join(too_long)


def test_embed_and_predict_compile_once_per_shape(minilm_dir):
    from bert_jax.inference.embed import embed
    from bert_jax.model import BertModel
    from bert_jax.model.forward import _forward
    from bert_jax.tokenizer import BertTokenizer

    model = BertModel.from_pretrained(minilm_dir)
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    texts = ["a short one", "a somewhat longer sentence with more words in it"]
    first = embed(model, tokenizer, texts)
    compiled = _forward._cache_size()
    again = embed(model, tokenizer, texts)
    reloaded = embed(BertModel.from_pretrained(minilm_dir), tokenizer, texts)  # same structure
    assert _forward._cache_size() == compiled
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, reloaded, atol=1e-6)
    # Other options are another function of the same model: compiled once more, then cached.
    embed(model, tokenizer, texts, pooling="cls")
    after_cls = _forward._cache_size()
    embed(model, tokenizer, texts, pooling="cls")
    assert _forward._cache_size() == after_cls == compiled + 1
