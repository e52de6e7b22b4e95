"""Which words made the model say that: integrated gradients and attention rollout.

Integrated gradients (Sundararajan et al. 2017) attributes a target logit to the input word
embeddings x: attribution_i = (x_i - x'_i) . integral_0^1 dF(x' + a (x - x'))/dx_i da, with the
baseline x' = [PAD] embeddings (or zeros) at every word token and [CLS]/[SEP] kept as they are.
The integral is a trapezoid rule over `steps` points; all points of one text run in one jitted
call (chunks of <= `batch_size` interpolations as one batch, the chunks scanned). Completeness —
the attributions sum to F(x) - F(x') — holds up to the quadrature error, reported per result as
`delta`: a model whose output switches sharply along the path needs more steps.

Attention rollout (Abnar & Zuidema 2020) is the cheaper, class-agnostic view: average each layer's
heads, add the identity (the residual), renormalise rows, multiply through the layers; a word's
weight is the rolled-out attention from [CLS] (or, for NER, from the entity's tokens) to its tokens.

Token values are summed into words (the tokenizer's pre-tokenised words, with character offsets).
Results are JSON-able dicts; texts longer than the model's limit are truncated (dropped words get
no entry).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.model import hf, model_class_for
from bert_jax.model.forward import check_vocab, max_length_for
from bert_jax.model.modeling import BertForSequenceClassification, BertForTokenClassification
from bert_jax.tasks.features import word_predictions
from bert_jax.tasks.metrics import entity_spans
from bert_jax.tokenizer import BertTokenizer, check_texts

METHODS = ("ig", "rollout")
BASELINES = ("pad", "zero")


def _check_class(cls: type) -> None:
    if not issubclass(cls, (BertForSequenceClassification, BertForTokenClassification)):
        raise BertJaxError(
            "explain needs a BertForSequenceClassification or BertForTokenClassification model, "
            f"got {cls.__name__}"
        )


def _label_name(config, index: int) -> str:
    return config.id2label[index] if index < len(config.id2label) else f"LABEL_{index}"


def _resolve_target(config, target) -> int | None:
    """None (the prediction), a label index, or a label name → index (or None)."""
    if target is None:
        return None
    n = config.num_labels
    if isinstance(target, str):
        names = [_label_name(config, i) for i in range(n)]
        if target in names:
            return names.index(target)
        if target.lstrip("-").isdigit():
            target = int(target)
        else:
            raise BertJaxError(f"target {target!r} is not a label; expected one of {names}")
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < n:
        raise BertJaxError(f"target {target!r} is out of range; the model has {n} labels")
    return int(target)


def _encode(tokenizer: BertTokenizer, text: str, max_length: int) -> tuple[dict, dict]:
    """One text → (model inputs (1, L), {"word_ids", "offsets"} of its row); L a multiple of 8."""
    enc = tokenizer(
        [text],
        max_length=max(8, max_length - max_length % 8),
        pad_to_multiple_of=8,
        return_offsets=True,
        return_word_ids=True,
    )
    inputs = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    return inputs, {"word_ids": enc["word_ids"][0], "offsets": enc["offsets"][0]}


def _words(text: str, spans: dict, token_values: np.ndarray) -> list[dict]:
    """Sum per-token values (L,) into the text's words, in order, with character offsets."""
    words: dict[int, list] = {}
    for t, w in enumerate(spans["word_ids"].tolist()):
        if w < 0:
            continue
        start, end = (int(v) for v in spans["offsets"][t])
        if w not in words:
            words[w] = [start, end, 0.0]
        words[w][1] = end
        words[w][2] += float(token_values[t])
    return [
        {"word": text[s:e], "start": s, "end": e, "attribution": v}
        for s, e, v in (words[w] for w in sorted(words))
    ]


def _first_subtokens(word_ids: np.ndarray) -> dict[int, int]:
    """word index → position of its first sub-token."""
    first: dict[int, int] = {}
    for t, w in enumerate(word_ids.tolist()):
        if w >= 0 and w not in first:
            first[w] = t
    return first


