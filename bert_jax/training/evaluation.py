"""Fine-tuning evaluation: the objective's loss and the task's scores over the evaluation set, and
which metric decides the kept model.

One forward, `eval_outputs`, serves both a model loaded from disk (`jit_forward`, cached per model
structure) and the params of a running Trainer (`params_forward`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from bert_jax.model.forward import head_outputs
from bert_jax.tasks.batching import rows_of, sorted_batches
from bert_jax.tasks.datasets import TaskData, score
from bert_jax.training.objectives import Objective


def eval_outputs(model: nnx.Module, *, objective: Objective, **batch):
    """(head outputs, loss sums, counts) of `batch`; a module-level function so that compiled
    forwards are cached (`jit_forward(model, eval_outputs, objective=...)`)."""
    outputs = head_outputs(model, batch)
    return outputs, objective.sums(outputs, batch)[0], objective.counts(batch)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _params_eval(graphdef, objective, params, rest, batch):
    return eval_outputs(nnx.merge(graphdef, params, rest), objective=objective, **batch)


def params_forward(model: nnx.Module, objective: Objective) -> Callable:
    """`forward(params, batch)`: `eval_outputs` of `model`'s eval-mode graph holding a Trainer's
    `params` (call it before the Trainer switches `model` to train mode)."""
    model.eval()
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    return lambda params, batch: _params_eval(graphdef, objective, params, rest, batch)


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
    """How QA answers are decoded from start/end logits (`config.qa`)."""
    q = config.qa
    return dict(
        n_best=int(q.n_best),
        max_answer_length=int(q.max_answer_length),
        null_threshold=float(q.null_threshold),
        version_2=bool(q.version_2),
    )


def best_metric_name(config, data: TaskData) -> str:
    """`train.best_metric`, or the task's usual one: accuracy (MCC for CoLA), Pearson, F1."""
    if config.train.best_metric:
        return config.train.best_metric
    if data.kind != "classification":
        return "f1"
    if data.regression:
        return "pearson"
    cola = config.data.source == "glue" and config.data.glue_task == "cola"
    return "mcc" if cola else "accuracy"


def is_better(name: str, value: float, best: float | None) -> bool:
    """Whether `value` of metric `name` beats `best` (lower is better for losses and MSE; NaN
    never wins)."""
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if name.endswith("loss") or name == "mse" else value > best
