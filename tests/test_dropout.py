"""Dropout with 8-bit keep-masks (model/dropout.py): the rate it realises, its statistics, its
gradient, and that the models use it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.model.dropout import Dropout, dropout, keep_mask, mask_width


@pytest.mark.parametrize("rate", [0.001, 0.02, 0.05, 0.1, 0.15, 0.3, 0.5, 0.9, 0.995])
def test_realised_rate_is_within_two_percent_of_the_rate(rate):
    bits, threshold = mask_width(rate)
    realised_drop = 1.0 - threshold / 2**bits
    assert abs(realised_drop - rate) <= 0.02 * min(rate, 1.0 - rate)


def test_common_rates_draw_one_byte_per_element_and_small_ones_more():
    assert mask_width(0.1) == (8, 230)  # keeps 230/256: drops 0.1016
    assert mask_width(0.5) == (8, 128)
    assert mask_width(0.02)[0] == 16
    assert mask_width(1e-6)[0] == 32


@pytest.mark.parametrize("rate, shape", [(0.1, (1000, 1001)), (0.02, (3, 333_333)), (0.5, (7, 5))])
def test_mask_keeps_elements_at_the_probability_it_reports(rate, shape):
    keep, probability = keep_mask(jax.random.key(0), rate, shape)
    assert keep.shape == shape and keep.dtype == jnp.bool_
    n = np.prod(shape)
    sigma = np.sqrt(probability * (1 - probability) / n)
    assert abs(float(keep.mean()) - probability) < 5 * sigma
    # Different keys, different masks; the same key, the same mask.
    again, _ = keep_mask(jax.random.key(0), rate, shape)
    other, _ = keep_mask(jax.random.key(1), rate, shape)
    np.testing.assert_array_equal(keep, again)
    assert (keep != other).any()


def test_dropout_keeps_the_mean_and_its_gradient_is_the_scaled_mask():
    x = jnp.full((512, 512), 2.0)
    key = jax.random.key(3)
    y = dropout(x, 0.1, key)
    keep, probability = keep_mask(key, 0.1, x.shape)
    np.testing.assert_allclose(y, np.where(keep, 2.0 / probability, 0.0), rtol=1e-6)
    assert abs(float(y.mean()) - 2.0) < 0.02
    grad = jax.grad(lambda v: dropout(v, 0.1, key).sum())(x)
    np.testing.assert_allclose(grad, np.where(keep, 1.0 / probability, 0.0), rtol=1e-6)


def test_module_is_identity_in_eval_and_advances_its_stream_in_train():
    layer = Dropout(0.1, rngs=nnx.Rngs(0))
    x = jnp.ones((64, 64))
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    layer.train()
    first, second = layer(x), layer(x)
    assert (np.asarray(first) != np.asarray(second)).any()
    np.testing.assert_allclose(np.unique(np.asarray(first)), [0.0, 256 / 230], rtol=1e-6)


def test_models_build_their_dropout_from_this_module(tiny_bert_config):
    from bert_jax.model.modeling import BertForSequenceClassification

    model = BertForSequenceClassification(tiny_bert_config(100), rngs=nnx.Rngs(0))
    layers = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Dropout)]
    assert layers and all(isinstance(m, Dropout) for m in layers)
