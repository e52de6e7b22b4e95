"""The allowed range of every numeric experiment-config field, in one table, checked once.

`check_config(config, kind)` runs when `pretrain`, `finetune` or `sweep` loads a config, before
anything touches the disk: every value outside its range is named in one error line, e.g.
`data.mask_rate must be in (0, 1], got 1.5; train.batch_size must be >= 1, got 0`.
`TrainerConfig` checks its resolved fields against the same table (`check_values`), so the ranges
are written here only. No jax here: configs stay cheap to load.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from bert_jax.errors import BertJaxError


@dataclasses.dataclass(frozen=True)
class Range:
    """low <= x <= high (open ends exclude the bound; None: unbounded), or one of `also`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()  # documented special values outside the range, e.g. -1 = "derive it"
    optional: bool = False  # None allowed (e.g. clip_norm None = no clipping, in older configs)

    def holds(self, x: float) -> bool:
        if x in self.also:
            return True
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def describe(self) -> str:
        if self.low is None and self.high is None:
            text = "finite"
        elif self.high is None:
            text = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        else:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        return " or ".join([*(str(v) for v in self.also), text])


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def at_least(low: float, *, also: tuple = ()) -> Range:
    return Range(low, also=also)


POSITIVE = Range(0, low_open=True)  # > 0
FRACTION = Range(0, 1)  # [0, 1]
RATE = Range(0, 1, low_open=True)  # (0, 1]: a share that must not be empty
PROBABILITY = Range(0, 1, high_open=True)  # [0, 1): dropout, held-out shares, Adam betas

_COMMON = {
    "data.max_length": at_least(4),  # room for [CLS], [SEP] and some text
    "data.eval_fraction": PROBABILITY,
    "optimizer.learning_rate": POSITIVE,
    "optimizer.weight_decay": at_least(0),
    "optimizer.clip_norm": Range(0, optional=True),  # 0 disables
    "optimizer.b1": PROBABILITY,
    "optimizer.b2": PROBABILITY,
    "optimizer.eps": POSITIVE,
    "optimizer.end_lr_fraction": FRACTION,
    "train.batch_size": at_least(1),
    "train.grad_accumulation": at_least(1),
    "train.fsdp": at_least(1),
    "train.seed": at_least(0),
    "train.log_every": at_least(1),
    "train.keep_checkpoints": at_least(1),
}

PRETRAIN = {
    **_COMMON,
    "data.vocab_size": at_least(6),  # the 5 special tokens and one more
    "data.mask_rate": RATE,
    "data.max_predictions": at_least(1),
    "data.shard_mb": at_least(0),
    "data.prepare_workers": at_least(0),
    "model.max_position_embeddings": at_least(1),
    "model.hidden_dropout_prob": PROBABILITY,
    "model.attention_probs_dropout_prob": PROBABILITY,
    "optimizer.warmup_steps": at_least(0),
    "train.steps": at_least(1),
    "train.eval_every": at_least(1),
    "train.eval_batches": at_least(1),
    "train.checkpoint_every": at_least(1),
}

FINETUNE = {
    **_COMMON,
    "data.doc_stride": at_least(1),
    "data.max_query_length": at_least(1),
    "data.max_train_examples": at_least(0),  # 0 = all
    "data.max_eval_examples": at_least(0),
    "data.split_seed": at_least(0),
    "data.length_buckets": at_least(0),  # 0 = a fixed ladder
    "qa.n_best": at_least(1),
    "qa.max_answer_length": at_least(1),
    "qa.null_threshold": Range(),  # any finite number
    "optimizer.warmup_steps": at_least(0, also=(-1,)),  # -1 = warmup_fraction of all steps
    "optimizer.warmup_fraction": FRACTION,
    "train.epochs": at_least(1),
    "train.steps": at_least(0),  # 0 = epochs x steps per epoch
    "train.eval_batch_size": at_least(0),  # 0 = batch_size
    "train.eval_every": at_least(0),  # 0 = once per epoch
    "train.checkpoint_every": at_least(0),  # 0 = at every evaluation
    "train.stop_after": at_least(0),
}

TABLES = {"pretrain": PRETRAIN, "finetune": FINETUNE}


def _lookup(config: Any, dotted: str) -> tuple[bool, Any]:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) and not hasattr(node, "get"):
            return False, None
        if part not in node:
            return False, None
        node = node[part]
    return True, node


def _problem(name: str, value: Any, allowed: Range) -> str | None:
    if value is None and allowed.optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} must be a number {allowed.describe()}, got {value!r}"
    if not math.isfinite(value) or not allowed.holds(value):
        return f"{name} must be {allowed.describe()}, got {value!r}"
    return None


def check_values(values: Mapping[str, Any], table: Mapping[str, Range]) -> None:
    """Raise one BertJaxError listing every `values[name]` outside `table[name]` (names the table
    lacks, or values lacks, are not checked)."""
    problems = [
        p
        for name, value in values.items()
        if name in table and (p := _problem(name, value, table[name]))
    ]
    if problems:
        raise BertJaxError("; ".join(problems))


def check_config(config: Any, kind: str) -> None:
    """Check an experiment ConfigDict of `kind` ("pretrain" | "finetune") against its table and
    the few rules that tie two fields together. Fields a config lacks are not checked."""
    table = TABLES[kind]
    values = {}
    for name in table:
        found, value = _lookup(config, name)
        if found:
            values[name] = value
    check_values(values, table)
    if kind == "pretrain":
        _check_pretrain(config)


def _check_pretrain(config: Any) -> None:
    """Pretraining rules over two fields, checked here so that they fail before the tokenizer is
    trained (and the workdir holds results of a config that cannot run)."""
    d, m, o, t = config.data, config.model, config.optimizer, config.train
    if not m.get("init_from") and int(d.max_length) > int(m.max_position_embeddings):
        raise BertJaxError(
            f"data.max_length {d.max_length} exceeds the model's max_position_embeddings "
            f"{m.max_position_embeddings}"
        )
    if int(o.warmup_steps) > int(t.steps):
        raise BertJaxError(
            f"optimizer.warmup_steps must be <= train.steps ({t.steps}), got {o.warmup_steps}"
        )
