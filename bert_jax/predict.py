"""Batched, jitted prediction with a fine-tuned model, two lines in a notebook:

    predictor = Predictor.from_pretrained("runs/tweets/model")
    predictor.predict(["what a day!", "meh"])  # [{"label", "score", "scores"}, ...]

The head in config.json decides the output: classification (label, score, all scores),
regression (value), NER (entities with text, label, char start/end, score), extractive QA (answer,
start, end, score; give questions and contexts). Inputs are tokenised together, sorted by length
and cut into batches; each batch is padded to one of a few lengths (`length_buckets`, four per
doubling) and a power-of-two number of rows, so a handful of compilations serve any input. Results come back in
input order and equal (to float rounding) predicting one text at a time.

The batching helpers here are shared with fine-tuning's evaluation (bert_jax.finetune).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import numpy as np

from bert_jax.errors import BertJaxError
from bert_jax.tasks.datasets import check_doc_stride
from bert_jax.tasks.features import (
    IGNORE_INDEX,
    encode_classification,
    encode_ner,
    ner_predictions_to_entities,
    pad_batch,
    prepare_qa_features,
    word_predictions,
)
from bert_jax.tasks.qa_postprocess import decode_answers
from bert_jax.tasks.readers import QAExample
from bert_jax.tokenizer import BertTokenizer, check_texts

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


# --------------------------------------------------------------------------------------------------
# Length-bucketed batches (also used by fine-tuning)


def length_buckets(max_length: int, smallest: int = 16, per_octave: int = 2) -> list[int]:
    """Padded lengths a batch may take: `per_octave` steps between consecutive powers of two from
    `smallest`, rounded up to multiples of 8, below `max_length`; then `max_length` rounded up to a
    multiple of 8. Past 32 tokens, rounding up to a bucket pads a text by at most a third
    (per_octave=2) or a fifth (per_octave=4).
    per_octave=2 (training: few shapes to compile): 64 → [16, 24, 32, 48, 64];
    384 → [16, 24, 32, 48, 64, 96, 128, 192, 256, 384].
    per_octave=4 (prediction): 128 → [16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128]."""
    top = -(-int(max_length) // 8) * 8
    sizes, power = {smallest}, smallest
    while power < top:
        step = power // per_octave
        sizes.update(-(-(power + k * step) // 8) * 8 for k in range(1, per_octave + 1))
        power *= 2
    return sorted(s for s in sizes if s < top) + [top]


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket holding `length` tokens (the largest if none does)."""
    return next((b for b in buckets if b >= length), buckets[-1])


def make_batch(features: Sequence[dict], index: Sequence[int], rows: int, length: int,
               pad_id: int) -> dict[str, np.ndarray]:
    """Features `index` padded to (rows, length). Rows past len(index) repeat the first feature with
    `weights` 0 (and token labels -100), so every batch of a run has one of a few fixed shapes."""
    index = list(index)
    chosen = [features[i] for i in index] + [features[index[0]]] * (rows - len(index))
    batch = pad_batch(chosen, pad_id, multiple_of=length, max_length=length)
    batch["weights"] = (np.arange(rows) < len(index)).astype(np.float32)  # (rows,) 0 = padding row
    if "labels" in batch and batch["labels"].ndim == 2:
        batch["labels"][len(index):] = IGNORE_INDEX
    return batch


def sorted_batches(features: Sequence[dict], batch_size: int, buckets: Sequence[int], pad_id: int,
                   *, fixed_rows: bool = True) -> Iterator[tuple[np.ndarray, dict]]:
    """(indices, batch) over all features in length order.

    fixed_rows=True (evaluation): every batch has `batch_size` rows. fixed_rows=False (prediction):
    a batch has the next power of two at or above its size, and is also cut before a feature whose
    padded length is more than twice the batch's first, so one long outlier does not pad a whole
    batch of short texts to its length."""
    lengths = np.array([len(f["input_ids"]) for f in features])
    padded = np.array([bucket_for(n, buckets) for n in lengths])
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        stop = min(start + batch_size, len(order))
        if not fixed_rows:  # sorted: the first feature past twice the first padded length
            stop = start + int(np.searchsorted(padded[order[start:stop]],
                                               2 * padded[order[start]], side="right"))
        index = order[start:stop]
        rows = batch_size if fixed_rows else min(batch_size, 1 << (len(index) - 1).bit_length())
        yield index, make_batch(features, index, rows, padded[index].max(), pad_id)
        start = stop


