"""Model behaviour on its own: attention paths, packed segments, HF format I/O, bad input."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.model.attention import (
    attention_mask_2d,
    dot_product_attention,
    positions_from_segments,
)
from bert_jax.model.config import BertConfig
from bert_jax.model.modeling import BertForMaskedLM, BertForSequenceClassification, BertModel

TINY = BertConfig.tiny(vocab_size=120, max_position_embeddings=64)


def test_presets_follow_google_sizes():
    sizes = {
        n: getattr(BertConfig, n)() for n in ("tiny", "mini", "small", "medium", "base", "large")
    }
    assert [(c.num_hidden_layers, c.hidden_size) for c in sizes.values()] == [
        (2, 128),
        (4, 256),
        (4, 512),
        (8, 512),
        (12, 768),
        (24, 1024),
    ]
    assert sizes["base"].num_attention_heads == 12 and sizes["large"].intermediate_size == 4096


def test_config_json_round_trip_keeps_labels_and_unknown_fields(tmp_path):
    config = TINY.with_labels(["neg", "pos"]).replace(extra=(("custom_field", [1, 2]),))
    path = tmp_path / "config.json"
    config.to_json_file(path, ["BertForSequenceClassification"])
    raw = json.loads(path.read_text())
    assert raw["id2label"] == {"0": "neg", "1": "pos"} and raw["label2id"] == {"neg": 0, "pos": 1}
    back = BertConfig.from_json_file(path)
    assert back == config and back.extra == (("custom_field", [1, 2]),)


def test_fused_and_einsum_attention_agree():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 10, 4, 8)), jnp.float32) for _ in range(3))
    mask = attention_mask_2d(
        jnp.asarray([[1] * 10, [1] * 6 + [0] * 4]),
        jnp.asarray([[1] * 5 + [2] * 5, [1] * 3 + [2] * 3 + [0] * 4]),
    )
    fused, none = dot_product_attention(q, k, v, mask)
    explicit, probs = dot_product_attention(q, k, v, mask, return_probs=True)
    assert none is None and probs.shape == (2, 4, 10, 10)
    np.testing.assert_allclose(fused, explicit, atol=1e-5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert float(probs[0, :, 0, 5:].max()) == 0.0  # segment 1 never sees segment 2


def test_output_attentions_and_hidden_states():
    model = BertModel(TINY, rngs=nnx.Rngs(0))
    model.eval()
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 120, (2, 9)))
    out = model(ids, output_hidden_states=True, output_attentions=True)
    plain = model(ids)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (2, 2, 9, 9)
    np.testing.assert_allclose(out.last_hidden_state, plain.last_hidden_state, atol=1e-5)


def test_positions_restart_per_segment():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0]])
    assert positions_from_segments(seg).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]


def test_packed_segment_is_isolated_from_its_neighbour():
    model = BertModel(TINY, rngs=nnx.Rngs(0))
    model.eval()
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 120, (1, 16))
    seg = np.array([[1] * 7 + [2] * 6 + [0] * 3])
    other = ids.copy()
    other[0, 7:13] = rng.integers(5, 120, 6)  # new tokens in segment 2
    run = lambda x: np.asarray(
        model(jnp.asarray(x), segment_ids=jnp.asarray(seg)).last_hidden_state
    )
    a, b = run(ids), run(other)
    np.testing.assert_array_equal(a[0, :7], b[0, :7])  # bit-for-bit
    assert np.abs(a[0, 7:13] - b[0, 7:13]).max() > 1e-3
    # And segment 1 inside the packed row equals segment 1 alone.
    alone = np.asarray(model(jnp.asarray(ids[:, :7])).last_hidden_state)
    np.testing.assert_allclose(a[0, :7], alone[0], atol=1e-5)


def test_dropout_on_in_train_off_in_eval():
    model = BertForSequenceClassification(TINY, rngs=nnx.Rngs(0))
    ids = jnp.ones((2, 8), jnp.int32)
    model.train()
    assert np.abs(np.asarray(model(ids)) - np.asarray(model(ids))).max() > 0
    model.eval()
    np.testing.assert_array_equal(model(ids), model(ids))


def test_mlm_head_at_positions_equals_full_logits_gathered():
    model = BertForMaskedLM(TINY, rngs=nnx.Rngs(0))
    model.eval()
    ids = jnp.asarray(np.random.default_rng(2).integers(5, 120, (2, 12)))
    positions = jnp.asarray([[1, 4, 9], [0, 2, 11]])
    full = model(ids)
    at = model(ids, masked_positions=positions)
    assert full.shape == (2, 12, 120) and at.shape == (2, 3, 120)
    np.testing.assert_allclose(
        at, np.take_along_axis(np.asarray(full), np.asarray(positions)[..., None], 1), atol=1e-5
    )


# ---- HF format ---------------------------------------------------------------------------------


def test_convert_round_trip_is_bit_identical(minilm_dir, tmp_path):
    from safetensors.numpy import load_file

    from bert_jax.model import convert
    from bert_jax.tokenizer import BertTokenizer

    convert(minilm_dir, tmp_path / "a", BertTokenizer.from_pretrained(minilm_dir))
    convert(tmp_path / "a", tmp_path / "b", BertTokenizer.from_pretrained(tmp_path / "a"))
    source = load_file(os.path.join(minilm_dir, "model.safetensors"))
    for out in ("a", "b"):
        written = load_file(tmp_path / out / "model.safetensors")
        assert set(written) == set(source)
        for key, value in source.items():
            assert written[key].dtype == value.dtype
            np.testing.assert_array_equal(written[key], value, err_msg=key)
    assert os.path.isfile(tmp_path / "b" / "tokenizer.json")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_reads_pytorch_bin_and_legacy_names(minilm_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    tensors = load_file(os.path.join(minilm_dir, "model.safetensors"))
    legacy = {}
    for key, value in tensors.items():
        key = "bert." + key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        )
        legacy[key] = torch.from_numpy(value.copy())
    (tmp_path / "m").mkdir()
    torch.save(legacy, tmp_path / "m" / "pytorch_model.bin")
    shutil.copy(os.path.join(minilm_dir, "config.json"), tmp_path / "m")
    a = BertModel.from_pretrained(minilm_dir)
    b = BertModel.from_pretrained(tmp_path / "m")
    for (pa, va), (pb, vb) in zip(
        nnx.to_flat_state(nnx.state(a, nnx.Param)), nnx.to_flat_state(nnx.state(b, nnx.Param))
    ):
        assert pa == pb
        np.testing.assert_array_equal(va.get_value(), vb.get_value())


def test_sharded_safetensors_index(minilm_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(os.path.join(minilm_dir, "model.safetensors"))
    keys = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    d = tmp_path / "sharded"
    d.mkdir()
    for name, ks in shards.items():
        save_file({k: tensors[k] for k in ks}, d / name, metadata={"format": "pt"})
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: n for n, ks in shards.items() for k in ks}})
    )
    shutil.copy(os.path.join(minilm_dir, "config.json"), d)
    model = BertModel.from_pretrained(d)
    np.testing.assert_array_equal(
        model.embeddings.word.embedding[...], tensors["embeddings.word_embeddings.weight"]
    )


def test_missing_head_weights_warn_once_naming_them(minilm_dir):
    with pytest.warns(UserWarning, match=r"newly initialised.*classifier\.weight") as record:
        BertForSequenceClassification.from_pretrained(minilm_dir, id2label=("a", "b", "c"))
    assert len([w for w in record if "newly initialised" in str(w.message)]) == 1


def test_a_new_head_starts_as_a_fresh_model_with_the_same_seed_would(minilm_dir):
    # from_pretrained builds the model abstractly and initialises only what the checkpoint
    # lacks: those values must be the ones a concrete build with that seed draws.
    labels = ("a", "b", "c")
    with pytest.warns(UserWarning, match="newly initialised"):
        loaded = BertForSequenceClassification.from_pretrained(minilm_dir, seed=7, id2label=labels)
    fresh = BertForSequenceClassification(loaded.config, rngs=nnx.Rngs(7))
    # (to rounding: one compiled program draws them rather than op-by-op execution)
    np.testing.assert_allclose(loaded.classifier.kernel[...], fresh.classifier.kernel[...], 1e-5)
    np.testing.assert_array_equal(loaded.classifier.bias[...], fresh.classifier.bias[...])
    leaves = jax.tree.leaves(nnx.state(loaded))
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)  # nothing left abstract
    # ...and dropout draws (RNG streams are initialised too) work in training mode.
    loaded.train()
    ids = jnp.ones((2, 8), jnp.int32)
    assert np.abs(np.asarray(loaded(ids)) - np.asarray(loaded(ids))).max() > 0


def test_bad_model_directories_give_one_clear_error(minilm_dir, tmp_path):
    with pytest.raises(BertJaxError, match="config.json"):
        BertModel.from_pretrained(tmp_path)
    d = tmp_path / "noweights"
    d.mkdir()
    shutil.copy(os.path.join(minilm_dir, "config.json"), d)
    with pytest.raises(BertJaxError, match="no weights found"):
        BertModel.from_pretrained(d)
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    with pytest.raises(BertJaxError, match="not a valid safetensors"):
        BertModel.from_pretrained(d)
    m = tmp_path / "mismatch"
    shutil.copytree(minilm_dir, m)
    cfg = json.loads((m / "config.json").read_text())
    cfg["intermediate_size"] = 1000
    (m / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        BertJaxError, match=r"intermediate\.dense\.(weight|bias) has shape \(1536.*expects \(1000"
    ):
        BertModel.from_pretrained(m)


def test_bf16_matmul_backward_matches_autodiff():
    from bert_jax.model.precision import matmul

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 5, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(16, 8)), jnp.bfloat16)
    f_fast = lambda x, w: jnp.sum(matmul(x, w).astype(jnp.float32) ** 2)
    f_ref = lambda x, w: jnp.sum(
        jnp.einsum("...i,io->...o", x.astype(jnp.float32), w.astype(jnp.float32)) ** 2
    )
    for fast, ref in zip(jax.grad(f_fast, (0, 1))(x, w), jax.grad(f_ref, (0, 1))(x, w)):
        assert fast.dtype == jnp.bfloat16
        rel = (
            np.abs(np.asarray(fast, np.float32) - np.asarray(ref)).max()
            / np.abs(np.asarray(ref)).max()
        )
        assert rel < 2e-2, rel


def test_bf16_model_gradients_close_to_fp32():
    from bert_jax.training import losses

    ids = jnp.asarray(np.random.default_rng(3).integers(5, 120, (2, 12)))
    positions, targets = jnp.asarray([[1, 5], [2, 7]]), jnp.asarray([[7, 9], [11, 13]])
    grads = {}
    for dtype in ("float32", "bfloat16"):
        model = BertForMaskedLM(TINY.replace(dtype=dtype), rngs=nnx.Rngs(0))
        model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p, graphdef=graphdef, rest=rest):
            logits = nnx.merge(graphdef, p, rest)(ids, masked_positions=positions)
            return losses.mlm_loss(logits, targets, jnp.ones((2, 2)))

        grads[dtype] = dict(nnx.to_flat_state(jax.grad(loss)(params)))
    for path, g32 in grads["float32"].items():
        g16 = grads["bfloat16"][path]
        a, b = np.asarray(g32.get_value()), np.asarray(g16.get_value())
        assert b.dtype == np.float32 and np.isfinite(b).all()  # grads land in the fp32 params
        assert np.abs(a - b).max() <= 0.1 * np.abs(a).max() + 1e-6, path


def test_bf16_embedding_gradients_are_not_bf16_scatters():
    """bf16 scatter-adds are compare-and-swap loops on GPUs (3/4 of a BERT-base step on an H100):
    the embedding lookups must scatter their gradients in fp32, and token types not at all."""
    model = BertForMaskedLM(TINY.replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids = jnp.ones((2, 12), jnp.int32)
    loss = lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(ids).astype(jnp.float32))
    text = jax.jit(jax.grad(loss)).lower(params).as_text()
    lines = text.splitlines()
    scatters = [i for i, line in enumerate(lines) if '"stablehlo.scatter"' in line]
    assert len(scatters) == 2  # word and position tables; the type table is read by a product
    reducers = [lines[i + 1] for i in scatters]  # ^bb0(%a: tensor<f32>, %b: tensor<f32>)
    assert all("tensor<f32>" in r and "bf16" not in r for r in reducers), reducers
