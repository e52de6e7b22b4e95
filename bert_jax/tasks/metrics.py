"""Evaluation metrics for the fine-tuning tasks, in plain numpy.

Each metric reproduces the reference implementation people compare against:
sklearn (accuracy, macro F1, Matthews correlation), scipy (Pearson, Spearman with average ranks for
ties), seqeval's default entity-level scores (conlleval rules), and the official SQuAD v1.1/v2.0
evaluation script (answer normalisation, max over gold answers, empty gold = no answer).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------------
# Classification and regression


def _class_preds(preds) -> np.ndarray:
    """Integer predictions; (N, C) logits are reduced with argmax."""
    preds = np.asarray(preds)
    return preds.argmax(-1) if preds.ndim == 2 else preds


def accuracy(labels, preds) -> float:
    """Fraction of exact matches. `preds` may be (N,) class ids or (N, C) logits."""
    labels, preds = np.asarray(labels), _class_preds(preds)
    return float(np.mean(labels == preds)) if labels.size else 0.0


def _confusion(labels, preds) -> np.ndarray:
    labels, preds = np.asarray(labels), _class_preds(preds)
    classes, codes = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    cm = np.zeros((len(classes), len(classes)), np.int64)  # (true, pred)
    np.add.at(cm, (codes[: len(labels)], codes[len(labels) :]), 1)
    return cm


def macro_f1(labels, preds, classes=None) -> float:
    """Unweighted mean of per-class F1 (sklearn `f1_score(average="macro")`, zero_division=0).

    Classes default to the union of those seen in `labels` and `preds`, as in sklearn.
    """
    labels, preds = np.asarray(labels), _class_preds(preds)
    classes = np.union1d(labels, preds) if classes is None else np.asarray(classes)
    is_true = labels[None, :] == classes[:, None]  # (C, N)
    is_pred = preds[None, :] == classes[:, None]
    tp = (is_true & is_pred).sum(1).astype(np.float64)
    denom = is_true.sum(1) + is_pred.sum(1)  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean()) if f1.size else 0.0


def matthews_corrcoef(labels, preds) -> float:
    """Multi-class Matthews correlation (sklearn's R_K formula); 0.0 when undefined."""
    cm = _confusion(labels, preds).astype(np.float64)
    t_sum, p_sum = cm.sum(1), cm.sum(0)
    n, correct = cm.sum(), np.trace(cm)
    cov_tp = correct * n - t_sum @ p_sum
    cov_pp = n * n - p_sum @ p_sum
    cov_tt = n * n - t_sum @ t_sum
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def pearson(x, y) -> float:
    """Pearson correlation; NaN when either input is constant (as scipy)."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc @ xc) * (yc @ yc))
    if denom == 0:
        return float("nan")
    return float(np.clip((xc @ yc) / denom, -1.0, 1.0))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks (scipy `rankdata`)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    run_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation with average ranks for ties (scipy `spearmanr`)."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    return pearson(_average_ranks(x), _average_ranks(y))


def classification_metrics(labels, preds) -> dict[str, float]:
    """{"accuracy", "macro_f1", "mcc", "majority_accuracy"}; `preds` may be class ids or (N, C)
    logits. `majority_accuracy` is what always answering the most frequent label scores: the
    floor an accuracy must clear to mean anything."""
    labels = np.asarray(labels)
    return {
        "accuracy": accuracy(labels, preds),
        "macro_f1": macro_f1(labels, preds),
        "mcc": matthews_corrcoef(labels, preds),
        "majority_accuracy": float(np.bincount(labels).max() / max(len(labels), 1)),
    }


def regression_metrics(labels, preds) -> dict[str, float]:
    """{"pearson", "spearman", "mse"}; `preds` may be (N,) or (N, 1)."""
    labels = np.asarray(labels, np.float64).ravel()
    preds = np.asarray(preds, np.float64).ravel()
    return {
        "pearson": pearson(labels, preds),
        "spearman": spearman(labels, preds),
        "mse": float(np.mean((labels - preds) ** 2)) if labels.size else 0.0,
    }


# --------------------------------------------------------------------------------------------------
# Entity-level scores (seqeval default mode = conlleval rules)

_SCHEME_MAP = {"IOB1": {}, "IOB2": {}, "IOE2": {}, "IOBES": {}, "BILOU": {"L": "E", "U": "S"}}


def _split_tag(tag: str, remap: Mapping[str, str]) -> tuple[str, str]:
    # Same parsing as seqeval: prefix letter, type after the first '-', '_' when absent.
    prefix = remap.get(tag[:1], tag[:1])
    return prefix, tag[1:].split("-", maxsplit=1)[-1] or "_"


def _chunk_ends(prev_tag, tag, prev_type, type_) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _chunk_starts(prev_tag, tag, prev_type, type_) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def entity_spans(tags: Sequence[str], scheme: str = "IOB2") -> list[tuple[str, int, int]]:
    """Entities in one tag sequence as (label, start, end) word indices, `end` exclusive.

    Lenient conlleval rules, as seqeval's default: an I- after O (or after another type) starts an
    entity, a type change ends one. `scheme` only renames prefixes (BILOU's L/U become E/S).
    """
    if scheme not in _SCHEME_MAP:
        raise ValueError(f"scheme must be one of {sorted(_SCHEME_MAP)}, got {scheme!r}")
    remap = _SCHEME_MAP[scheme]
    spans = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate(list(tags) + ["O"]):
        tag, type_ = _split_tag(chunk, remap)
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            spans.append((prev_type, begin, i))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return spans


def entity_prf(
    true_tag_seqs: Sequence[Sequence[str]], pred_tag_seqs: Sequence[Sequence[str]], scheme="IOB2"
) -> dict[str, float]:
    """Micro precision/recall/F1 over exact entity matches (seqeval default), plus counts."""
    if len(true_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(f"{len(true_tag_seqs)} true sequences but {len(pred_tag_seqs)} predicted")
    n_true = n_pred = n_correct = 0
    for i, (t, p) in enumerate(zip(true_tag_seqs, pred_tag_seqs)):
        if len(t) != len(p):
            raise ValueError(f"sequence {i}: {len(t)} true tags but {len(p)} predicted")
        true_set, pred_set = set(entity_spans(t, scheme)), set(entity_spans(p, scheme))
        n_true, n_pred = n_true + len(true_set), n_pred + len(pred_set)
        n_correct += len(true_set & pred_set)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "num_true": n_true,
        "num_pred": n_pred,
        "num_correct": n_correct,
    }


# --------------------------------------------------------------------------------------------------
# SQuAD (official evaluation script rules)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def _f1(gold: str, pred: str) -> float:
    gold_toks, pred_toks = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_toks or not pred_toks:
        # A no-answer gold only matches an empty prediction (v2.0 rule).
        return float(gold_toks == pred_toks)
    same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_em_f1(predictions, references_lists) -> dict[str, float]:
    """SQuAD exact match and F1, in percent (0-100) like the official script.

    `predictions`: sequence of answer strings, or {id: answer}. `references_lists`: sequence of
    lists of gold answer strings (aligned), or {id: [golds]}. A gold list that is empty, or whose
    answers all normalise to "", means "no answer": only an empty prediction scores. A missing id
    scores 0.
    Returns {"exact_match", "f1", "total"} and HasAns_/NoAns_ breakdowns when both kinds occur.
    """
    if isinstance(references_lists, Mapping):
        ids = list(references_lists)
        golds = [references_lists[k] for k in ids]
        if isinstance(predictions, Mapping):
            preds = [predictions.get(k) for k in ids]
        else:
            preds = list(predictions)
    else:
        golds, preds = list(references_lists), list(predictions)
    if len(golds) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {len(golds)} reference lists")
    em, f1, has_ans = [], [], []
    for gold, pred in zip(golds, preds):
        gold = [g for g in gold if normalize_answer(g)] or [""]
        has_ans.append(gold != [""])
        if pred is None:
            em.append(0.0)
            f1.append(0.0)
            continue
        em.append(max(_exact(g, pred) for g in gold))
        f1.append(max(_f1(g, pred) for g in gold))
    em, f1, has_ans = np.array(em), np.array(f1), np.array(has_ans, bool)

    def pct(x):
        return float(100.0 * x.mean()) if x.size else 0.0

    out = {"exact_match": pct(em), "f1": pct(f1), "total": len(em)}
    if has_ans.any() and (~has_ans).any():
        for name, mask in (("HasAns", has_ans), ("NoAns", ~has_ans)):
            out.update({f"{name}_exact": pct(em[mask]), f"{name}_f1": pct(f1[mask])})
            out[f"{name}_total"] = int(mask.sum())
    return out
