"""Tests for inference.explain and inference.plotting: integrated-gradients completeness on the real
MiniLM, the decisive word of a tiny classifier trained so that one word sets the label, attention
rollout, NER entities, user errors, and the HTML / matplotlib views."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.inference.explain import (
    _path_points,
    _resolve_target,
    attention_rollout,
    explain,
    integrated_gradients,
)
from bert_jax.inference.plotting import attribution_figure, attribution_html
from bert_jax.model.config import BertConfig
from bert_jax.model.modeling import (
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from bert_jax.tokenizer import BertTokenizer

FILLER = (
    "the a cat dog sat ran on under blue red green house tree car book sun moon river old new "
    "big small quick slow"
).split()
DECISIVE = "excellent"
STEPS = 128  # one IG compilation shared by the tiny-model tests
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def synthetic(rng, n):
    """Sentences of 4-8 filler words; label 1 iff DECISIVE is inserted somewhere."""
    texts, labels = [], []
    for _ in range(n):
        words = list(rng.choice(FILLER, rng.integers(4, 9)))
        label = int(rng.random() < 0.5)
        if label:
            words.insert(int(rng.integers(0, len(words) + 1)), DECISIVE)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def tiny_config(tokenizer, labels):
    return BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label=tuple(labels),
    )


def relative_gap(r):
    return abs(r["delta"]) / abs(r["logit"] - r["baseline_logit"])


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return BertTokenizer.train(iter(FILLER + [DECISIVE]), vocab_size=120, min_frequency=1)


@pytest.fixture(scope="module")
def trained(tiny_tokenizer):
    """A 2-layer classifier trained (200 AdamW steps, label smoothing 0.1) to say "excellent"
    iff the word appears. Smoothing keeps the logits moderate: an unsmoothed, saturated toy
    model switches label within ~2% of the IG path, which needs ~1000 steps to integrate."""
    tok = tiny_tokenizer
    model = BertForSequenceClassification(tiny_config(tok, ("other", DECISIVE)), rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(3e-4, weight_decay=0.01), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, batch, labels):
        def loss_fn(model):
            target = optax.smooth_labels(jax.nn.one_hot(labels, 2), 0.1)
            return optax.softmax_cross_entropy(model(**batch), target).mean()

        grads = nnx.grad(loss_fn)(model)
        optimizer.update(model, grads)

    rng = np.random.default_rng(0)
    for _ in range(200):
        texts, labels = synthetic(rng, 32)
        enc = tok(texts, max_length=16, padding="max_length")
        batch = {k: jnp.asarray(enc[k]) for k in MODEL_INPUTS}
        train_step(model, optimizer, batch, jnp.asarray(labels))
    model.eval()
    texts, labels = synthetic(np.random.default_rng(1), 32)
    enc = tok(texts, max_length=16, padding="max_length")
    logits = model(**{k: jnp.asarray(enc[k]) for k in MODEL_INPUTS})
    assert (np.asarray(logits).argmax(-1) == labels).mean() >= 0.95
    return model, tok, texts, labels


@pytest.fixture(scope="module")
def minilm_classifier(minilm_dir):
    with pytest.warns(UserWarning, match="newly initialised"):
        model = BertForSequenceClassification.from_pretrained(
            minilm_dir, id2label=("neg", "pos"), seed=0
        )
    return model, BertTokenizer.from_pretrained(minilm_dir)


# --------------------------------------------------------------------------------------------------
# integrated gradients, sequence classification


def test_ig_completeness_on_minilm(minilm_classifier):
    model, tok = minilm_classifier
    # All pad to 16 tokens: one compilation.
    texts = [
        "I absolutely loved this film, it was excellent!",
        "Terrible service; we will never go back there again.",
        "The weather in Glasgow is grey today.",
    ]
    results = integrated_gradients(model, tok, texts, steps=64)
    for text, r in zip(texts, results):
        assert relative_gap(r) < 0.01, r  # measured <2e-4 at 64 steps, <5e-5 at 128
        assert r["method"] == "ig" and r["text"] == text
        assert r["label"] == ("neg", "pos")[r["target"]] and 0.5 <= r["score"] <= 1.0
        assert all(text[w["start"] : w["end"]] == w["word"] for w in r["words"])
        assert "[CLS]" not in [w["word"] for w in r["words"]]
    assert [w["word"] for w in results[1]["words"]] == [
        "Terrible",
        "service",
        ";",
        "we",
        "will",
        "never",
        "go",
        "back",
        "there",
        "again",
        ".",
    ]
    # An explicit target (by name) is explained even when it is not the prediction.
    other = "neg" if results[0]["label"] == "pos" else "pos"
    [r] = integrated_gradients(model, tok, texts[0], target=other, steps=64)
    assert r["label"] == other and r["score"] <= 0.5 and relative_gap(r) < 0.01
    json.dumps(results)


def test_decisive_word_gets_the_largest_attribution(trained):
    model, tok, texts, labels = trained
    positives = [t for t, y in zip(texts, labels) if y][:4]
    for baseline in ("pad", "zero"):
        # measured gaps at 128 steps: <1e-6 ("pad"), <2e-4 ("zero"); 64 steps leave up to 3%
        for r in integrated_gradients(model, tok, positives, steps=STEPS, baseline=baseline):
            assert r["label"] == DECISIVE and r["score"] > 0.9
            top = max(r["words"], key=lambda w: w["attribution"])
            assert top["word"] == DECISIVE, r["words"]
            assert relative_gap(r) < 0.01, r
            assert len(r["words"]) == len(r["text"].split())


def test_regression_head_explains_its_single_output(tiny_tokenizer):
    model = BertForSequenceClassification(tiny_config(tiny_tokenizer, ("score",)), rngs=nnx.Rngs(1))
    # batch_size 48: 128 points in 3 chunks of 43, one padding point of weight 0
    [r] = integrated_gradients(
        model, tiny_tokenizer, "the cat sat on the mat", steps=STEPS, batch_size=48
    )
    assert r["target"] == 0 and r["label"] is None
    assert r["score"] == pytest.approx(r["logit"], abs=1e-5)
    assert relative_gap(r) < 0.01


def test_path_points_are_an_even_trapezoid_rule():
    alphas, coef = _path_points(128, 48)
    assert alphas.shape == coef.shape == (3, 43)
    np.testing.assert_allclose(alphas.reshape(-1)[:128], np.linspace(0, 1, 128), atol=1e-7)
    assert coef.sum() == pytest.approx(1.0) and coef.reshape(-1)[128:].tolist() == [0.0]
    assert coef[0, 0] == pytest.approx(0.5 / 127) and coef[0, 1] == pytest.approx(1 / 127)
    assert _path_points(50, 64)[0].shape == (1, 50)


def test_targets_resolve_from_names_indices_and_cli_strings(tiny_tokenizer):
    config = tiny_config(tiny_tokenizer, ("neg", "pos"))
    assert [_resolve_target(config, t) for t in (None, "pos", 0, "1", np.int64(1))] == [
        None,
        1,
        0,
        1,
        1,
    ]
    assert _resolve_target(tiny_config(tiny_tokenizer, ()), "LABEL_1") == 1  # unnamed labels


# --------------------------------------------------------------------------------------------------
# attention rollout


def test_rollout_weights_words_non_negatively_and_ranks_the_decisive_word(trained):
    model, tok, texts, labels = trained
    positives = [t for t, y in zip(texts, labels) if y][:4]
    for r in attention_rollout(model, tok, positives):
        assert r["method"] == "rollout" and r["label"] == DECISIVE
        assert len(r["words"]) == len(r["text"].split())
        weights = np.array([w["attribution"] for w in r["words"]])
        assert (weights >= 0).all() and weights.sum() < 1.0
        top = max(r["words"], key=lambda w: w["attribution"])
        assert top["word"] == DECISIVE, r["words"]  # measured ~0.5 against <0.05 for fillers


# --------------------------------------------------------------------------------------------------
# token classification (NER)


def test_ner_entities_are_explained_one_by_one(tiny_tokenizer):
    tok = tiny_tokenizer
    model = BertForTokenClassification(
        tiny_config(tok, ("O", "B-GOOD", "I-GOOD")), rngs=nnx.Rngs(2)
    )
    text = "the excellents big cat"  # "excellents" is several sub-tokens
    assert len(tok([text])["input_ids"][0]) > 6
    # Bias every token to B-GOOD: one entity per word, each explained by its own logit.
    model.classifier.bias[...] = jnp.array([0.0, 10.0, 0.0])
    [r] = integrated_gradients(model, tok, text, steps=STEPS)
    assert [e["entity"] for e in r["entities"]] == text.split()
    for e in r["entities"]:
        assert e["label"] == "GOOD" and text[e["start"] : e["end"]] == e["entity"]
        assert len(e["words"]) == 4 and relative_gap(e) < 0.01
    # Bias to I-GOOD: a single entity over all words; its logit sums the words' first sub-tokens.
    model.classifier.bias[...] = jnp.array([0.0, 0.0, 10.0])
    [r] = integrated_gradients(model, tok, text, steps=STEPS)
    [e] = r["entities"]
    assert e["entity"] == text and relative_gap(e) < 0.01
    [r] = attention_rollout(model, tok, text)
    [e] = r["entities"]
    assert r["method"] == "rollout" and all(w["attribution"] >= 0 for w in e["words"])
    json.dumps(r)


# --------------------------------------------------------------------------------------------------
# the directory entry point and user errors


def test_explain_loads_a_classifier_directory(trained, tmp_path):
    model, tok, texts, _ = trained
    model.save_pretrained(tmp_path / "clf", tokenizer=tok)
    ig = explain(tmp_path / "clf", texts[:2], steps=STEPS)
    rollout = explain(tmp_path / "clf", texts[:2], method="rollout")
    assert [r["method"] for r in ig + rollout] == ["ig"] * 2 + ["rollout"] * 2
    direct = integrated_gradients(model, tok, texts[:2], steps=STEPS)
    for a, b in zip(ig, direct):
        assert a["label"] == b["label"]
        np.testing.assert_allclose(
            [w["attribution"] for w in a["words"]],
            [w["attribution"] for w in b["words"]],
            rtol=1e-4,
            atol=1e-6,
        )
    json.loads(json.dumps(ig + rollout))


def test_models_without_a_classification_head_are_refused(minilm_dir, tiny_tokenizer):
    message = (
        "explain needs a BertForSequenceClassification or BertForTokenClassification "
        "model, got BertModel"
    )
    with pytest.raises(BertJaxError) as e:
        explain(minilm_dir, ["hello"])
    assert str(e.value) == message
    encoder = BertModel(tiny_config(tiny_tokenizer, ()), rngs=nnx.Rngs(0))
    with pytest.raises(BertJaxError, match="got BertModel"):
        attention_rollout(encoder, tiny_tokenizer, ["hello"])


def test_bad_arguments_give_one_line_errors(tiny_tokenizer, tmp_path):
    model = BertForSequenceClassification(tiny_config(tiny_tokenizer, ("a", "b")), rngs=nnx.Rngs(0))
    cases = [
        (dict(target="c"), "target 'c' is not a label"),
        (dict(target=2), "out of range"),
        (dict(steps=1), "steps must be an integer >= 2"),
        (dict(baseline="mean"), "baseline must be one of"),
    ]
    for kwargs, match in cases:
        with pytest.raises(BertJaxError, match=match):
            integrated_gradients(model, tiny_tokenizer, ["the cat"], **kwargs)
    with pytest.raises(BertJaxError, match="text 1 is empty"):
        attention_rollout(model, tiny_tokenizer, ["the cat", " "])
    with pytest.raises(BertJaxError, match="method must be one of"):
        explain(tmp_path, ["the cat"], method="shap")
    with pytest.raises(BertJaxError, match="not a directory"):
        explain(tmp_path / "missing", ["the cat"])
    ner = BertForTokenClassification(tiny_config(tiny_tokenizer, ("O", "B-X")), rngs=nnx.Rngs(0))
    with pytest.raises(BertJaxError, match="NER explains each predicted entity"):
        integrated_gradients(ner, tiny_tokenizer, ["the cat"], target=1)


# --------------------------------------------------------------------------------------------------
# plotting


def test_html_view_shades_every_word(trained):
    model, tok, texts, labels = trained
    [r] = integrated_gradients(model, tok, [t for t, y in zip(texts, labels) if y][:1], steps=STEPS)
    page = attribution_html(r)
    assert page.count("background-color: rgba(") == len(r["words"])
    for w in r["words"]:
        assert f">{w['word']}</span>" in page
    assert f"label={DECISIVE}" in page
    # Text between words is kept and everything is escaped.
    handmade = {
        "text": "a <b> & c",
        "method": "ig",
        "words": [
            {"word": "a", "start": 0, "end": 1, "attribution": 0.5},
            {"word": "<b>", "start": 2, "end": 5, "attribution": -1.0},
            {"word": "c", "start": 8, "end": 9, "attribution": 0.0},
        ],
    }
    page = attribution_html(handmade)
    assert ">&lt;b&gt;</span> &amp; <span" in page and "<b>" not in page
    assert "rgba(204, 38, 38, 0.800)" in page  # the strongest (negative) word: full red
    with pytest.raises(BertJaxError, match="pass entity=<index>"):
        attribution_html({"text": "x", "entities": []})


def test_matplotlib_view_draws_the_words(trained):
    pytest.importorskip("matplotlib")
    model, tok, texts, labels = trained
    [r] = attention_rollout(model, tok, texts[:1])
    fig = attribution_figure(r)
    drawn = [t.get_text() for t in fig.texts]
    assert all(w["word"] in drawn for w in r["words"])
