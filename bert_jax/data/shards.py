"""Prepared datasets on disk: ArrayRecord shards of compact rows, a manifest, random access.

A prepared directory holds
  plan.json                         what `prepare` was asked for and which input each shard holds
  tokenizer/                        the tokenizer the ids come from (HF layout)
  shard-00000-of-00012.arrayrecord  records of `rows_per_record` rows (bert_jax.data.rows): the
                                    shard's train rows, then its eval rows from a fresh record
  shard-00000-of-00012.json         the shard's counts, size and sha256: written once the shard
                                    is complete and renamed into place (its "done" mark)
  manifest.json                     format, tokenizer fingerprint, max_length, layout, per-shard
                                    rows / tokens / bytes / sha256, totals; written last
Several rows share one record (a ~4 KB record for 128-token rows) so ArrayRecord's ~50 bytes of
framing per record and the in-memory index (8 bytes per record, per host) stay small; reading a
row decodes its record. ArrayRecord hashes every record, so a byte altered after `prepare` fails
when read; sizes are checked when a dataset is opened, sha256 by `prepare` when it finishes.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import re
import resource
import tempfile

import numpy as np

from bert_jax.data.rows import Rows, id_dtype_for
from bert_jax.errors import BertJaxError
from bert_jax.io import pid_alive, read_json
from bert_jax.tokenizer import BertTokenizer

FORMAT, VERSION = "bert-jax-prepared", 1
# group_size:1 makes every record randomly accessible (grain requires it); zstd level 1 costs
# little time and saves ~25% on token ids.
WRITER_OPTIONS = "group_size:1,zstd:1"
RECORD_BYTES = 4096  # target uncompressed record size: rows_per_record = this // row bytes
_TMP = re.compile(r"^\.tmp-(?P<name>.+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")
_SIDECAR = re.compile(r"^shard-\d+-of-\d+\.json$")


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.arrayrecord"


def sidecar_name(index: int, count: int) -> str:
    return shard_name(index, count).removesuffix(".arrayrecord") + ".json"


def rows_per_record(max_length: int, vocab_size: int) -> int:
    return max(1, RECORD_BYTES // (max_length * id_dtype_for(vocab_size).itemsize))


def tokenizer_fingerprint(tokenizer: BertTokenizer) -> str:
    """sha256 of the tokenizer's full definition (vocab, normaliser, pre-tokeniser, ...)."""
    canonical = json.dumps(json.loads(tokenizer.backend.to_str()), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def sweep_stale_temps(directory: str) -> None:
    """Remove `.tmp-NAME-PID-*` files of our own killed runs (PID no longer running)."""
    for entry in os.listdir(directory):
        m = _TMP.match(entry)
        if m and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
            path = os.path.join(directory, entry)
            if os.path.isfile(path):
                os.remove(path)


class ShardWriter:
    """Writes one shard under a temporary name; `close` makes it durable and renames it."""

    def __init__(self, path: str, *, rows_per_record: int, id_dtype: np.dtype):
        from array_record.python.array_record_module import ArrayRecordWriter

        directory, name = os.path.split(path)
        fd, self._tmp = tempfile.mkstemp(prefix=f".tmp-{name}-{os.getpid()}-", dir=directory)
        os.close(fd)
        self.path, self._k, self._dtype = path, rows_per_record, id_dtype
        self._writer = ArrayRecordWriter(self._tmp, WRITER_OPTIONS)
        self._pending: list[Rows] = []  # train rows not yet in a full record
        self._eval: list[Rows] = []  # eval rows, written after all train rows
        self.stats = dict.fromkeys(
            ("train_rows", "eval_rows", "train_records", "eval_records"), 0
        ) | {"train_tokens": 0, "eval_tokens": 0}

    def add(self, rows: Rows, split: str) -> None:
        self.stats[f"{split}_rows"] += len(rows)
        self.stats[f"{split}_tokens"] += rows.real_tokens()
        if split == "eval":
            self._eval.append(rows)
            return
        self._pending.append(rows)
        if sum(len(r) for r in self._pending) >= self._k:
            self._flush("train", final=False)

    def _flush(self, split: str, final: bool) -> None:
        parts = self._pending if split == "train" else self._eval
        if not parts:
            return
        rows = Rows.concat(parts)
        full = len(rows) if final else len(rows) - len(rows) % self._k
        for start in range(0, full, self._k):
            part = rows.select(np.arange(start, min(start + self._k, full)))
            self._writer.write(part.to_bytes(self._dtype))
            self.stats[f"{split}_records"] += 1
        rest = [rows.select(np.arange(full, len(rows)))] if full < len(rows) else []
        if split == "train":
            self._pending = rest
        else:
            self._eval = rest

    def close(self) -> dict:
        """Write what is left, fsync, rename to the final name; returns the shard's stats."""
        self._flush("train", final=True)
        self._flush("eval", final=True)
        self._writer.close()
        digest = hashlib.sha256()
        with open(self._tmp, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
            os.fsync(f.fileno())
        self.stats |= {"bytes": os.path.getsize(self._tmp), "sha256": digest.hexdigest()}
        os.chmod(self._tmp, 0o666 & ~_umask())
        os.replace(self._tmp, self.path)
        _fsync_dir(os.path.dirname(self.path))
        return self.stats

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- reading ------------------------------------------------------------------------------------


def is_prepared(path: str) -> bool:
    """`path` is a directory `prepare` wrote into (complete or not)."""
    return os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, "manifest.json"))
        or os.path.isfile(os.path.join(path, "plan.json"))
    )