def rows_of(out, index, lengths, token_level: bool) -> list:
    """Split a batch output (array or tuple of arrays, leading dim = rows) into per-example values;
    token-level outputs are cut to each example's own length."""
    if isinstance(out, (tuple, list)):
        parts = [rows_of(o, index, lengths, token_level) for o in out]
        return list(zip(*parts))
    out = np.asarray(out)
    return [out[j, :lengths[i]] if token_level else out[j] for j, i in enumerate(index)]


def head_outputs(model, batch) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The head's fp32 outputs for a batch dict (extra keys such as labels are ignored)."""
    return model(**{k: batch[k] for k in MODEL_INPUTS})


# --------------------------------------------------------------------------------------------------
# Predictor


def task_of(model) -> str:
    """"classification", "regression", "ner" or "qa" from the model's head class."""
    from bert_jax.model import (
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
    )

    if isinstance(model, BertForSequenceClassification):
        regression = model.config.num_labels == 1 or model.config.problem_type == "regression"
        return "regression" if regression else "classification"
    if isinstance(model, BertForTokenClassification):
        return "ner"
    if isinstance(model, BertForQuestionAnswering):
        return "qa"
    raise BertJaxError(
        f"{type(model).__name__} has no task head; predict needs BertForSequenceClassification, "
        "BertForTokenClassification or BertForQuestionAnswering (`bert-jax embed` for embeddings)"
    )