def _entities(config, spans: dict, probs: np.ndarray) -> list[dict]:
    """Predicted entities of one text: [{"label", "word_span", "positions", "tags", "score"}].

    probs: (L, C). Each word's tag is its first sub-token's argmax (as the NER task predicts).
    """
    first = _first_subtokens(spans["word_ids"])
    num_words = max(first, default=-1) + 1
    tags = probs.argmax(-1)
    word_tags = word_predictions(spans["word_ids"].tolist(), tags.tolist(), num_words, fill=None)
    names = [_label_name(config, int(t)) if t is not None else "O" for t in word_tags]
    out = []
    for label, s, e in entity_spans(names):
        positions = [first[w] for w in range(s, e)]
        out.append(
            {
                "label": label,
                "word_span": (s, e),
                "positions": positions,
                "tags": [int(tags[p]) for p in positions],
                "score": float(np.mean([probs[p, tags[p]] for p in positions])),
            }
        )
    return out


def _entity_entry(text: str, ent: dict, words: list[dict]) -> dict:
    s, e = ent["word_span"]  # word indices; words[i] is word i (truncation only drops the tail)
    start, end = words[s]["start"], words[e - 1]["end"]
    return {
        "entity": text[start:end],
        "label": ent["label"],
        "start": start,
        "end": end,
        "score": ent["score"],
    }


# ------------------------------------------------------------------------------------------------
# Integrated gradients


