"""Each fine-tuning task's data, per an experiment config: read (files, bundled sets, TFDS GLUE),
subset, encode into features; and scoring the model's outputs on the evaluation part.

Every reading mistake raises BertJaxError naming the file and line (see tasks/readers.py), before
any model is loaded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bert_jax.errors import BertJaxError
from bert_jax.io import import_tfds, read_text
from bert_jax.sampling import held_out, subset
from bert_jax.tasks import features as F
from bert_jax.tasks import metrics as M
from bert_jax.tasks import readers
from bert_jax.tasks.batching import fitted_buckets, length_buckets
from bert_jax.tasks.postprocess import decode_answers

TASKS = ("classification", "ner", "qa")

# GLUE task → (text feature, second text feature or None, evaluation split) in TFDS glue/<task>.
GLUE = {
    "cola": ("sentence", None, "validation"),
    "sst2": ("sentence", None, "validation"),
    "mrpc": ("sentence1", "sentence2", "validation"),
    "qqp": ("question1", "question2", "validation"),
    "stsb": ("sentence1", "sentence2", "validation"),
    "mnli": ("premise", "hypothesis", "validation_matched"),
    "qnli": ("question", "sentence", "validation"),
    "rte": ("sentence1", "sentence2", "validation"),
    "wnli": ("sentence1", "sentence2", "validation"),
}


@dataclasses.dataclass
class TaskData:
    """Encoded features (train may be None) and what evaluation compares against.

    reference: labels (N,) for classification, [(words, tags)] for NER, [QAExample] for QA.
    """

    kind: str
    label_names: list[str] | None  # class / tag names by id; None for regression and QA
    regression: bool
    train: list[dict] | None
    eval: list[dict]
    reference: Any


def _tfds_table(
    name: str,
    split: str,
    text_key: str,
    pair_key: str | None,
    label_key: str,
    label_names,
    regression: bool,
) -> readers.ClassificationData:
    """A TFDS split through `tfds.data_source` (array_record; no TensorFlow needed)."""
    tfds = import_tfds(name)
    try:
        source = tfds.data_source(name, split=split)
        examples = list(source)
    except Exception as e:  # not prepared / not downloadable here / no such split
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BertJaxError(f"{name} split {split!r} cannot be loaded: {first}") from None
    features = source.dataset_info.features

    def text(x):
        return bytes(x).decode("utf-8") if isinstance(x, (bytes, np.bytes_)) else str(x)

    for key in (text_key, pair_key, label_key):
        if key and key not in features:
            raise BertJaxError(f"{name} has no feature {key!r}; it has {sorted(features)}")
    names = label_names or (None if regression else list(features[label_key].names))
    texts = [text(ex[text_key]) for ex in examples]
    pairs = [text(ex[pair_key]) for ex in examples] if pair_key else None
    labels = np.asarray([ex[label_key] for ex in examples], np.float32 if regression else np.int32)
    if not regression and len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise BertJaxError(
            f"{name} split {split!r}: labels outside 0..{len(names) - 1} "
            "(an unlabelled test split?)"
        )
    return readers.ClassificationData(texts, pairs, labels, None if regression else names)


def _read_classification(d, label_names, regression: bool, train: bool):
    """(train ClassificationData or None, eval ClassificationData)."""
    source = d.source
    if source == "tweet_sentiment":
        tr, ev = readers.bundled_tweet_sentiment(int(d.split_seed), float(d.eval_fraction))
        return (tr if train else None), ev
    if source == "glue" or source.startswith("tfds:"):
        if source == "glue":
            if d.glue_task not in GLUE:
                raise BertJaxError(
                    f"data.glue_task: expected one of {sorted(GLUE)}, got {d.glue_task!r}"
                )
            name, (text_key, pair_key, eval_split) = f"glue/{d.glue_task}", GLUE[d.glue_task]
            label_key = "label"
        else:
            name, eval_split = source[len("tfds:") :], "test"
            text_key, pair_key, label_key = d.text_column, d.text_pair_column, d.label_column
        eval_split = d.get("eval_split") or eval_split

        def load(split, names):
            return _tfds_table(
                name, split, text_key, pair_key or None, label_key, names, regression
            )

        tr = load(d.get("train_split") or "train", label_names) if train else None
        return tr, load(eval_split, label_names or (tr.label_names if tr else None))
    if source != "files":
        raise BertJaxError(
            f"data.source: expected 'files', 'tweet_sentiment', 'glue' or "
            f"'tfds:NAME' for classification, got {source!r}"
        )
    columns = dict(
        text_column=d.text_column,
        text_pair_column=d.text_pair_column or None,
        label_column=d.label_column,
        regression=regression,
    )
    if not d.eval_file and not d.train_file:
        raise BertJaxError("data.train_file (or data.eval_file) is required for source 'files'")
    tr = None
    if d.train_file and (train or not d.eval_file):
        tr = readers.read_table(d.train_file, label_names=label_names, **columns)
    if d.eval_file:
        names = label_names or (tr.label_names if tr else None)
        return tr, readers.read_table(d.eval_file, label_names=names, **columns)
    kept, held = held_out(len(tr), float(d.eval_fraction), int(d.split_seed))
    return (tr.subset(kept) if train else None), tr.subset(held)


def _read_ner(d, train: bool):
    if d.source == "wnut":
        return readers.bundled_wnut_ner(int(d.split_seed), float(d.eval_fraction))
    if d.source != "files":
        raise BertJaxError(f"data.source: expected 'files' or 'wnut' for ner, got {d.source!r}")
    if not d.eval_file:
        raise BertJaxError("data.eval_file (a CoNLL file) is required for ner")
    tr = readers.read_conll(d.train_file) if train else None
    return tr, readers.read_conll(d.eval_file)


def load_task_data(
    config, tokenizer, *, label_names=None, regression=None, train: bool = True
) -> TaskData:
    """Read and encode the task's data per `config.data`. `label_names` (e.g. a saved model's
    id2label) fix the label ids; otherwise they come from `data.labels` or the training data."""
    kind, d = config.task, config.data
    if kind not in TASKS:
        raise BertJaxError(f"config.task: expected one of {TASKS}, got {kind!r}")
    label_names = list(label_names or d.get("labels", ()) or []) or None
    if kind == "classification":
        if regression is None:  # GLUE's STS-B is regression whatever data.regression says
            stsb = d.source == "glue" and d.get("glue_task") == "stsb"
            regression = bool(d.get("regression", False)) or stsb
        return _classification_data(config, tokenizer, label_names, regression, train)
    if kind == "ner":
        return _ner_data(config, tokenizer, label_names, train)
    return _qa_data(config, tokenizer, train)


def task_buckets(config, data: TaskData) -> list[int]:
    """The padded lengths of training and evaluation batches: `data.length_buckets` fitted to
    the examples' lengths (each is compiled once for training, once for evaluation)."""
    max_length, count = int(config.data.max_length), int(config.data.length_buckets)
    if count <= 0:
        return length_buckets(max_length)
    lengths = [len(f["input_ids"]) for f in (data.train or []) + data.eval]
    return fitted_buckets(lengths, max_length, count)