class PreparedDataset:
    """An opened prepared directory: manifest checked, every shard present with its size."""

    def __init__(self, path: str, *, verify: bool = False):
        self.path = os.path.abspath(path)
        manifest_path = os.path.join(self.path, "manifest.json")
        if not os.path.isfile(manifest_path):
            done = len([e for e in os.listdir(self.path) if _SIDECAR.match(e)])
            raise BertJaxError(
                f"{self.path}: an incomplete prepared dataset (no manifest.json; {done} shards "
                "done): rerun `bert-jax prepare` (every --shard part) to finish it"
            )
        self.manifest = m = read_json(manifest_path)
        if m.get("format") != FORMAT or m.get("version") != VERSION:
            raise BertJaxError(
                f"{manifest_path}: not a {FORMAT} v{VERSION} manifest "
                f"(format {m.get('format')!r}, version {m.get('version')!r})"
            )
        self.layout, self.max_length = m["layout"], int(m["max_length"])
        self.fingerprint = hashlib.sha256(
            json.dumps(m["shards"], sort_keys=True).encode()
        ).hexdigest()
        for shard in m["shards"]:
            _check_shard(self.path, shard, verify)
        _raise_open_file_limit(len(m["shards"]) + 256)

    def tokenizer(self) -> BertTokenizer:
        tok = BertTokenizer.from_pretrained(os.path.join(self.path, "tokenizer"))
        self.check_tokenizer(tok, os.path.join(self.path, "tokenizer"))
        return tok

    def check_tokenizer(self, tokenizer: BertTokenizer, source: str) -> None:
        """One error line unless `tokenizer` is the one the ids were made with."""
        want = self.manifest["tokenizer"]["fingerprint"]
        got = tokenizer_fingerprint(tokenizer)
        if got != want:
            raise BertJaxError(
                f"{self.path}: prepared with another tokenizer than {source} (fingerprint "
                f"{want[:12]} vs {got[:12]}); prepare the corpus with this tokenizer, or use "
                f"the dataset's own ({os.path.join(self.path, 'tokenizer')})"
            )

    def check_settings(self, **settings) -> None:
        """One error line unless the dataset was made with these manifest values (max_length,
        layout, ...), e.g. those of a training config."""
        for key, want in settings.items():
            have = self.manifest.get(key)
            if have != want:
                raise BertJaxError(
                    f"{self.path}: prepared with {key}={have!r}, not {want!r}; prepare the "
                    f"corpus with {key}={want!r} or train with {key}={have!r}"
                )

    def split(self, name: str) -> PreparedSplit:
        if name not in ("train", "eval"):
            raise BertJaxError(f"split {name!r}: expected train or eval")
        return PreparedSplit(self, name)


