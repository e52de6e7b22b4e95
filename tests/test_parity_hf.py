"""Parity with HF transformers (PyTorch) — the oracle — on real and random weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_jax.model.modeling import (  # noqa: E402
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from bert_jax.tasks.features import IGNORE_INDEX  # noqa: E402
from bert_jax.training import losses  # noqa: E402


def _encode(directory, texts):
    tok = transformers.BertTokenizerFast.from_pretrained(directory)
    return tok(texts, padding=True, truncation=True, max_length=512, return_tensors="np")


def _torch_inputs(enc):
    return {k: torch.tensor(v) for k, v in enc.items()}


def _jax_inputs(enc):
    return dict(
        input_ids=jnp.asarray(enc["input_ids"]),
        token_type_ids=jnp.asarray(enc["token_type_ids"]),
        attention_mask=jnp.asarray(enc["attention_mask"]),
    )


@pytest.fixture(scope="module")
def minilm_pair(minilm_dir):
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    ours = BertModel.from_pretrained(minilm_dir)
    ours.eval()
    return ref, ours


def test_real_weights_match_transformers_in_a_padded_batch(minilm_dir, minilm_pair, real_sentences):
    ref, ours = minilm_pair
    assert len(real_sentences) >= 16
    enc = _encode(minilm_dir, real_sentences)
    lengths = enc["attention_mask"].sum(1)
    assert lengths.max() > 4 * lengths.min()  # genuinely mixed lengths
    with torch.no_grad():
        expected = ref(**_torch_inputs(enc))
    out = ours(**_jax_inputs(enc))
    real = enc["attention_mask"].astype(bool)
    hidden_diff = np.abs(np.asarray(out.last_hidden_state) - expected.last_hidden_state.numpy())
    assert hidden_diff[real].max() <= 1e-4
    assert np.abs(np.asarray(out.pooler_output) - expected.pooler_output.numpy()).max() <= 1e-4

    # Each sentence alone gives what it gave inside the padded batch.
    for i in (0, 9, len(real_sentences) - 2, len(real_sentences) - 1):
        alone = _encode(minilm_dir, [real_sentences[i]])
        single = ours(**_jax_inputs(alone)).last_hidden_state[0]
        n = int(lengths[i])
        np.testing.assert_allclose(single, out.last_hidden_state[i, :n], atol=1e-4)


def test_bf16_compute_close_to_fp32(minilm_dir, minilm_pair, real_sentences):
    _, fp32 = minilm_pair
    bf16 = BertModel.from_pretrained(minilm_dir, dtype="bfloat16")
    bf16.eval()
    enc = _jax_inputs(_encode(minilm_dir, real_sentences[:8]))
    a = np.asarray(fp32(**enc).pooler_output)
    b = np.asarray(bf16(**enc).pooler_output, dtype=np.float32)
    assert bf16.embeddings.word.embedding[...].dtype == jnp.float32  # params stay fp32
    assert np.isfinite(b).all()
    assert np.abs(a - b).max() <= 3e-2


# ---- random-initialised HF heads -----------------------------------------------------------------

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)


def _batch(seed=0, batch=3, length=12):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, TINY["vocab_size"], (batch, length))
    mask = np.ones((batch, length), np.int64)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    types = np.zeros((batch, length), np.int64)
    types[:, 6:] = 1
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask)


def _mlm_labels(batch):
    ids = batch["input_ids"]
    positions = np.array([[1, 3, 7], [2, 4, 0], [1, 2, 3]])
    weights = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], np.float32)
    masked_ids = np.take_along_axis(ids, positions, 1)
    labels = np.full_like(ids, -100)
    for b in range(ids.shape[0]):
        for p, w in zip(positions[b], weights[b]):
            if w:
                labels[b, p] = ids[b, p]
    return positions, masked_ids, weights, labels


def _case(name):
    """(HF class, our class, config kwargs, HF extra inputs, our loss fn, HF logits getter)."""
    batch = _batch()
    positions, masked_ids, weights, mlm_labels = _mlm_labels(batch)
    gather = lambda t: torch.gather(
        t, 1, torch.tensor(positions)[..., None].expand(-1, -1, t.shape[-1])
    )
    nsp = np.array([0, 1, 1])
    if name == "mlm":
        return (
            transformers.BertForMaskedLM,
            BertForMaskedLM,
            {},
            dict(labels=mlm_labels),
            lambda m, x: losses.mlm_loss(m(**x, masked_positions=positions), masked_ids, weights),
            lambda out: gather(out.logits),
            lambda m, x: m(**x, masked_positions=positions),
        )
    if name == "pretraining":

        def loss(m, x):
            mlm, nsp_logits = m(**x, masked_positions=positions)
            return losses.mlm_loss(mlm, masked_ids, weights) + losses.classification_loss(
                nsp_logits, nsp
            )

        return (
            transformers.BertForPreTraining,
            BertForPreTraining,
            {},
            dict(labels=mlm_labels, next_sentence_label=nsp),
            loss,
            lambda out: torch.cat(
                [gather(out.prediction_logits).flatten(), out.seq_relationship_logits.flatten()]
            ),
            lambda m, x: jnp.concatenate([a.ravel() for a in m(**x, masked_positions=positions)]),
        )
    if name in ("classification", "regression"):
        num = 2 if name == "classification" else 1
        labels = np.array([0, 1, 1]) if num == 2 else np.array([0.5, -1.0, 2.0], np.float32)
        return (
            transformers.BertForSequenceClassification,
            BertForSequenceClassification,
            dict(num_labels=num),
            dict(labels=labels),
            lambda m, x: losses.classification_loss(m(**x), labels),
            lambda out: out.logits,
            lambda m, x: m(**x),
        )
    if name == "token":
        labels = np.random.default_rng(1).integers(0, 3, (3, 12))
        labels[batch["attention_mask"] == 0] = -100
        labels[:, 0] = -100
        return (
            transformers.BertForTokenClassification,
            BertForTokenClassification,
            dict(num_labels=3),
            dict(labels=labels),
            lambda m, x: losses.token_classification_loss(m(**x), labels),
            lambda out: out.logits,
            lambda m, x: m(**x),
        )
    if name == "qa":
        start, end = np.array([1, 2, 12]), np.array([3, 5, 12])  # third: answer outside the window
        return (
            transformers.BertForQuestionAnswering,
            BertForQuestionAnswering,
            {},
            dict(start_positions=start, end_positions=end),
            lambda m, x: losses.qa_loss(*m(**x), start, end),
            lambda out: torch.stack([out.start_logits, out.end_logits]),
            lambda m, x: jnp.stack(m(**x)),
        )
    raise ValueError(name)


HEAD_CASES = ["mlm", "pretraining", "classification", "regression", "token", "qa"]


def _grad_params(model):
    """(our path, HF key) of a few parameters to compare gradients on."""
    prefix = ("bert",)
    return [
        (
            prefix + ("embeddings", "word", "embedding"),
            "bert.embeddings.word_embeddings.weight",
            False,
        ),
        (
            prefix + ("layers", 0, "attention", "query", "kernel"),
            "bert.encoder.layer.0.attention.self.query.weight",
            True,
        ),
        (
            prefix + ("layers", 1, "mlp", "norm", "scale"),
            "bert.encoder.layer.1.output.LayerNorm.weight",
            False,
        ),
        (prefix + ("embeddings", "norm", "scale"), "bert.embeddings.LayerNorm.weight", False),
    ]


@pytest.mark.parametrize("name", HEAD_CASES)
def test_hf_checkpoint_loads_with_same_logits_losses_grads(tmp_path, name):
    hf_cls, our_cls, cfg_kw, hf_labels, our_loss, hf_logits, our_logits = _case(name)
    torch.manual_seed(0)
    config = transformers.BertConfig(**TINY, **cfg_kw)
    ref = hf_cls(config).eval()
    ref.save_pretrained(tmp_path)

    model = our_cls.from_pretrained(tmp_path)
    model.eval()
    batch = _batch()
    x = {k: jnp.asarray(v) for k, v in batch.items()}

    out = ref(**_torch_inputs(batch), **{k: torch.tensor(v) for k, v in hf_labels.items()})
    np.testing.assert_allclose(our_logits(model, x), hf_logits(out).detach().numpy(), atol=1e-4)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(p):
        return our_loss(nnx.merge(graphdef, p, rest), x)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    np.testing.assert_allclose(float(loss), out.loss.item(), rtol=1e-5)

    out.loss.backward()
    hf_params = dict(ref.named_parameters())
    flat_grads = dict(nnx.to_flat_state(grads))
    for path, key, transpose in _grad_params(model):
        g = np.asarray(flat_grads[path].get_value())
        g = g.T if transpose else g
        expected = hf_params[key].grad.numpy()
        rel = np.abs(g - expected).max() / np.abs(expected).max()
        assert rel <= 1e-4, (key, rel)


@pytest.mark.parametrize("name", HEAD_CASES)
def test_saved_model_loads_in_transformers(tmp_path, name):
    hf_cls, our_cls, cfg_kw, _, _, hf_logits, our_logits = _case(name)
    from bert_jax.model.config import BertConfig

    config = (
        BertConfig(**TINY).with_labels(cfg_kw["num_labels"])
        if "num_labels" in cfg_kw
        else BertConfig(**TINY)
    )
    model = our_cls(config, rngs=nnx.Rngs(3))
    model.eval()
    model.save_pretrained(tmp_path / "out")
    ref, info = hf_cls.from_pretrained(tmp_path / "out", output_loading_info=True)
    ref.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = _batch(seed=5)
    with torch.no_grad():
        out = ref(**_torch_inputs(batch))
    x = {k: jnp.asarray(v) for k, v in batch.items()}
    np.testing.assert_allclose(our_logits(model, x), hf_logits(out).numpy(), atol=1e-4)


def test_finetune_steps_match_the_transformers_adamw_recipe(tmp_path):
    """Six steps of our Trainer (the fine-tuning config's AdamW, weight-decay mask, global-norm
    clipping, linear warmup/decay) land on the same weights as torch.optim.AdamW +
    get_linear_schedule_with_warmup + clip_grad_norm_ from the same start, dropout off. Decay and
    rate are large so that a wrong mask, schedule step or clipping order shows."""
    from bert_jax.model.hf import read_weights
    from bert_jax.training.defaults import finetune_config
    from bert_jax.training.finetune import trainer_config
    from bert_jax.training.objectives import TokenClassificationObjective
    from bert_jax.training.trainer import Trainer

    steps, warmup = 6, 2
    torch.manual_seed(0)
    config = transformers.BertConfig(
        **TINY, num_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    ref = transformers.BertForTokenClassification(config)
    ref.save_pretrained(tmp_path / "start")
    start = {name: value.clone() for name, value in ref.state_dict().items()}

    cfg = finetune_config()
    cfg.optimizer.learning_rate, cfg.optimizer.weight_decay = 3e-3, 0.3
    cfg.optimizer.warmup_steps, cfg.optimizer.clip_norm = warmup, 0.5
    # eps 1e-4, not 1e-8: Adam divides by sqrt(v)+eps, so the rounding-level gradients of the key
    # biases (zero in exact arithmetic) would otherwise take full, sign-random steps on each side.
    cfg.optimizer.eps = 1e-4
    cfg.train.batch_size, cfg.train.steps = 3, steps
    model = BertForTokenClassification.from_pretrained(tmp_path / "start")
    settings = trainer_config(cfg, steps_per_epoch=steps)  # as `finetune` builds it
    trainer = Trainer(model, TokenClassificationObjective(), settings, str(tmp_path / "work"))
    state = trainer.restore_or_init(iter(()))

    o = cfg.optimizer
    no_decay = lambda n: "bias" in n or "LayerNorm" in n  # noqa: E731  (the usual HF recipe)
    named = list(ref.named_parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not no_decay(n)], "weight_decay": o.weight_decay},
            {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0},
        ],
        lr=o.learning_rate,
        betas=(o.b1, o.b2),
        eps=o.eps,
    )
    sched = transformers.get_linear_schedule_with_warmup(opt, warmup, steps)
    ref.train()
    grad_norms = []
    for step in range(steps):
        batch = _batch(seed=step)
        labels = np.random.default_rng(100 + step).integers(0, 5, batch["input_ids"].shape)
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        labels[:, 0] = IGNORE_INDEX  # [CLS]
        state, out = trainer.train_step(
            state, {**batch, "labels": labels, "weights": np.ones(3, np.float32)}
        )

        loss = ref(**_torch_inputs(batch), labels=torch.tensor(labels)).loss
        loss.backward()
        grad_norms.append(torch.nn.utils.clip_grad_norm_(ref.parameters(), o.clip_norm).item())
        opt.step()
        sched.step()
        opt.zero_grad()
        np.testing.assert_allclose(float(out["loss"]), loss.item(), rtol=1e-5)
    assert max(grad_norms) > o.clip_norm  # clipping was exercised

    trainer.export_model(state["params"]).save_pretrained(tmp_path / "ours")
    trainer.close()
    ours = read_weights(str(tmp_path / "ours"))
    still = []
    for name, expected in ref.state_dict().items():
        if name not in ours:
            continue  # buffers (position_ids)
        np.testing.assert_allclose(ours[name], expected.numpy(), atol=1e-5, err_msg=name)
        if np.abs(expected.numpy() - start[name].numpy()).max() < 1e-6:
            still.append(name)
    # Only the key biases get no gradient (softmax ignores a per-query constant).
    assert all(name.endswith("key.bias") for name in still), still
