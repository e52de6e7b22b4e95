"""Turning task examples into model inputs: classification pairs, NER with first-sub-token labels,
QA windows over long contexts.

Features are plain dicts of unpadded Python lists (one per example or window); `tasks.batching`
pads them into arrays. Tokenisation goes through the fast `tokenizers` backend
(`tokenizer.backend`, or a raw `tokenizers.Tokenizer`), configured per call and restored after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from bert_jax.errors import BertJaxError
from bert_jax.tasks.metrics import entity_spans

IGNORE_INDEX = -100  # label of tokens that carry no loss (special, continuation, pad)


def _backend(tokenizer):
    return getattr(tokenizer, "backend", tokenizer)


@contextlib.contextmanager
def _truncating(backend, max_length: int | None, strategy="longest_first", stride: int = 0):
    """Sets truncation (none for max_length=None), disables padding, restores both afterwards."""
    old_trunc, old_pad = backend.truncation, backend.padding
    backend.no_padding()
    backend.no_truncation()
    if max_length is not None:
        backend.enable_truncation(max_length, stride=stride, strategy=strategy)
    try:
        yield backend
    finally:
        backend.no_truncation()
        if old_trunc:
            backend.enable_truncation(**old_trunc)
        if old_pad:
            backend.enable_padding(**old_pad)


# --------------------------------------------------------------------------------------------------
# Classification


def encode_classification(
    tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    max_length: int = 128,
    *,
    labels=None,
) -> list[dict]:
    """[{"input_ids", "token_type_ids"(, "labels")}] unpadded, truncated longest-first."""
    inputs = list(texts) if pairs is None else list(zip(texts, pairs))
    with _truncating(_backend(tokenizer), max_length) as backend:
        encodings = backend.encode_batch(inputs)
    features = [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encodings]
    if labels is not None:
        for f, y in zip(features, np.asarray(labels).tolist()):
            f["labels"] = y
    return features


# --------------------------------------------------------------------------------------------------
# Named-entity recognition


def encode_ner(
    tokenizer,
    sentences_tokens: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]] | None,
    label2id: dict[str, int],
    max_length: int = 128,
) -> list[dict]:
    """Word-tokenised sentences -> [{"input_ids", "token_type_ids", "word_ids"(, "labels")}].

    `labels` holds the word's tag id on its FIRST sub-token and -100 on special tokens and
    continuation sub-tokens. `word_ids` maps each token to its word index (-1 for special tokens):
    `word_predictions` uses it to bring token predictions back to words. Words cut off by
    `max_length` get no token (and are predicted "O" by `word_predictions`).
    """
    words = [list(s) for s in sentences_tokens]
    with _truncating(_backend(tokenizer), max_length) as backend:
        encodings = backend.encode_batch(words, is_pretokenized=True)
    features = []
    for i, e in enumerate(encodings):
        word_ids = [-1 if w is None else w for w in e.word_ids]
        f = {"input_ids": e.ids, "token_type_ids": e.type_ids, "word_ids": word_ids}
        if tags is not None:
            if len(tags[i]) != len(words[i]):
                raise BertJaxError(f"sentence {i}: {len(words[i])} tokens but {len(tags[i])} tags")
            labels, prev = [], -1
            for w in word_ids:
                if w < 0 or w == prev:
                    labels.append(IGNORE_INDEX)
                else:
                    tag = tags[i][w]
                    if tag not in label2id:
                        raise BertJaxError(
                            f"sentence {i} word {w}: unknown tag {tag!r}; "
                            f"expected one of {sorted(label2id)}"
                        )
                    labels.append(label2id[tag])
                prev = w
            f["labels"] = labels
        features.append(f)
    return features


def word_predictions(word_ids: Sequence[int], token_values, num_words: int, fill=None) -> list:
    """Per-word values taken from each word's first sub-token; `fill` for words without tokens.

    token_values: (L,) or longer (padding is ignored), e.g. predicted tag ids or their scores.
    """
    out = [fill] * num_words
    seen = set()
    for t, w in enumerate(word_ids):
        if w >= 0 and w not in seen:
            seen.add(w)
            out[w] = token_values[t]
    return out


def ner_predictions_to_entities(
    words: Sequence[str],
    word_pred_tags: Sequence[str],
    scores: Sequence[float] | None = None,
    offsets: Sequence[tuple[int, int]] | None = None,
    text: str | None = None,
) -> list[dict]:
    """Entities from per-word tags: [{"text", "label", "start", "end", "score"}].

    start/end are character offsets (end exclusive) into `" ".join(words)`, or into the original
    text when per-word `offsets` are given (then `text`, if given, supplies the entity strings).
    score is the mean of the entity words' scores (None without scores).
    """
    if offsets is None:
        offsets, pos = [], 0
        for w in words:
            offsets.append((pos, pos + len(w)))
            pos += len(w) + 1
        text = " ".join(words)
    entities = []
    for label, s, e in entity_spans(list(word_pred_tags)):
        start, end = int(offsets[s][0]), int(offsets[e - 1][1])
        span = text[start:end] if text is not None else " ".join(words[s:e])
        score = None if scores is None else float(np.mean([scores[i] for i in range(s, e)]))
        entities.append({"text": span, "label": label, "start": start, "end": end, "score": score})
    return entities


# --------------------------------------------------------------------------------------------------
# Extractive question answering


def check_doc_stride(doc_stride: int, max_length: int) -> int:
    """Consecutive QA windows must share fewer tokens than a window holds."""
    if not 0 <= doc_stride < max_length - 3:
        raise BertJaxError(
            f"doc_stride {doc_stride} must be at least 0 and below max_length "
            f"{max_length} - 3 (windows share doc_stride context tokens)"
        )
    return doc_stride


def _truncate_questions(backend, questions: list[str], max_query_length: int) -> list[str]:
    """Cuts each question's text after its first `max_query_length` tokens."""
    with _truncating(backend, None):
        encodings = backend.encode_batch(questions, add_special_tokens=False)
    return [
        q if len(e.ids) <= max_query_length else q[: e.offsets[max_query_length - 1][1]]
        for q, e in zip(questions, encodings)
    ]


