"""From start/end logits over QA windows back to answer strings in the original contexts.

N-best span decoding as in the Google BERT / Hugging Face reference: in every window of an example
take the top `n_best` start and end positions among context tokens, drop spans with end < start or
longer than `max_answer_length` tokens, score a span by start_logit + end_logit, and keep the best
over all windows. For SQuAD v2 the null answer scores start+end logit at [CLS] (its smallest value
over the windows) and wins when it beats the best span by more than `null_threshold`.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _window_spans(start, end, offsets, n_best, max_answer_length):
    """(score, start_char, end_char) candidates in one window."""
    ctx = np.flatnonzero(offsets[:, 0] >= 0)  # context token positions
    if not len(ctx):
        return []
    # Top candidates among context tokens only, best first.
    starts = ctx[np.argsort(-start[ctx], kind="stable")[:n_best]]
    ends = ctx[np.argsort(-end[ctx], kind="stable")[:n_best]]
    spans = []
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > max_answer_length:
                continue
            spans.append((float(start[s] + end[e]), int(offsets[s, 0]), int(offsets[e, 1])))
    return spans


def decode_answers(
    examples: Sequence,
    features: Sequence[dict],
    start_logits,
    end_logits,
    n_best: int = 20,
    max_answer_length: int = 30,
    null_threshold: float = 0.0,
    version_2: bool = False,
) -> tuple[dict[str, str], dict[str, dict]]:
    """Answers per example id, and per-id details.

    examples: objects with `.id` and `.context` (e.g. `readers.QAExample`).
    features: windows from `features.prepare_qa_features` (uses "offsets", "example_index").
    start_logits, end_logits: (num_windows, L) arrays (padding beyond a window's length is ignored)
        or per-window 1-D arrays.
    Returns (answers, details): answers[id] is the answer text ("" for no answer under v2);
    details[id] = {"score": best span score, "null_score": [CLS] score (None unless v2),
    "n_best": [{"text", "start", "end", "score", "probability"}] best first, "prediction":
    {"answer", "start", "end", "score" (probability)}, the null answer "" at -1, -1 when it wins}.
    """
    by_example = collections.defaultdict(list)
    for i, f in enumerate(features):
        by_example[f["example_index"]].append(i)

    answers, details = {}, {}
    for ex_index, ex in enumerate(examples):
        spans, null_score = [], None
        for i in by_example.get(ex_index, []):
            offsets = np.asarray(features[i]["offsets"])
            n = len(offsets)
            start = np.asarray(start_logits[i], np.float64)[:n]
            end = np.asarray(end_logits[i], np.float64)[:n]
            window_null = float(start[0] + end[0])
            null_score = window_null if null_score is None else min(null_score, window_null)
            spans.extend(_window_spans(start, end, offsets, n_best, max_answer_length))
        n_best_list = _ranked_answers(ex.context, spans, n_best, null_score if version_2 else None)
        chosen = _choose(n_best_list, null_score if version_2 else None, null_threshold)
        answers[ex.id] = chosen["answer"]
        details[ex.id] = {
            "score": next((d["score"] for d in n_best_list if d["start"] >= 0), None),
            "null_score": null_score if version_2 else None,
            "n_best": n_best_list,
            "prediction": chosen,
        }
    return answers, details


def _ranked_answers(context: str, spans, n_best: int, null_score: float | None) -> list[dict]:
    """The best `n_best` distinct spans (the same text can come from overlapping windows: its
    best score counts), plus the null answer when scored, with softmax probabilities."""
    best_by_span = {}
    for score, s, e in spans:
        if (s, e) not in best_by_span or score > best_by_span[(s, e)]:
            best_by_span[(s, e)] = score
    ranked = sorted(best_by_span.items(), key=lambda kv: -kv[1])[:n_best]
    n_best_list = [
        {"text": context[s:e], "start": s, "end": e, "score": score} for (s, e), score in ranked
    ]
    if null_score is not None:
        n_best_list.append({"text": "", "start": -1, "end": -1, "score": null_score})
        n_best_list.sort(key=lambda d: -d["score"])
    if n_best_list:
        probs = _softmax(np.array([d["score"] for d in n_best_list]))
        for d, p in zip(n_best_list, probs):
            d["probability"] = float(p)
    return n_best_list


def _choose(n_best_list: list[dict], null_score: float | None, null_threshold: float) -> dict:
    """{"answer", "start", "end", "score" (probability)}. SQuAD v2 (null_score given): the null
    answer "" at -1, -1 wins when its score beats the best span's by more than the threshold."""
    best = next((d for d in n_best_list if d["start"] >= 0), None)
    null_wins = best is None or (
        null_score is not None and null_score > best["score"] + null_threshold
    )
    if null_wins:
        null = next((d for d in n_best_list if d["start"] < 0), None)
        score = null["probability"] if null is not None else 0.0
        return {"answer": "", "start": -1, "end": -1, "score": score}
    return {
        "answer": best["text"],
        "start": best["start"],
        "end": best["end"],
        "score": best["probability"],
    }