def _limits(config) -> tuple[int, int, int]:
    """(max train examples, max eval examples, seed): seeded subsets for quick runs and tests."""
    d = config.data
    return int(d.max_train_examples), int(d.max_eval_examples), int(config.train.seed)


def _classification_data(config, tokenizer, label_names, regression: bool, train: bool):
    d, (n_train, n_eval, seed) = config.data, _limits(config)
    tr, ev = _read_classification(d, None if regression else label_names, regression, train)
    ev = ev.subset(subset(len(ev), n_eval, seed + 1))
    names = None if regression else (label_names or (tr or ev).label_names)

    def encode(data):
        return F.encode_classification(
            tokenizer, data.texts, data.pairs, int(d.max_length), labels=data.labels
        )

    train_features = None
    if tr is not None and train:
        train_features = encode(tr.subset(subset(len(tr), n_train, seed)))
    return TaskData("classification", names, regression, train_features, encode(ev), ev.labels)


def _ner_data(config, tokenizer, label_names, train: bool):
    d, (n_train, n_eval, seed) = config.data, _limits(config)
    tr, ev = _read_ner(d, train)
    ev = [ev[i] for i in subset(len(ev), n_eval, seed + 1)]
    bundled = d.source == "wnut"
    names = label_names or readers.tag_names((tr or []) + (ev if bundled or not tr else []))
    label2id = {t: i for i, t in enumerate(names)}
    if d.source == "files":  # name the file and line of a tag the label set lacks
        for path in [d.train_file] * (tr is not None) + [d.eval_file]:
            _check_tags(path, label2id)

    def encode(sents):
        words, tags = [w for w, _ in sents], [t for _, t in sents]
        return F.encode_ner(tokenizer, words, tags, label2id, int(d.max_length))

    train_features = None
    if tr is not None and train:
        train_features = encode([tr[i] for i in subset(len(tr), n_train, seed)])
    return TaskData("ner", names, False, train_features, encode(ev), ev)


