"""Batched, jitted inference: sentence embeddings and fill-mask.

Texts are sorted by length and batched so short texts don't pay for long ones; each batch is padded
to a multiple of 8 tokens (few distinct shapes → few compilations). Results come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.model import BertForMaskedLM, BertForPreTraining, BertModel
from bert_jax.tokenizer import BertTokenizer, check_texts


def jit_forward(model: nnx.Module, fn: Callable) -> Callable:
    """jit `fn(model, **batch)` once: the model is split into graphdef/state outside the hot loop."""
    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, batch):
        return fn(nnx.merge(graphdef, state), **batch)

    return lambda **batch: forward(state, batch)


def max_length_for(model: nnx.Module, tokenizer: BertTokenizer) -> int:
    """Longest input the model takes: texts beyond it are truncated (documented behaviour)."""
    limit = model.config.max_position_embeddings
    return min(limit, tokenizer.model_max_length or limit)


def length_sorted_batches(tokenizer, texts, batch_size, max_length, pairs=None):
    """Yield (indices, encoded numpy batch) over `texts` grouped by token length."""
    texts = check_texts(texts, "text")  # errors name the caller's index, not a batch's
    if pairs is not None:
        pairs = check_texts(pairs, "pair")
    lengths = [len(e.ids) for e in tokenizer.backend.encode_batch(list(texts))]
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch_texts = [texts[i] for i in idx]
        batch_pairs = [pairs[i] for i in idx] if pairs is not None else None
        enc = tokenizer(
            batch_texts, batch_pairs, max_length=max_length, truncation=True,
            padding="longest", pad_to_multiple_of=8,
        )
        yield idx, enc


def _model_inputs(enc) -> dict:
    return {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}


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
    if pooling not in ("mean", "cls"):
        raise BertJaxError(f"--pooling must be 'mean' or 'cls', got {pooling!r}")
    encoder = model.bert if hasattr(model, "bert") else model

    def pooled(m, input_ids, token_type_ids, attention_mask):
        hidden = m(input_ids, token_type_ids, attention_mask).last_hidden_state.astype(jnp.float32)
        if pooling == "cls":
            vec = hidden[:, 0]
        else:
            w = attention_mask[..., None].astype(jnp.float32)
            vec = (hidden * w).sum(1) / jnp.maximum(w.sum(1), 1e-9)
        if normalize:
            vec = vec / jnp.maximum(jnp.linalg.norm(vec, axis=-1, keepdims=True), 1e-12)
        return vec

    forward = jit_forward(encoder, pooled)
    out = np.zeros((len(texts), encoder.config.hidden_size), np.float32)
    max_length = max_length_for(encoder, tokenizer)
    for idx, enc in length_sorted_batches(tokenizer, texts, batch_size, max_length):
        out[idx] = np.asarray(forward(**_model_inputs(enc)))
    return out


def fill_mask(model, tokenizer: BertTokenizer, text: str, *, top_k: int = 5) -> list[dict]:
    """Top-k predictions for each [MASK] in `text`: [{"position", "predictions": [{token, score}]}]."""
    if not isinstance(model, (BertForMaskedLM, BertForPreTraining)):
        raise BertJaxError(
            f"fill-mask needs a model with an MLM head (BertForMaskedLM/BertForPreTraining), "
            f"got {type(model).__name__}"
        )
    enc = tokenizer([text], max_length=max_length_for(model, tokenizer), pad_to_multiple_of=8)
    positions = np.flatnonzero(enc["input_ids"][0] == tokenizer.mask_id)
    if positions.size == 0:
        raise BertJaxError("text has no [MASK] token to fill")

    def logits_at(m, masked_positions, **inputs):
        logits = m(masked_positions=masked_positions, **inputs)
        logits = logits[0] if isinstance(logits, tuple) else logits
        return jax.nn.softmax(logits, axis=-1)

    probs = jit_forward(model, logits_at)(masked_positions=positions[None], **_model_inputs(enc))[0]
    results = []
    for pos, p in zip(positions.tolist(), np.asarray(probs)):
        best = np.argsort(-p)[:top_k]
        tokens = tokenizer.convert_ids_to_tokens(best.tolist())
        results.append(
            {
                "position": pos,
                "predictions": [
                    {"token": t, "token_id": int(i), "score": float(p[i])} for t, i in zip(tokens, best)
                ],
            }
        )
    return results