class Predictor:
    """Predictions from a fine-tuned model (see the module docstring for the outputs).

    `max_length` defaults to the tokenizer's model_max_length (capped by the model's positions;
    384 for QA). QA windows long contexts with `doc_stride` (default min(128, max_length / 3)
    tokens shared by consecutive windows) and decodes with `n_best`,
    `max_answer_length` and, with `version_2`, the null-answer `null_threshold`.
    """

    def __init__(self, model, tokenizer: BertTokenizer, *, batch_size: int = 64,
                 max_length: int | None = None, doc_stride: int | None = None,
                 max_query_length: int = 64,
                 n_best: int = 20, max_answer_length: int = 30, null_threshold: float = 0.0,
                 version_2: bool = False):
        from bert_jax.inference import jit_forward

        self.task = task_of(model)
        self.model, self.tokenizer = model, tokenizer
        self.labels = list(model.config.id2label)
        limit = model.config.max_position_embeddings
        default = 384 if self.task == "qa" else (tokenizer.model_max_length or limit)
        self.max_length = min(int(max_length or default), limit)
        self.buckets = length_buckets(self.max_length, per_octave=4)  # compiled once each
        self.batch_size = int(batch_size)
        if doc_stride is None:
            doc_stride = min(128, self.max_length // 3)
        self.qa = dict(doc_stride=check_doc_stride(doc_stride, self.max_length),
                       max_query_length=max_query_length)
        self.decode = dict(n_best=n_best, max_answer_length=max_answer_length,
                           null_threshold=null_threshold, version_2=version_2)

        def forward(m, **batch):
            out = head_outputs(m, batch)
            if self.task in ("classification", "ner"):
                return jax.nn.softmax(out, axis=-1)
            return out[..., 0] if self.task == "regression" else out

        self._forward = jit_forward(model, forward)

    @classmethod
    def from_pretrained(cls, directory, *, dtype: str | None = None, **kwargs) -> Predictor:
        """Load the head named in `directory`/config.json and the directory's tokenizer."""
        from bert_jax import hf

        model = hf.model_class_for(directory).from_pretrained(directory, dtype=dtype)
        task_of(model)  # fail before loading the tokenizer when there is no head
        return cls(model, BertTokenizer.from_pretrained(directory), **kwargs)

    def predict(self, texts=None, pairs=None, *, questions=None, contexts=None):
        """Classification/regression: `texts` (and optional `pairs`). NER: `texts`. QA: `questions`
        and `contexts` (or `texts` of {"question", "context"} dicts). Records given as dicts
        ({"text", "text_pair"}) work too. One input (a str or a dict) gives one result dict,
        a list gives a list."""
        single = isinstance(texts, (str, dict)) or isinstance(questions, str)
        if single:
            texts = None if texts is None else [texts]
            pairs = None if pairs is None else [pairs]
            questions = None if questions is None else [questions]
            contexts = None if contexts is None else [contexts]
        if texts is not None and len(texts) and isinstance(texts[0], dict):
            texts, pairs, questions, contexts = _from_records(texts, self.task)
        if self.task == "qa":
            if questions is None or contexts is None:
                raise BertJaxError("a QA model needs questions and contexts")
            results = self._predict_qa(check_texts(questions, "question"),
                                       check_texts(contexts, "context"))
        elif texts is None:
            raise BertJaxError(f"a {self.task} model needs texts")
        elif self.task == "ner":
            results = self._predict_ner(check_texts(texts, "text"))
        else:
            results = self._predict_classification(texts, pairs)
        return results[0] if single else results

    # ---- per task -------------------------------------------------------------------------------
    def _run(self, features: list[dict], token_level: bool) -> list:
        outputs = [None] * len(features)
        lengths = [len(f["input_ids"]) for f in features]
        for index, batch in sorted_batches(features, self.batch_size, self.buckets,
                                           self.tokenizer.pad_id, fixed_rows=False):
            out = jax.device_get(self._forward(**{k: batch[k] for k in MODEL_INPUTS}))
            for i, value in zip(index, rows_of(out, index, lengths, token_level)):
                outputs[i] = value
        return outputs

    def _predict_classification(self, texts, pairs) -> list[dict]:
        texts = check_texts(texts, "text")
        if pairs is not None:
            pairs = check_texts(pairs, "pair")
            if len(pairs) != len(texts):
                raise BertJaxError(f"got {len(texts)} texts but {len(pairs)} pairs")
        features = encode_classification(self.tokenizer, texts, pairs, self.max_length)
        if not features:
            return []
        outputs = self._run(features, token_level=False)
        if self.task == "regression":
            return [{"value": float(v)} for v in outputs]
        results = []
        for probs in outputs:
            best = int(np.argmax(probs))
            results.append({"label": self.labels[best], "score": float(probs[best]),
                            "scores": {name: float(p) for name, p in zip(self.labels, probs)}})
        return results

    def _predict_ner(self, texts) -> list[dict]:
        pre = self.tokenizer.backend.pre_tokenizer
        split = [pre.pre_tokenize_str(t) for t in texts]  # [(word, (start, end))] on the raw text
        words = [[w for w, _ in s] or [t.strip()] for s, t in zip(split, texts)]
        offsets = [[o for _, o in s] or [(0, len(t))] for s, t in zip(split, texts)]
        features = encode_ner(self.tokenizer, words, None, {}, self.max_length)
        outputs = self._run(features, token_level=True)
        results = []
        for text, ws, offs, f, probs in zip(texts, words, offsets, features, outputs):
            best = probs.argmax(-1)
            names = [self.labels[b] for b in best]
            tags = word_predictions(f["word_ids"], names, len(ws), fill="O")
            scores = word_predictions(f["word_ids"], probs.max(-1).tolist(), len(ws), fill=0.0)
            results.append({"entities": ner_predictions_to_entities(ws, tags, scores, offs, text)})
        return results

    def _predict_qa(self, questions, contexts) -> list[dict]:
        if len(questions) != len(contexts):
            raise BertJaxError(f"got {len(questions)} questions but {len(contexts)} contexts")
        examples = [QAExample(str(i), q, c, [])
                    for i, (q, c) in enumerate(zip(questions, contexts))]
        features = prepare_qa_features(self.tokenizer, examples, self.max_length, **self.qa)
        outputs = self._run(features, token_level=True)
        _, details = decode_answers(examples, features, [o[0] for o in outputs],
                                    [o[1] for o in outputs], **self.decode)
        return [qa_result(examples[i].id, details, self.decode) for i in range(len(examples))]


def qa_result(example_id: str, details: dict, decode: dict) -> dict:
    """{"answer", "start", "end", "score"} for one example from `decode_answers` details; the null
    answer ("" at -1, -1) when it wins under SQuAD v2 rules."""
    d = details[example_id]
    best = next((c for c in d["n_best"] if c["start"] >= 0), None)
    null = next((c for c in d["n_best"] if c["start"] < 0), None)
    if best is None or (decode.get("version_2") and d["null_score"] is not None
                        and d["null_score"] > best["score"] + decode.get("null_threshold", 0.0)):
        score = null["probability"] if null is not None else 0.0
        return {"answer": "", "start": -1, "end": -1, "score": float(score)}
    return {"answer": best["text"], "start": best["start"], "end": best["end"],
            "score": float(best["probability"])}


def _from_records(records, task: str):
    """Columns from dict records: {"text"[, "text_pair"]} or {"question", "context"}."""
    def column(key, required=True):
        values = []
        for i, r in enumerate(records):
            if not isinstance(r, dict) or (required and key not in r):
                raise BertJaxError(f"record {i}: expected a JSON object with {key!r}")
            values.append(r.get(key))
        return values

    if task == "qa":
        return None, None, column("question"), column("context")
    pairs = column("text_pair", required=False)
    return column("text"), (pairs if any(p is not None for p in pairs) else None), None, None