@dataclasses.dataclass(frozen=True)
class _FileInstruction:  # what grain's ArrayRecordDataSource reads: records [skip, skip+take)
    filename: str
    skip: int
    take: int
    examples_in_shard: int


class PreparedSplit:
    """Random access to the train or eval rows of a prepared dataset (a pipeline RowSource)."""

    def __init__(self, dataset: PreparedDataset, split: str):
        from grain.sources import ArrayRecordDataSource

        m = dataset.manifest
        self.dataset, self.split = dataset, split
        self.fingerprint = f"{dataset.fingerprint}:{split}"
        self._k = int(m["rows_per_record"])
        tok = m["tokenizer"]
        self._expand = (dataset.max_length, int(tok["cls_id"]), int(tok["sep_id"]))
        shards = [s for s in m["shards"] if s[f"{split}_rows"] > 0]
        self._files = [os.path.join(dataset.path, s["file"]) for s in shards]
        rows = np.array([s[f"{split}_rows"] for s in shards], np.int64)
        records = np.array([s[f"{split}_records"] for s in shards], np.int64)
        self._row_end = np.cumsum(rows)  # (shards,) rows up to and including each shard
        self._row_start = self._row_end - rows
        self._record_base = np.cumsum(records) - records
        self._source = None
        if shards:
            self._source = ArrayRecordDataSource(
                [
                    _FileInstruction(
                        f,
                        s["train_records"] if split == "eval" else 0,
                        s[f"{split}_records"],
                        s["train_records"] + s["eval_records"],
                    )
                    for f, s in zip(self._files, shards)
                ]
            )

    def __len__(self) -> int:
        return int(self._row_end[-1]) if len(self._row_end) else 0

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """ROW_KEYS arrays (+ next_sentence_label) of shape (len(index), max_length)."""
        index = np.asarray(index, np.int64)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise BertJaxError(f"row index outside 0..{len(self) - 1} of the {self.split} split")
        shard = np.searchsorted(self._row_end, index, side="right")
        local = index - self._row_start[shard]
        keys = self._record_base[shard] + local // self._k
        unique, inverse = np.unique(keys, return_inverse=True)
        records = self._read(unique)
        first = np.cumsum([0] + [len(r) for r in records])[:-1]
        rows = Rows.concat(records).select(first[inverse] + local % self._k)
        return rows.expand(*self._expand)

    def _read(self, keys: np.ndarray) -> list[Rows]:
        try:
            return [Rows.from_bytes(r) for r in self._source.__getitems__(keys.tolist())]
        except Exception as e:
            if isinstance(e, BertJaxError):
                raise
            raise self._read_error(keys, e) from None

    def _read_error(self, keys: np.ndarray, error: Exception) -> BertJaxError:
        """Name the shard that failed: read the keys again shard by shard."""
        base = self._record_base.tolist()
        for s in sorted({bisect.bisect_right(base, int(k)) - 1 for k in keys}):
            mine = [int(k) for k in keys if bisect.bisect_right(base, int(k)) - 1 == s]
            try:
                [Rows.from_bytes(r) for r in self._source.__getitems__(mine)]
            except Exception as e:
                error = e
                break
        else:
            s = 0
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        return BertJaxError(
            f"{self._files[s]}: unreadable record ({first}); the shard changed after prepare "
            "wrote it: prepare the corpus again"
        )


def _check_shard(root: str, shard: dict, verify: bool) -> None:
    path = os.path.join(root, shard["file"])
    if not os.path.isfile(path):
        raise BertJaxError(f"{path}: shard missing (manifest.json lists it)")
    size = os.path.getsize(path)
    if size != shard["bytes"]:
        what = "truncated" if size < shard["bytes"] else "altered"
        raise BertJaxError(
            f"{path}: shard {what} ({size} bytes, manifest.json says {shard['bytes']}); "
            "prepare the corpus again"
        )
    if verify and sha256_file(path) != shard["sha256"]:
        raise BertJaxError(
            f"{path}: shard altered (sha256 differs from manifest.json); prepare the corpus again"
        )


def _raise_open_file_limit(wanted: int) -> None:
    """ArrayRecord keeps a file open per shard read from; lift the soft limit towards `wanted`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