def _qa_data(config, tokenizer, train: bool):
    d, (n_train, n_eval, seed) = config.data, _limits(config)
    if d.source != "files" or not d.eval_file:
        raise BertJaxError("qa needs data.source='files' and SQuAD JSON data.train_file/eval_file")
    max_length = int(d.max_length)
    qa = dict(
        max_length=max_length,
        doc_stride=F.check_doc_stride(int(d.doc_stride), max_length),
        max_query_length=int(d.max_query_length),
    )
    ev = readers.read_squad(d.eval_file)
    ev = [ev[i] for i in subset(len(ev), n_eval, seed + 1)]
    train_features = None
    if train:
        tr = readers.read_squad(d.train_file)
        tr = [tr[i] for i in subset(len(tr), n_train, seed)]
        train_features = F.prepare_qa_features(tokenizer, tr, **qa)
    eval_features = F.prepare_qa_features(tokenizer, ev, **qa)
    return TaskData("qa", None, False, train_features, eval_features, ev)


def _check_tags(path: str, label2id: dict) -> None:
    """Every tag in a CoNLL file (already read by read_conll) must have a label id."""
    text = read_text(path, fallback_encoding="latin-1")  # as read_conll read it
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) >= 2 and fields[0].strip() != "-DOCSTART-":
            tag = fields[-1].strip()
            if tag not in label2id:
                raise BertJaxError(
                    f"{path} line {n}: unknown tag {tag!r}; the labels are "
                    f"{sorted(label2id)} (from the training data or data.labels)"
                )


def score(data: TaskData, outputs: list, qa_decode: dict | None = None) -> dict[str, float]:
    """Task metrics of per-example outputs on data.eval: accuracy/macro-F1/MCC (logits (C,)),
    Pearson/Spearman/MSE (regression, (1,)), entity P/R/F1 (NER token logits (n, C)) or SQuAD
    EM/F1 (QA (start (n,), end (n,)) per window, decoded with `qa_decode`)."""
    if data.kind == "classification":
        preds = np.stack(outputs)
        if data.regression:
            return M.regression_metrics(data.reference, preds[:, 0])
        return M.classification_metrics(data.reference, preds)
    if data.kind == "ner":
        true_tags, pred_tags = [], []
        for (words, tags), f, logits in zip(data.reference, data.eval, outputs):
            names = [data.label_names[i] for i in logits.argmax(-1)]
            pred_tags.append(F.word_predictions(f["word_ids"], names, len(words), fill="O"))
            true_tags.append(tags)
        return M.entity_prf(true_tags, pred_tags)
    answers, _ = decode_answers(
        data.reference,
        data.eval,
        [o[0] for o in outputs],
        [o[1] for o in outputs],
        **(qa_decode or {}),
    )
    golds = {ex.id: [a["text"] for a in ex.answers] for ex in data.reference}
    return M.squad_em_f1(answers, golds)
