"""Documents streamed from files, and files cut into pieces that can be read independently.

A `Piece` is part of one input: a byte range of a plain-text or JSON-lines file, a whole
compressed (gzip / zstd) file, or a range of TFDS examples. Byte ranges need no index: a reader
of [start, stop) moves both ends forward to the next document boundary (the end of a blank line in
text, the end of a line in JSONL), so neighbouring pieces agree on where one ends and the next
begins, every document is read exactly once, and no piece has to look at any other. `plan_shards`
groups pieces into shards of about `target` input bytes from file sizes alone, so every machine
computes the same plan without reading the corpus.

Text: one sentence per line, a blank line ends a document. JSONL: one JSON object per line whose
`text_field` is a document, split into sentences at newlines and at `. ! ?` before a space.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import io
import json
import os
import re
from collections.abc import Iterable, Iterator

from bert_jax.errors import BertJaxError

Document = list[str]

COMPRESSED = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


@dataclasses.dataclass(frozen=True)
class Piece:
    """[start, stop) of one input: bytes of a file, or example indices (kind "tfds")."""

    kind: str  # "text" | "jsonl" | "shakespeare" | "tfds"
    path: str  # a file; for tfds "NAME:SPLIT"
    start: int
    stop: int
    compression: str = ""  # "" | "gz" | "zst" (then the piece is the whole file)

    @property
    def splittable(self) -> bool:
        return self.kind in ("text", "jsonl", "tfds") and not self.compression

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def file_inputs(patterns: Iterable[str]) -> list[Piece]:
    """One whole-file Piece per file matching the globs (sorted per glob, in the given order)."""
    pieces = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        matched = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
        if not matched:
            raise BertJaxError(f"{pattern!r} matches no files")
        for path in matched:
            stem, ext = os.path.splitext(path)
            compression = COMPRESSED.get(ext.lower(), "")
            if compression:
                ext = os.path.splitext(stem)[1]
            kind = "jsonl" if ext.lower() in (".jsonl", ".json") else "text"
            pieces.append(Piece(kind, path, 0, os.path.getsize(path), compression))
    return pieces


def plan_shards(inputs: list[Piece], target: int) -> list[list[Piece]]:
    """Consecutive runs of input of about `target` units each (bytes; examples for TFDS):
    splittable inputs are cut into ranges, the others (compressed files) go whole."""
    shards, current, fill = [], [], 0
    for piece in inputs:
        pos = piece.start
        while pos < piece.stop:
            take = piece.stop - pos
            if piece.splittable:
                take = min(take, target - fill)
            current.append(dataclasses.replace(piece, start=pos, stop=pos + take))
            fill, pos = fill + take, pos + take
            if fill >= target:
                shards.append(current)
                current, fill = [], 0
    if current:
        shards.append(current)
    return shards


def read_file_piece(piece: Piece, text_field: str = "text") -> Iterator[Document]:
    """The documents that start in a text/JSONL piece (all of them for a compressed file)."""
    if piece.compression:
        with _open_compressed(piece.path, piece.compression) as f:
            yield from _documents(piece, _lines(f, piece.path, 0, None), text_field)
        return
    try:
        f = open(piece.path, "rb")
    except OSError as e:
        raise BertJaxError(f"{piece.path}: cannot read ({e.strerror})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        blank = piece.kind == "text"
        begin = _boundary(f, piece.start, size, blank)
        end = _boundary(f, piece.stop, size, blank)
        yield from _documents(piece, _lines(f, piece.path, begin, end), text_field)


def text_document(text: str) -> Document:
    """A free-text document as sentences: its lines, split again at `. ! ?` before a space."""
    return [
        s.strip()
        for line in text.splitlines()
        for s in _SENTENCE_END.split(line.strip())
        if s.strip()
    ]


def paragraphs(lines: Iterable[str]) -> Iterator[Document]:
    """Blank-line separated groups of stripped non-empty lines."""
    doc: Document = []
    for line in lines:
        line = line.strip()
        if line:
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def decode_utf8(raw: bytes, path: str, offset: int = 0) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BertJaxError(
            f"{path}: not UTF-8 text (byte {offset + e.start}: {e.reason}); re-encode it as UTF-8"
        ) from None


# ---- internals ----------------------------------------------------------------------------------


def _documents(piece: Piece, lines: Iterator[tuple[int, str]], field: str) -> Iterator[Document]:
    if piece.kind == "text":
        yield from paragraphs(line for _, line in lines)
        return
    for offset, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BertJaxError(f"{piece.path}: invalid JSON at byte {offset} ({e.msg})") from None
        text = obj.get(field) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            raise BertJaxError(
                f"{piece.path}: the line at byte {offset} has no text field {field!r}"
            )
        doc = text_document(text)
        if doc:
            yield doc


def _lines(f, path: str, begin: int, end: int | None) -> Iterator[tuple[int, str]]:
    """(offset, decoded line) for the lines starting in [begin, end) (to EOF if end is None)."""
    if end is not None:  # a seekable file (compressed streams are read from their start)
        f.seek(begin)
    pos = begin
    while end is None or pos < end:
        try:
            raw = f.readline()
        except Exception as e:  # gzip / zstd: a damaged or truncated stream
            raise BertJaxError(f"{path}: cannot decompress ({type(e).__name__}: {e})") from None
        if not raw:
            return
        line = decode_utf8(raw, path, pos)
        if pos == 0:
            line = line.removeprefix("\ufeff")
        yield pos, line
        pos += len(raw)


def _boundary(f, x: int, size: int, blank: bool) -> int:
    """The first document boundary at or after byte x: the start of the first line that starts
    at or after x (JSONL), or the end of the first blank line from there on (text). Pieces that
    meet at x both compute the same boundary, so they partition the file's documents."""
    if x <= 0:
        return 0
    if x >= size:
        return size
    f.seek(x - 1)
    f.readline()  # the rest of the line holding byte x - 1
    if not blank:
        return f.tell()
    while True:
        raw = f.readline()
        if not raw:
            return size
        if not raw.decode("utf-8", "replace").strip():
            return f.tell()


def _open_compressed(path: str, compression: str):
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise BertJaxError(f"{path}: cannot read ({e.strerror})") from None
    if compression == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    try:
        import zstandard
    except ImportError:
        raw.close()
        raise BertJaxError(f"{path}: reading .zst needs the zstandard package") from None
    reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return io.BufferedReader(reader, buffer_size=1 << 20)
