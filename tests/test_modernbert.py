"""ModernBERT against transformers' ModernBert* (PyTorch, eager attention) on random small weights:
outputs, losses and gradients, both directions of the file format, packed rows, predict."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.model import load_model, model_class_for
from bert_jax.model.modernbert import (
    ModernBertForMaskedLM,
    ModernBertForQuestionAnswering,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
    ModernBertModel,
)
from bert_jax.model.modernbert_config import GLOBAL, LOCAL, ModernBertConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# 4 layers: 0 and 3 global, 1 and 2 sliding-window (half window 4); rows of 26 tokens exceed it.
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=64,
    local_attention=8,
    global_attn_every_n_layers=3,
    global_rope_theta=1000.0,  # small thetas so rotary angles vary a lot over 26 positions
    local_rope_theta=50.0,
    pad_token_id=0,
)
LENGTH = 26


def _hf_config(**changes):
    kw = {**TINY, **changes}
    rope = {
        GLOBAL: {"rope_type": "default", "rope_theta": kw.pop("global_rope_theta")},
        LOCAL: {"rope_type": "default", "rope_theta": kw.pop("local_rope_theta")},
    }
    return transformers.ModernBertConfig(
        **kw, rope_parameters=rope, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3
    )


def _batch(seed=0, pad_from=(19, 6)):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, TINY["vocab_size"], (3, LENGTH))
    mask = np.ones((3, LENGTH), np.int64)
    mask[1, pad_from[0] :] = 0
    mask[2, pad_from[1] :] = 0
    return dict(input_ids=ids, attention_mask=mask)


def _our_config(**changes) -> ModernBertConfig:
    kw = {k: v for k, v in TINY.items() if k != "global_attn_every_n_layers"}
    return ModernBertConfig(**{**kw, **changes})


def _torch(batch):
    return {k: torch.tensor(v) for k, v in batch.items()}


# The bare encoder's loss: a fixed projection of the (normalised) hidden states, squared.
PROJECTION = np.random.default_rng(7).normal(size=(TINY["hidden_size"], 5)).astype(np.float32)
POSITIONS = np.array([[1, 9, 20], [2, 15, 0], [1, 3, 4]])
MASKED_WEIGHTS = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], np.float32)


def _case(name):
    """(HF class, our class, HF config changes, HF label kwargs, our loss, HF outputs → array,
    our outputs → array), all arrays restricted to real tokens where per token."""
    from bert_jax.training import losses

    # QA scores every position, pads included. A pad query more than half a window away from
    # any real token has no key in a sliding-window layer; its softmax is uniform either way,
    # but HF's additive mask passes gradients through to its query and key while ours (a
    # select) passes none — so QA rows pad at most 4 tokens (the half window).
    batch = _batch(pad_from=(23, 22) if name == "qa" else (19, 6))
    real = batch["attention_mask"].astype(bool)
    if name == "model":
        return (
            transformers.ModernBertModel,
            ModernBertModel,
            {},
            {},
            lambda m, x: jnp.mean((m(**x).last_hidden_state[real] @ PROJECTION) ** 2),
            lambda out: out.last_hidden_state.detach().numpy()[real],
            lambda m, x: np.asarray(m(**x).last_hidden_state)[real],
        )
    if name == "mlm":
        ids = batch["input_ids"]
        labels = np.full_like(ids, -100)
        for b in range(3):
            for p, w in zip(POSITIONS[b], MASKED_WEIGHTS[b]):
                labels[b, p] = ids[b, p] if w else -100
        masked_ids = np.take_along_axis(ids, POSITIONS, 1)
        return (
            transformers.ModernBertForMaskedLM,
            ModernBertForMaskedLM,
            {},
            dict(labels=labels),
            lambda m, x: losses.mlm_loss(
                m(**x, masked_positions=POSITIONS), masked_ids, MASKED_WEIGHTS
            ),
            lambda out: out.logits.detach().numpy()[real],
            lambda m, x: np.asarray(m(**x))[real],
        )
    if name in ("classification_cls", "classification_mean", "regression"):
        num = 1 if name == "regression" else 3
        labels = np.array([0.5, -1.0, 2.0], np.float32) if num == 1 else np.array([0, 2, 1])
        pooling = "mean" if name == "classification_mean" else "cls"
        return (
            transformers.ModernBertForSequenceClassification,
            ModernBertForSequenceClassification,
            dict(num_labels=num, classifier_pooling=pooling),
            dict(labels=labels),
            lambda m, x: losses.classification_loss(m(**x), labels),
            lambda out: out.logits.detach().numpy(),
            lambda m, x: np.asarray(m(**x)),
        )
    if name == "token":
        labels = np.random.default_rng(1).integers(0, 3, (3, LENGTH))
        labels[~real] = -100
        return (
            transformers.ModernBertForTokenClassification,
            ModernBertForTokenClassification,
            dict(num_labels=3),
            dict(labels=labels),
            lambda m, x: losses.token_classification_loss(m(**x), labels),
            lambda out: out.logits.detach().numpy()[real],
            lambda m, x: np.asarray(m(**x))[real],
        )
    if name == "qa":
        start, end = np.array([1, 2, 3]), np.array([3, 12, 5])
        return (
            transformers.ModernBertForQuestionAnswering,
            ModernBertForQuestionAnswering,
            {},
            dict(start_positions=start, end_positions=end),
            lambda m, x: losses.qa_loss(*m(**x), start, end),
            lambda out: np.stack(
                [out.start_logits.detach().numpy(), out.end_logits.detach().numpy()]
            )[:, real],
            lambda m, x: np.stack([np.asarray(t) for t in m(**x)])[:, real],
        )
    raise ValueError(name)


CASES = ["model", "mlm", "classification_cls", "classification_mean", "regression", "token", "qa"]
# (our path without the leading "bert" for the bare encoder, HF key, transposed?)
GRAD_TENSORS = [
    (("embeddings", "tok_embeddings", "embedding"), "embeddings.tok_embeddings.weight", False),
    (("layers", 0, "attn", "Wqkv", "kernel"), "layers.0.attn.Wqkv.weight", True),
    (("layers", 1, "attn_norm", "scale"), "layers.1.attn_norm.weight", False),  # local layer
    (("layers", 2, "mlp", "Wi", "kernel"), "layers.2.mlp.Wi.weight", True),  # local layer
    (("layers", 3, "attn", "Wo", "kernel"), "layers.3.attn.Wo.weight", True),  # global layer
    (("final_norm", "scale"), "final_norm.weight", False),
]


@pytest.mark.parametrize("name", CASES)
def test_transformers_checkpoint_gives_same_outputs_losses_and_gradients(tmp_path, name):
    hf_cls, our_cls, changes, hf_labels, our_loss, hf_out, our_out = _case(name)
    torch.manual_seed(0)
    ref = hf_cls(_hf_config(attn_implementation="eager", **changes)).eval()
    ref.save_pretrained(tmp_path)
    model = our_cls.from_pretrained(tmp_path)
    model.eval()
    batch = _batch(pad_from=(23, 22) if name == "qa" else (19, 6))
    x = {k: jnp.asarray(v) for k, v in batch.items()}

    out = ref(**_torch(batch), **{k: torch.tensor(v) for k, v in hf_labels.items()})
    np.testing.assert_allclose(our_out(model, x), hf_out(out), atol=1e-4)
    if name == "model":  # a loss of our own making on both sides
        real = torch.tensor(batch["attention_mask"].astype(bool))
        hf_loss = ((out.last_hidden_state[real] @ torch.tensor(PROJECTION)) ** 2).mean()
    else:
        hf_loss = out.loss

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss_fn = lambda p: our_loss(nnx.merge(graphdef, p, rest), x)  # noqa: E731
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)  # one compile, not op by op
    np.testing.assert_allclose(float(loss), hf_loss.item(), rtol=1e-5)
    hf_loss.backward()
    hf_params = dict(ref.named_parameters())
    flat = dict(nnx.to_flat_state(grads))
    prefix, hf_prefix = ((), "") if name == "model" else (("bert",), "model.")
    for path, key, transpose in GRAD_TENSORS:
        g = np.asarray(flat[prefix + path].get_value())
        expected = hf_params[hf_prefix + key].grad.numpy()
        rel = np.abs((g.T if transpose else g) - expected).max() / np.abs(expected).max()
        assert rel <= 1e-4, (key, rel)


@pytest.mark.parametrize("name", CASES)
def test_saved_model_loads_in_transformers_with_same_outputs(tmp_path, name):
    hf_cls, our_cls, changes, _, _, hf_out, our_out = _case(name)
    config = _our_config(classifier_pooling=changes.get("classifier_pooling", "cls"))
    if "num_labels" in changes:
        config = config.with_labels(changes["num_labels"])
    model = our_cls(config, rngs=nnx.Rngs(3))
    model.eval()
    model.save_pretrained(tmp_path / "out")
    ref, info = hf_cls.from_pretrained(
        tmp_path / "out", output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert ref.config.layer_types == [GLOBAL, LOCAL, LOCAL, GLOBAL]
    batch = _batch(seed=5)
    with torch.no_grad():
        out = ref.eval()(**_torch(batch))
    x = {k: jnp.asarray(v) for k, v in batch.items()}
    np.testing.assert_allclose(our_out(model, x), hf_out(out), atol=1e-4)
    # ... and loads back here unchanged (the class picked from config.json).
    assert model_class_for(str(tmp_path / "out")) is our_cls
    again = load_model(str(tmp_path / "out"))
    again.eval()
    np.testing.assert_array_equal(our_out(again, x), our_out(model, x))


def test_sliding_window_layers_are_exercised(tmp_path):
    """The same weights with a window wider than the rows give different outputs past the
    window, so the parity above holds only with the window applied."""
    torch.manual_seed(0)
    transformers.ModernBertModel(_hf_config()).save_pretrained(tmp_path)
    windowed = ModernBertModel.from_pretrained(tmp_path)
    everywhere = ModernBertModel.from_pretrained(tmp_path, local_attention=2 * LENGTH)
    x = {k: jnp.asarray(v) for k, v in _batch(pad_from=(19, 5)).items()}
    a, b = windowed(**x).last_hidden_state, everywhere(**x).last_hidden_state
    assert np.abs(np.asarray(a - b)[0]).max() > 1e-3  # row 0: 26 real tokens, 4 each side
    np.testing.assert_allclose(a[2, :5], b[2, :5], atol=1e-5)  # row 2: 5 tokens, all in reach


def test_packed_row_equals_its_documents_run_alone():
    model = ModernBertForTokenClassification(_our_config().with_labels(3), rngs=nnx.Rngs(0))
    model.eval()
    rng = np.random.default_rng(2)
    first, second = rng.integers(5, 99, 17), rng.integers(5, 99, 13)  # both exceed the window
    ids = np.zeros((1, 32), np.int32)
    ids[0, :17], ids[0, 17:30] = first, second
    segments = np.zeros((1, 32), np.int32)
    segments[0, :17], segments[0, 17:30] = 1, 2
    forward = nnx.jit(lambda m, ids, segments=None: m(ids, segment_ids=segments))
    packed = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(segments)))
    alone_1 = np.asarray(forward(model, jnp.asarray(first[None])))
    alone_2 = np.asarray(forward(model, jnp.asarray(second[None])))
    np.testing.assert_allclose(packed[0, :17], alone_1[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 17:30], alone_2[0], atol=1e-5)


def test_config_reads_both_transformers_spellings_and_refuses_what_it_cannot_run(tmp_path):
    v4 = dict(
        model_type="modernbert",
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=5,
        num_attention_heads=4,
        global_attn_every_n_layers=2,
        global_rope_theta=123.0,
        local_rope_theta=7.0,
        reference_compile=False,
    )
    c = ModernBertConfig.from_hf_dict(v4)
    assert c.layer_types == (GLOBAL, LOCAL, GLOBAL, LOCAL, GLOBAL)
    assert (c.global_rope_theta, c.local_rope_theta) == (123.0, 7.0)
    written = c.to_hf_dict(["ModernBertModel"])
    assert written["reference_compile"] is False and written["global_attn_every_n_layers"] == 2
    assert ModernBertConfig.from_hf_dict(written) == c
    bad = {**v4, "rope_parameters": {GLOBAL: {"rope_type": "yarn", "factor": 2.0}}}
    with pytest.raises(BertJaxError, match="rope_type 'yarn' is not supported"):
        ModernBertConfig.from_hf_dict(bad)
    (tmp_path / "config.json").write_text(json.dumps({**v4, "classifier_pooling": "max"}))
    with pytest.raises(BertJaxError, match=r"config.json: config: classifier_pooling"):
        ModernBertModel.from_pretrained(tmp_path)


def test_predict_on_a_modernbert_classifier_directory(tmp_path):
    from bert_jax.inference.predict import Predictor
    from bert_jax.tokenizer import BertTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\nwhat a lovely day it is\n" * 20)
    tokenizer = BertTokenizer.train([str(corpus)], vocab_size=60, min_frequency=1)
    config = _our_config(vocab_size=tokenizer.vocab_size).with_labels(["neg", "pos"])
    model = ModernBertForSequenceClassification(config, rngs=nnx.Rngs(0))
    model.save_pretrained(tmp_path / "model", tokenizer=tokenizer)

    predictor = Predictor.from_pretrained(tmp_path / "model")
    texts = ["what a lovely day", "the cat sat on the mat " * 4]  # the second exceeds the window
    results = predictor.predict(texts)
    ids = tokenizer([texts[1]])["input_ids"]  # (1, L)
    assert ids.shape[1] > config.local_attention
    model.eval()
    logits = model(jnp.asarray(ids))
    expected = np.asarray(jax.nn.softmax(logits[0]))
    assert results[1]["label"] == ["neg", "pos"][int(expected.argmax())]
    np.testing.assert_allclose(
        [results[1]["scores"]["neg"], results[1]["scores"]["pos"]], expected, atol=1e-5
    )


def test_untied_decoder_is_read_and_written(tmp_path):
    """tie_word_embeddings=False: the decoder has its own weight, stored as decoder.weight."""
    torch.manual_seed(0)
    ref = transformers.ModernBertForMaskedLM(
        _hf_config(attn_implementation="eager", tie_word_embeddings=False)
    ).eval()
    with torch.no_grad():
        ref.decoder.weight.normal_(std=0.05)  # unlike the token embeddings
    ref.save_pretrained(tmp_path / "hf")
    model = ModernBertForMaskedLM.from_pretrained(tmp_path / "hf")
    model.eval()
    batch = _batch()
    with torch.no_grad():
        expected = ref(**_torch(batch)).logits.numpy()
    x = {k: jnp.asarray(v) for k, v in batch.items()}
    np.testing.assert_allclose(np.asarray(model(**x)), expected, atol=1e-4)
    model.save_pretrained(tmp_path / "ours")
    back, info = transformers.ModernBertForMaskedLM.from_pretrained(
        tmp_path / "ours", output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        np.testing.assert_allclose(back.eval()(**_torch(batch)).logits.numpy(), expected, atol=1e-5)
