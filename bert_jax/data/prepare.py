"""`bert-jax prepare`: a corpus -> a prepared dataset directory (bert_jax.data.shards), once.

The plan cuts the corpus into shards from input sizes alone (bert_jax.data.streams), so every
machine computes the same one. A shard is made from its input alone: documents are streamed in
blocks of ~`block_mb` of text (memory is bounded by a block, never by the corpus), each block's
documents are tokenized and laid out as packed rows or NSP pairs (the pair RNG is seeded by
(seed, shard, block, split)), and a document goes to the eval split when a hash of its text
falls below `eval_fraction` (no corpus-wide pass, and duplicates land on the same side). So
shards are byte-identical whatever the number of workers or machines, the Beam pipeline writes
the same bytes, and a killed run resumes: a shard is written under a temporary name, fsynced and
renamed, then its sidecar JSON marks it done; finished shards are skipped on a rerun.

`--shard I/N` (part=(I, N)) prepares shards I, I+N, I+2N, ...: N machines split the work with
no engine. Whichever run finds every shard done checks them (sizes, sha256) and writes
manifest.json; parts prepared on separate disks are combined by copying their files into one
directory and running `prepare` there once more.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import random
import sys
from collections.abc import Callable, Iterator

from bert_jax.data.packing import pack_tokens, pair_tokens, tokenize_documents
from bert_jax.data.rows import id_dtype_for
from bert_jax.data.shards import (
    FORMAT,
    VERSION,
    ShardWriter,
    rows_per_record,
    sha256_file,
    shard_name,
    sidecar_name,
    sweep_stale_temps,
    tokenizer_fingerprint,
)
from bert_jax.data.sources import corpus_inputs, read_piece
from bert_jax.data.streams import Piece, plan_shards
from bert_jax.errors import BertJaxError
from bert_jax.io import read_json, staged_dir, write_json
from bert_jax.tokenizer import BertTokenizer

MIB = 1 << 20
# Default plan: about this many shards of 2 .. 256 MiB of input each. ArrayRecord pads a file's
# data and footer to 64 KiB blocks (~96 KiB a file), so smaller shards would waste disk.
_AUTO_SHARDS = 256
_OWN = ("plan.json", "manifest.json", "tokenizer")


@dataclasses.dataclass(frozen=True)
class PrepareSettings:
    """Everything that decides the bytes `prepare` writes (with the tokenizer and the corpus)."""

    corpus: str
    max_length: int
    layout: str = "packed"  # packed | nsp
    eval_fraction: float = 0.0  # share of documents held out (by a hash of their text)
    seed: int = 0  # NSP pairing
    text_field: str = "text"  # JSONL / TFDS feature holding a document
    shard_mb: float = 0.0  # input per shard; 0 = total / 256 in 2..256 MiB (TFDS: >= 1024 docs)
    block_mb: float = 4.0  # text tokenized at once (and the pool NSP draws random B from)

    def check(self) -> None:
        if self.layout not in ("packed", "nsp"):
            raise BertJaxError(f"layout must be 'packed' or 'nsp', got {self.layout!r}")
        if not 3 <= self.max_length < 1 << 16:
            raise BertJaxError(f"max_length={self.max_length}: expected 3..65535")
        if not 0 <= self.eval_fraction < 1:
            raise BertJaxError(f"eval_fraction={self.eval_fraction}: expected 0 <= fraction < 1")
        if self.shard_mb < 0 or self.block_mb <= 0:
            raise BertJaxError("shard_mb must be >= 0 and block_mb > 0")


def make_plan(settings: PrepareSettings, tokenizer: BertTokenizer) -> dict:
    """The JSON-able plan: settings, tokenizer identity, record layout, each shard's pieces."""
    settings.check()
    inputs = corpus_inputs(settings.corpus)
    total = sum(p.stop - p.start for p in inputs)
    if inputs[0].kind == "tfds":
        target = max(1024, -(-total // _AUTO_SHARDS))  # examples
    elif settings.shard_mb:
        target = max(1, int(settings.shard_mb * MIB))
    else:
        target = min(256 * MIB, max(2 * MIB, total // _AUTO_SHARDS))
    vocab = tokenizer.vocab_size
    return {
        "format": FORMAT,
        "version": VERSION,
        "settings": dataclasses.asdict(settings),
        "tokenizer": {
            "fingerprint": tokenizer_fingerprint(tokenizer),
            "vocab_size": vocab,
            "cls_id": tokenizer.cls_id,
            "sep_id": tokenizer.sep_id,
        },
        "rows_per_record": rows_per_record(settings.max_length, vocab),
        "id_dtype": id_dtype_for(vocab).name,
        "shards": [[p.to_json() for p in shard] for shard in plan_shards(inputs, target)],
    }


def plan_sha256(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def start(out: str, plan: dict, tokenizer: BertTokenizer) -> None:
    """Make `out` hold this plan and its tokenizer; refuse a dir holding anything else."""
    os.makedirs(out, exist_ok=True)
    foreign = sorted(e for e in os.listdir(out) if not _ours(e))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise BertJaxError(f"{out}: holds files prepare did not write ({shown}); choose another")
    plan_path = os.path.join(out, "plan.json")
    if os.path.isfile(plan_path):
        _check_same_plan(out, read_json(plan_path), plan)
    else:
        write_json(plan_path, plan)
    if not os.path.isfile(os.path.join(out, "tokenizer", "tokenizer.json")):
        with staged_dir(os.path.join(out, "tokenizer")) as tmp:
            tokenizer.save_pretrained(tmp)
    sweep_stale_temps(out)


def shard_done(out: str, plan: dict, index: int) -> dict | None:
    """The shard's stats if it is complete (sidecar of this plan, file of the recorded size)."""
    n = len(plan["shards"])
    try:
        stats = read_json(os.path.join(out, sidecar_name(index, n)))
    except BertJaxError:
        return None  # absent, or half-written by a crashed machine: redo the shard
    path = os.path.join(out, shard_name(index, n))
    ok = stats.get("plan_sha256") == plan_sha256(plan) and os.path.isfile(path)
    return stats if ok and os.path.getsize(path) == stats.get("bytes") else None


def prepare_shard(out: str, index: int) -> dict:
    """Make shard `index` of the plan in `out` (the unit of work of every driver)."""
    plan, tokenizer = _load(out)
    settings = PrepareSettings(**plan["settings"])
    n = len(plan["shards"])
    writer = ShardWriter(
        os.path.join(out, shard_name(index, n)),
        rows_per_record=plan["rows_per_record"],
        id_dtype=plan["id_dtype"],
    )
    documents = 0
    try:
        pieces = [Piece(**p) for p in plan["shards"][index]]
        for block, (train, held) in enumerate(_blocks(pieces, settings)):
            documents += len(train) + len(held)
            for split, docs in (("train", train), ("eval", held)):
                if docs:
                    rng = random.Random(f"{settings.seed}/{index}/{block}/{split}")
                    writer.add(_rows(docs, tokenizer, settings, rng), split)
        stats = writer.close()
    except BaseException:
        writer.abort()
        raise
    stats = {"file": shard_name(index, n), "documents": documents, **stats}
    write_json(
        os.path.join(out, sidecar_name(index, n)), stats | {"plan_sha256": plan_sha256(plan)}
    )
    return stats


def finalize(out: str) -> dict:
    """Check every shard (size and sha256 against its sidecar) and write manifest.json."""
    plan = read_json(os.path.join(out, "plan.json"))
    n = len(plan["shards"])
    shards = []
    for i in range(n):
        stats = shard_done(out, plan, i)
        if stats is None:
            raise BertJaxError(f"{out}: shard {i} of {n} is not done; run prepare for its part")
        if sha256_file(os.path.join(out, stats["file"])) != stats["sha256"]:
            raise BertJaxError(
                f"{os.path.join(out, stats['file'])}: sha256 differs from its sidecar"
            )
        shards.append({k: v for k, v in stats.items() if k != "plan_sha256"})
    settings = plan["settings"]
    train_rows = sum(s["train_rows"] for s in shards)
    if train_rows == 0:
        raise BertJaxError(f"corpus is empty: {settings['corpus']} gave no training rows")
    tokens = sum(s["train_tokens"] for s in shards)
    size = sum(s["bytes"] for s in shards)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "layout": settings["layout"],
        "max_length": settings["max_length"],
        "tokenizer": plan["tokenizer"],
        "rows_per_record": plan["rows_per_record"],
        "id_dtype": plan["id_dtype"],
        "settings": settings,
        "totals": {
            "documents": sum(s["documents"] for s in shards),
            "train_rows": train_rows,
            "eval_rows": sum(s["eval_rows"] for s in shards),
            "train_tokens": tokens,
            "eval_tokens": sum(s["eval_tokens"] for s in shards),
            "real_token_fraction": round(tokens / (train_rows * settings["max_length"]), 6),
            "bytes": size,
            "bytes_per_token": round(
                size / max(1, tokens + sum(s["eval_tokens"] for s in shards)), 4
            ),
        },
        "shards": shards,
    }
    write_json(os.path.join(out, "manifest.json"), manifest)
    return manifest


def setup(corpus: str, tokenizer: BertTokenizer | str, out: str, **settings) -> dict:
    """Plan the corpus (`settings`: PrepareSettings fields) and make `out` hold the plan and the
    tokenizer; returns the plan. Every driver (local, per-process, Beam) starts here."""
    if not isinstance(tokenizer, BertTokenizer):
        tokenizer = BertTokenizer.from_pretrained(tokenizer)
    plan = make_plan(PrepareSettings(corpus=corpus, **settings), tokenizer)
    start(os.path.abspath(out), plan, tokenizer)
    return plan


def prepare(
    corpus: str,
    tokenizer: BertTokenizer | str,
    out: str,
    *,
    workers: int = 0,
    part: tuple[int, int] = (0, 1),
    progress: bool = True,
    finish: bool = True,
    **settings,
) -> dict:
    """Prepare part `part` = (I, N) of the corpus into `out` with `workers` processes (0: all
    cores); `settings` are PrepareSettings fields (max_length, layout, eval_fraction, seed,
    text_field, shard_mb, block_mb). Returns the manifest once every shard exists (with
    `finish`), else a status dict. A finished `out` with the same plan is returned as it is.
    Call it under `if __name__ == "__main__":` in a script: workers are spawned processes."""
    i, n = part
    if not 0 <= i < n:
        raise BertJaxError(f"--shard {i}/{n}: expected 0 <= I < N")
    out = os.path.abspath(out)
    plan = setup(corpus, tokenizer, out, **settings)
    if os.path.isfile(os.path.join(out, "manifest.json")):
        return read_json(os.path.join(out, "manifest.json"))
    total = len(plan["shards"])
    todo = [s for s in range(i, total, n) if shard_done(out, plan, s) is None]
    _run(out, todo, workers or os.cpu_count() or 1, progress)
    done = sum(shard_done(out, plan, s) is not None for s in range(total))
    if finish and done == total:
        return finalize(out)
    return {"out": out, "shards": total, "shards_done": done, "part": f"{i}/{n}"}


def training_documents(corpus: str, eval_fraction: float, text_field: str = "text"):
    """The documents `prepare` puts in the train split, streamed (e.g. to train a vocab on)."""
    for piece in corpus_inputs(corpus):
        for doc in read_piece(piece, text_field):
            if not _held_out(doc, eval_fraction):
                yield doc


def prepare_for_training(
    corpus: str,
    tokenizer: BertTokenizer,
    out: str,
    *,
    process: tuple[int, int] = (0, 1),
    barrier: Callable[[str], None] | None = None,
    workers: int = 0,
    progress: bool = True,
    **settings,
) -> str:
    """`prepare` run by every process of a job at once, each on its share of the shards
    (process p of n takes part p/n); `barrier(name)` waits for all of them. Cached: a finished
    `out` with the same plan is used as it is. Returns `out`."""
    p, n = process
    wait = barrier or (lambda name: None)
    if p == 0:  # the plan and tokenizer copy first, so no two processes write them at once
        setup(corpus, tokenizer, out, **settings)
    wait("bert_jax.data.prepare.start")
    run = dict(workers=workers, progress=progress, finish=False)
    prepare(corpus, tokenizer, out, part=(p, n), **run, **settings)
    wait("bert_jax.data.prepare.shards")
    if p == 0 and not os.path.isfile(os.path.join(out, "manifest.json")):
        finalize(out)
    wait("bert_jax.data.prepare.manifest")
    return out


# ---- internals ----------------------------------------------------------------------------------


def _run(out: str, todo: list[int], workers: int, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="shard", disable=not progress or not todo, file=sys.stderr)
    work = functools.partial(prepare_shard, out)
    with bar:
        if workers == 1 or len(todo) <= 1:
            _consume(map(work, todo), bar)
            return
        # spawn, not fork: the caller may hold JAX's threads (pretrain prepares in-process).
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(todo)), initializer=_worker_init) as pool:
            _consume(pool.imap_unordered(work, todo), bar)


def _consume(results, bar) -> None:
    tokens = 0
    for stats in results:
        tokens += stats["train_tokens"] + stats["eval_tokens"]
        bar.set_postfix_str(f"{tokens / max(bar.format_dict['elapsed'], 1e-9):,.0f} tokens/s")
        bar.update()


def _worker_init() -> None:
    """One core per worker (no tokenizers thread pool), and die with the parent."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: orphaned workers finish their shard and exit
        pass


@functools.lru_cache(maxsize=4)
def _load(out: str) -> tuple[dict, BertTokenizer]:
    plan = read_json(os.path.join(out, "plan.json"))
    tokenizer = BertTokenizer.from_pretrained(os.path.join(out, "tokenizer"))
    if tokenizer_fingerprint(tokenizer) != plan["tokenizer"]["fingerprint"]:
        raise BertJaxError(f"{out}/tokenizer: differs from the tokenizer in plan.json")
    return plan, tokenizer


def _blocks(pieces: list[Piece], s: PrepareSettings) -> Iterator[tuple[list, list]]:
    """(train documents, held-out documents) per ~block_mb of text."""
    limit = int(s.block_mb * MIB)
    train, held, size = [], [], 0
    for piece in pieces:
        for doc in read_piece(piece, s.text_field):
            (held if _held_out(doc, s.eval_fraction) else train).append(doc)
            size += sum(len(line) + 1 for line in doc)
            if size >= limit:
                yield train, held
                train, held, size = [], [], 0
    if train or held:
        yield train, held


def _held_out(doc: list[str], fraction: float) -> bool:
    if fraction <= 0:
        return False
    digest = hashlib.blake2b("\n".join(doc).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2.0**64


def _rows(docs, tokenizer, s: PrepareSettings, rng: random.Random):
    tok = tokenize_documents(docs, tokenizer)
    if s.layout == "nsp":
        if len(tok.ids) == 0:  # pair_tokens refuses a block without a single token
            return pack_tokens(tok, s.max_length)  # (no rows, as NSP-less Rows)
        return pair_tokens(tok, s.max_length, rng)
    return pack_tokens(tok, s.max_length)


def _ours(entry: str) -> bool:
    return (
        entry in _OWN
        or entry.startswith(".tmp-")
        or (entry.startswith("shard-") and entry.endswith((".arrayrecord", ".json")))
    )


def _check_same_plan(out: str, old: dict, new: dict) -> None:
    if old == new:
        return
    for key in ("settings", "tokenizer", "rows_per_record"):
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            if not isinstance(a, dict) or not isinstance(b, dict):
                a, b = {key: a}, {key: b}
            diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in b if a.get(k) != b.get(k)]
            raise BertJaxError(
                f"{out}: prepared with other {key} ({'; '.join(diff) or 'format'}); "
                "choose a new directory"
            )
    raise BertJaxError(f"{out}: the corpus changed since it was planned (file sizes differ)")
