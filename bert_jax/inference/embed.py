"""Batched, jitted inference with a bare encoder or an MLM model: sentence embeddings, fill-mask.

Texts are sorted by length and batched so short texts don't pay for long ones; each batch is padded
to one of a few lengths and a power-of-two number of rows (`tasks.batching`), and the compiled
forward is cached per model structure (`model.forward`): a second call compiles nothing new.
Results come back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.errors import BertJaxError
from bert_jax.model import BertForMaskedLM, BertForPreTraining, BertModel
from bert_jax.model.forward import check_vocab, encoder_inputs, jit_forward, max_length_for
from bert_jax.tasks.batching import length_buckets, sorted_batches
from bert_jax.tasks.features import encode_classification
from bert_jax.tokenizer import BertTokenizer, check_texts

POOLINGS = ("mean", "cls")


def _pooled(encoder, pooling: str, normalize: bool, input_ids, token_type_ids, attention_mask):
    """(B, D) fp32 sentence vectors from the encoder's last hidden states."""
    hidden = encoder(input_ids, token_type_ids, attention_mask).last_hidden_state
    hidden = hidden.astype(jnp.float32)
    if pooling == "cls":
        vec = hidden[:, 0]
    else:
        w = attention_mask[..., None].astype(jnp.float32)
        vec = (hidden * w).sum(1) / jnp.maximum(w.sum(1), 1e-9)
    if normalize:
        vec = vec / jnp.maximum(jnp.linalg.norm(vec, axis=-1, keepdims=True), 1e-12)
    return vec


def embed(
    model: BertModel,
    tokenizer: BertTokenizer,
    texts: Sequence[str],
    *,
    pooling: str = "mean",
    normalize: bool = False,
    batch_size: int = 32,
) -> np.ndarray:
    """Sentence embeddings (len(texts), hidden) in fp32. Mean pooling + normalize on
    all-MiniLM-L6-v2 reproduces sentence-transformers."""
    if pooling not in POOLINGS:
        raise BertJaxError(f"--pooling must be 'mean' or 'cls', got {pooling!r}")
    encoder = model.bert if hasattr(model, "bert") else model
    check_vocab(encoder, tokenizer, "embed")
    texts = check_texts(texts, "text")  # errors name the caller's index, not a batch's
    forward = jit_forward(encoder, _pooled, pooling=pooling, normalize=bool(normalize))
    out = np.zeros((len(texts), encoder.config.hidden_size), np.float32)
    max_length = max_length_for(encoder, tokenizer)
    features = encode_classification(tokenizer, texts, max_length=max_length)
    buckets = length_buckets(max_length, per_octave=4)
    for index, batch in sorted_batches(
        features, batch_size, buckets, tokenizer.pad_id, fixed_rows=False
    ):
        vectors = np.asarray(forward(**encoder_inputs(batch)))
        out[index] = vectors[: len(index)]
    return out


def _mask_probabilities(model, masked_positions, **inputs):
    """(B, P, vocab) softmax at `masked_positions` (B, P); the MLM part of a pretraining model."""
    logits = model(masked_positions=masked_positions, **inputs)
    logits = logits[0] if isinstance(logits, tuple) else logits
    return jax.nn.softmax(logits, axis=-1)


def fill_mask(model, tokenizer: BertTokenizer, text: str, *, top_k: int = 5) -> list[dict]:
    """Top-k predictions for each mask token in `text`:
    [{"position", "predictions": [{"token", "token_id", "score"}]}]."""
    if not isinstance(model, (BertForMaskedLM, BertForPreTraining)):
        raise BertJaxError(
            f"fill-mask needs a model with an MLM head (BertForMaskedLM/BertForPreTraining), "
            f"got {type(model).__name__}"
        )
    check_vocab(model, tokenizer, "fill-mask")
    enc = tokenizer([text], max_length=max_length_for(model, tokenizer))
    positions = np.flatnonzero(enc["input_ids"][0] == tokenizer.mask_id)
    if positions.size == 0:
        raise BertJaxError(f"text has no {tokenizer.special_tokens['mask']} token to fill")
    forward = jit_forward(model, _mask_probabilities)
    probs = forward(masked_positions=positions[None], **encoder_inputs(enc))[0]
    results = []
    for pos, p in zip(positions.tolist(), np.asarray(probs)):
        best = np.argsort(-p)[:top_k]
        tokens = tokenizer.convert_ids_to_tokens(best.tolist())
        results.append(
            {
                "position": pos,
                "predictions": [
                    {"token": t, "token_id": int(i), "score": float(p[i])}
                    for t, i in zip(tokens, best)
                ],
            }
        )
    return results
