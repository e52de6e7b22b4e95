"""Batched, jitted prediction with a fine-tuned model, two lines in a notebook:

    predictor = Predictor.from_pretrained("runs/tweets/model")
    predictor.predict(["what a day!", "meh"])  # [{"label", "score", "scores"}, ...]

The head in config.json decides the output: classification (label, score, all scores),
regression (value), NER (entities with text, label, char start/end, score), extractive QA (answer,
start, end, score; give questions and contexts). Inputs are tokenised together, sorted by length
and cut into batches; each batch is padded to one of a few lengths (`length_buckets`, four per
doubling) and a power-of-two number of rows, so a handful of compilations serve any input.
Results come back in
input order and equal (to float rounding) predicting one text at a time.

"""

from __future__ import annotations

import jax
import numpy as np

from bert_jax.errors import BertJaxError
from bert_jax.model import load_model
from bert_jax.model.forward import (
    check_vocab,
    encoder_inputs,
    head_outputs,
    jit_forward,
    max_positions,
    task_of,
)
from bert_jax.tasks.batching import length_buckets, rows_of, sorted_batches
from bert_jax.tasks.features import (
    check_doc_stride,
    encode_classification,
    encode_ner,
    ner_predictions_to_entities,
    prepare_qa_features,
    word_predictions,
)
from bert_jax.tasks.postprocess import decode_answers
from bert_jax.tasks.readers import QAExample
from bert_jax.tokenizer import BertTokenizer, check_texts

# --------------------------------------------------------------------------------------------------
# Predictor


class Predictor:
    """Predictions from a fine-tuned model (see the module docstring for the outputs).

    `max_length` defaults to the tokenizer's model_max_length (capped by the model's positions;
    384 for QA). QA windows long contexts with `doc_stride` (default min(128, max_length / 3)
    tokens shared by consecutive windows) and decodes with `n_best`,
    `max_answer_length` and, with `version_2`, the null-answer `null_threshold`.
    """

    def __init__(
        self,
        model,
        tokenizer: BertTokenizer,
        *,
        batch_size: int = 64,
        max_length: int | None = None,
        doc_stride: int | None = None,
        max_query_length: int = 64,
        n_best: int = 20,
        max_answer_length: int = 30,
        null_threshold: float = 0.0,
        version_2: bool = False,
    ):
        self.task = task_of(model)
        check_vocab(model, tokenizer, "predict")
        self.model, self.tokenizer = model, tokenizer
        self.labels = list(model.config.id2label)
        limit = max_positions(model.config)
        default = 384 if self.task == "qa" else (tokenizer.model_max_length or limit)
        self.max_length = min(int(max_length or default), limit)
        self.buckets = length_buckets(self.max_length, per_octave=4)  # compiled once each
        self.batch_size = int(batch_size)
        if doc_stride is None:
            doc_stride = min(128, self.max_length // 3)
        self.qa = dict(
            doc_stride=check_doc_stride(doc_stride, self.max_length),
            max_query_length=max_query_length,
        )
        self.decode = dict(
            n_best=n_best,
            max_answer_length=max_answer_length,
            null_threshold=null_threshold,
            version_2=version_2,
        )

        self._forward = jit_forward(model, _task_outputs, task=self.task)

    @classmethod
    def from_pretrained(cls, directory, *, dtype: str | None = None, **kwargs) -> Predictor:
        """Load the head named in `directory`/config.json and the directory's tokenizer."""
        model = load_model(directory, dtype=dtype)
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
            results = self._predict_qa(
                check_texts(questions, "question"), check_texts(contexts, "context")
            )
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
        for index, batch in sorted_batches(
            features, self.batch_size, self.buckets, self.tokenizer.pad_id, fixed_rows=False
        ):
            out = jax.device_get(self._forward(**encoder_inputs(batch)))
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
            results.append(
                {
                    "label": self.labels[best],
                    "score": float(probs[best]),
                    "scores": {name: float(p) for name, p in zip(self.labels, probs)},
                }
            )
        return results

    def _predict_ner(self, texts) -> list[dict]:
        offsets = [_word_spans(self.tokenizer.backend.pre_tokenizer, t) for t in texts]
        words = [[t[a:b] for a, b in offs] for t, offs in zip(texts, offsets)]
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
        examples = [
            QAExample(str(i), q, c, []) for i, (q, c) in enumerate(zip(questions, contexts))
        ]
        features = prepare_qa_features(self.tokenizer, examples, self.max_length, **self.qa)
        outputs = self._run(features, token_level=True)
        _, details = decode_answers(
            examples, features, [o[0] for o in outputs], [o[1] for o in outputs], **self.decode
        )
        return [details[ex.id]["prediction"] for ex in examples]


def _task_outputs(model, task: str, **batch):
    """Probabilities (classification, NER), values (regression) or (start, end) logits (QA)."""
    out = head_outputs(model, batch)
    if task in ("classification", "ner"):
        return jax.nn.softmax(out, axis=-1)
    return out[..., 0] if task == "regression" else out


def _word_spans(pre_tokenizer, text: str) -> list[tuple[int, int]]:
    """(start, end) of each word of `text` as the tokenizer's pre-tokeniser splits it, without
    surrounding spaces (byte-level BPE and Metaspace words carry the space before them), so the
    words are encoded as NER training encodes its word lists."""
    spans = []
    for _, (start, end) in pre_tokenizer.pre_tokenize_str(text):
        word = text[start:end]
        start += len(word) - len(word.lstrip())
        end -= len(word) - len(word.rstrip())
        if end > start:
            spans.append((start, end))
    return spans or [(0, len(text))]


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