def prepare_qa_features(
    tokenizer, examples, max_length: int = 384, doc_stride: int = 128, max_query_length: int = 64
) -> list[dict]:
    """Windows `[CLS] question [SEP] context-piece [SEP]` over each example's context.

    Only the context is truncated; consecutive windows share `doc_stride` context tokens (the
    Hugging Face `stride` meaning). Each window dict holds "input_ids", "token_type_ids",
    "example_index", "offsets" — (L, 2) int32 character spans into the context, (-1, -1) for
    question/special tokens — and "start_positions"/"end_positions": the gold answer's token span
    (first answer), or 0 (the [CLS] index) when the window doesn't contain it or there is no answer.
    """
    backend = _backend(tokenizer)
    questions = _truncate_questions(
        backend, [ex.question.lstrip() for ex in examples], max_query_length
    )
    features = []
    with _truncating(backend, max_length, "only_second", doc_stride):
        for ex_index, (ex, question) in enumerate(zip(examples, questions)):
            try:
                first = backend.encode(question, ex.context)
            except Exception as e:  # raised by the Rust side when the question leaves no room
                raise BertJaxError(
                    f"question id {ex.id!r}: cannot fit question and context in max_length="
                    f"{max_length} with doc_stride={doc_stride} ({e})"
                ) from None
            for enc in [first, *first.overflowing]:
                features.append(_qa_window(enc, ex, ex_index))
    return features


def _qa_window(enc, ex, ex_index: int) -> dict:
    seq = np.array([-1 if s is None else s for s in enc.sequence_ids])
    offsets = np.asarray(enc.offsets, np.int32).reshape(-1, 2)
    offsets[seq != 1] = -1  # only context tokens map to characters
    start_pos = end_pos = 0
    if ex.answers and not ex.is_impossible:
        start_char = ex.answers[0]["answer_start"]
        end_char = start_char + len(ex.answers[0]["text"])
        ctx = np.flatnonzero(seq == 1)
        if len(ctx) and offsets[ctx[0], 0] <= start_char and offsets[ctx[-1], 1] >= end_char:
            # First context token ending after the answer start; last starting before its end.
            start_pos = int(ctx[np.argmax(offsets[ctx, 1] > start_char)])
            end_pos = int(ctx[len(ctx) - 1 - np.argmax(offsets[ctx[::-1], 0] < end_char)])
    return {
        "input_ids": enc.ids,
        "token_type_ids": enc.type_ids,
        "offsets": offsets,
        "example_index": ex_index,
        "start_positions": start_pos,
        "end_positions": end_pos,
    }