def _path_points(steps: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation points and trapezoid weights over [0, 1], shaped (chunks, chunk size).

    Chunks are as even as possible; the few padding points carry weight 0.
    """
    chunks = -(-steps // batch_size)
    size = -(-steps // chunks)
    alphas = np.zeros(chunks * size, np.float32)
    coef = np.zeros(chunks * size, np.float32)
    alphas[:steps] = np.linspace(0.0, 1.0, steps)
    coef[:steps] = 1.0 / (steps - 1)
    coef[[0, steps - 1]] *= 0.5
    return alphas.reshape(chunks, size), coef.reshape(chunks, size)


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "batch_size"))
def _ig_path(graphdef, state, inputs, x, base, weights, *, steps: int, batch_size: int):
    """(token attributions (L,), F(x), F(x')) for F(e) = sum(logits(e)[0] * weights).

    x, base: (L, D) fp32. weights: (C,) one-hot for a sequence classifier, (L, C) for a token
    classifier (the entity's first sub-tokens × their predicted tags). Module-level and keyed on
    the static graphdef, so repeated calls on one model compile once per padded length.
    """
    model = nnx.merge(graphdef, state)

    def value_and_grad(alpha):
        def f(embeds):  # (L, D) → scalar
            logits = model(inputs_embeds=embeds[None], **inputs)[0]
            return jnp.sum(logits * weights)

        return jax.value_and_grad(f)(base + alpha * (x - base))

    def chunk(total, points):
        alphas, coef = points  # (size,) each
        values, grads = jax.vmap(value_and_grad)(alphas)  # (size,), (size, L, D)
        return total + jnp.tensordot(coef, grads, axes=1), values

    # The interpolations of a chunk run as one batch; chunks are scanned, so memory holds one
    # chunk's gradients and the running weighted sum, never all `steps` of them.
    alphas, coef = _path_points(steps, batch_size)
    mean_grad, values = jax.lax.scan(chunk, jnp.zeros_like(x), (alphas, coef))
    values = values.reshape(-1)
    return jnp.sum((x - base) * mean_grad, axis=-1), values[steps - 1], values[0]


@functools.partial(jax.jit, static_argnames="graphdef")
def _logits(graphdef, state, inputs):
    return nnx.merge(graphdef, state)(**inputs)


def _embeddings_and_baseline(model, inputs: dict, spans: dict, baseline: str, pad_id: int):
    """Word embeddings x (L, D) of the text and its baseline x': word tokens replaced, specials
    ([CLS], [SEP], padding: word id -1) kept so they get zero attribution."""
    table = model.bert.embeddings.word.embedding[...]
    ids = inputs["input_ids"][0]
    x = jnp.asarray(table[ids], jnp.float32)
    fill = jnp.zeros_like(x[0]) if baseline == "zero" else jnp.asarray(table[pad_id], jnp.float32)
    is_word = jnp.asarray(spans["word_ids"] >= 0)[:, None]
    return x, jnp.where(is_word, fill, x)


def integrated_gradients(
    model,
    tokenizer: BertTokenizer,
    texts: str | Sequence[str],
    *,
    target: int | str | None = None,
    steps: int = 50,
    batch_size: int = 32,
    baseline: str = "pad",
) -> list[dict]:
    """Integrated-gradients word attributions, one dict per text.

    Sequence classifier: {"text", "method": "ig", "label", "target", "score", "logit",
    "baseline_logit", "words": [{"word", "start", "end", "attribution"}], "delta"}. `target` (an
    index or label name) defaults to the predicted label; `score` is its softmax probability (the
    output itself for a regression head, num_labels == 1, whose target is always 0). `delta` =
    sum(attributions) - (logit - baseline_logit), the completeness gap; more steps shrink it.

    Token classifier (NER): {"text", "method": "ig", "entities": [{"entity", "label", "start",
    "end", "score", "logit", "baseline_logit", "words", "delta"}]}, one entry per predicted entity,
    explaining the sum of its words' predicted-tag logits (first sub-tokens); no `target`.
    Puts the model in eval mode (dropout off).
    """
    _check_ig_arguments(model, tokenizer, target, steps, batch_size, baseline)
    texts = check_texts(texts, "text")
    config = model.config
    target = _resolve_target(config, target)
    model.eval()  # dropout off
    graphdef, state = nnx.split(model)
    max_length = max_length_for(model, tokenizer)
    token_level = isinstance(model, BertForTokenClassification)
    path = dict(steps=steps, batch_size=batch_size)

    results = []
    for text in texts:
        inputs, spans = _encode(tokenizer, text, max_length)
        logits = np.asarray(_logits(graphdef, state, inputs))[0]  # (C,) or (L, C)
        x, base = _embeddings_and_baseline(model, inputs, spans, baseline, tokenizer.pad_id)
        ig = (graphdef, state, inputs, x, base, text, spans)
        if token_level:
            entities = []
            for ent in _entities(config, spans, np.asarray(jax.nn.softmax(logits, -1))):
                weights = np.zeros(logits.shape, np.float32)
                weights[ent["positions"], ent["tags"]] = 1.0
                explained = _attribute(*ig, weights, **path)
                entities.append(_entity_entry(text, ent, explained["words"]) | explained)
            results.append({"text": text, "method": "ig", "entities": entities})
            continue
        head = _prediction(config, logits, target)
        weights = np.eye(logits.shape[-1], dtype=np.float32)[head["target"]]
        results.append({"text": text, "method": "ig", **head, **_attribute(*ig, weights, **path)})
    return results


def _prediction(config, logits: np.ndarray, target: int | None) -> dict:
    """{"label", "target", "score"} of a sequence head's logits (C,): the explained class (the
    prediction unless `target`) and its probability; a regression head's output itself."""
    regression = logits.shape[-1] == 1
    t = 0 if regression else (int(logits.argmax()) if target is None else target)
    score = float(logits[0]) if regression else float(jax.nn.softmax(logits)[t])
    return {"label": None if regression else _label_name(config, t), "target": t, "score": score}


def _check_ig_arguments(model, tokenizer, target, steps, batch_size, baseline) -> None:
    _check_class(type(model))
    check_vocab(model, tokenizer, "explain")
    if baseline not in BASELINES:
        raise BertJaxError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if not isinstance(steps, int) or steps < 2:
        raise BertJaxError(f"steps must be an integer >= 2, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BertJaxError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(model, BertForTokenClassification) and target is not None:
        raise BertJaxError("target is for sequence classifiers; NER explains each predicted entity")


def _attribute(graphdef, state, inputs, x, base, text, spans, weights, *, steps, batch_size):
    """IG of the `weights`-weighted logits (a target class, or an entity's tags) along the
    straight path from `base` to `x`, summed per word, with its completeness gap."""
    out = _ig_path(graphdef, state, inputs, x, base, weights, steps=steps, batch_size=batch_size)
    attr, value, base_value = (np.asarray(v) for v in out)
    value, base_value = float(value), float(base_value)
    words = _words(text, spans, attr)
    delta = sum(w["attribution"] for w in words) - (value - base_value)
    return {"logit": value, "baseline_logit": base_value, "words": words, "delta": delta}


# ------------------------------------------------------------------------------------------------
# Attention rollout


@functools.partial(jax.jit, static_argnames="graphdef")
def _rollout(graphdef, state, inputs):
    """(logits, rollout (B, L, L)): row i = how much token i's final state draws on each input."""
    m = nnx.merge(graphdef, state)
    attentions = m.bert(**inputs, output_attentions=True).attentions  # each (B, H, L, L) fp32
    length = attentions[0].shape[-1]
    eye = jnp.eye(length, dtype=jnp.float32)
    rollout = jnp.broadcast_to(eye, attentions[0].shape[:1] + (length, length))
    for probs in attentions:
        a = probs.mean(axis=1) + eye  # heads averaged, + identity for the residual path
        a = a / a.sum(axis=-1, keepdims=True)
        rollout = a @ rollout
    return m(**inputs), rollout


def attention_rollout(model, tokenizer: BertTokenizer, texts: str | Sequence[str]) -> list[dict]:
    """Attention-rollout word weights (non-negative), one dict per text.

    Sequence classifier: {"text", "method": "rollout", "label", "target", "score", "words"} with
    each word's rolled-out attention from [CLS] (the mass that [CLS] itself and [SEP] keep is not
    shown, so the words sum to less than 1). Token classifier: {"text", "method": "rollout",
    "entities": [{"entity", "label", "start", "end", "score", "words"}]}, rolled out from the
    entity's first sub-tokens (their rows averaged). Class-agnostic: the same for every label.
    """
    _check_class(type(model))
    check_vocab(model, tokenizer, "explain")
    texts = check_texts(texts, "text")
    config = model.config
    model.eval()
    graphdef, state = nnx.split(model)
    max_length = max_length_for(model, tokenizer)
    results = []
    for text in texts:
        inputs, spans = _encode(tokenizer, text, max_length)
        logits, rollout = (np.asarray(v)[0] for v in _rollout(graphdef, state, inputs))
        if isinstance(model, BertForTokenClassification):
            entities = []
            for ent in _entities(config, spans, np.asarray(jax.nn.softmax(logits, -1))):
                words = _words(text, spans, rollout[ent["positions"]].mean(axis=0))
                entities.append(_entity_entry(text, ent, words) | {"words": words})
            results.append({"text": text, "method": "rollout", "entities": entities})
            continue
        head = _prediction(config, logits, None)
        words = _words(text, spans, rollout[0])
        results.append({"text": text, "method": "rollout", **head, "words": words})
    return results


# ------------------------------------------------------------------------------------------------
# Convenience for the CLI


def explain(
    model_dir: str | os.PathLike,
    texts: str | Sequence[str],
    *,
    method: str = "ig",
    steps: int = 50,
    target: int | str | None = None,
    baseline: str = "pad",
    batch_size: int = 32,
) -> list[dict]:
    """Load a classifier directory (HF format) and explain `texts` with `method` ("ig" or
    "rollout"); returns the JSON-able dicts of `integrated_gradients` / `attention_rollout`."""
    if method not in METHODS:
        raise BertJaxError(f"method must be one of {METHODS}, got {method!r}")
    texts = check_texts(texts, "text")
    hf.read_config(model_dir)  # a missing or broken directory says so, not "got BertModel"
    cls = model_class_for(model_dir)
    _check_class(cls)  # before loading any weights
    model = cls.from_pretrained(model_dir)
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    if method == "rollout":
        return attention_rollout(model, tokenizer, texts)
    return integrated_gradients(
        model,
        tokenizer,
        texts,
        target=target,
        steps=steps,
        batch_size=batch_size,
        baseline=baseline,
    )
