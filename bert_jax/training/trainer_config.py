"""Typed settings of the Trainer and the optimizer, read once from an experiment ConfigDict.

`TrainerConfig.from_config(cfg, **overrides)` reads `cfg.train` and `cfg.optimizer` (see
training/defaults.py for every field with its meaning); fields a config lacks take the defaults
below, so hand-built configs (benchmarks, tests) need only the required ones. Overrides are values a
caller computes, e.g. fine-tuning's steps from epochs. No jax here: configs stay cheap to load.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bert_jax.errors import BertJaxError
from bert_jax.training import validation

_CONVERT = {"int": int, "float": float, "bool": bool, "str": str}


def _read(cls, block: Any, block_name: str, overrides: dict) -> dict:
    """Field values for dataclass `cls`: `overrides`, else `block` (a ConfigDict), else defaults;
    each converted to its annotated type (int, float, bool, str)."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    values, missing = {}, []
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif block is not None and f.name in block:
            convert = _CONVERT.get(str(f.type))
            value = block[f.name]
            values[f.name] = convert(value) if convert and value is not None else value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            missing.append(f.name)
    if missing:
        raise BertJaxError(f"config.{block_name} is missing field(s): {', '.join(missing)}")
    return values


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """`config.optimizer`: AdamW/LAMB, warmup then decay (training/optim.py)."""

    name: str  # adamw | lamb
    learning_rate: float  # peak, after warmup
    weight_decay: float  # not applied to biases and LayerNorm
    warmup_steps: int  # linear warmup from 0, in [0, steps]
    decay: str  # linear | cosine | constant
    clip_norm: float  # global-norm clipping; <= 0 disables
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    end_lr_fraction: float = 0.0  # learning rate at the last step, as a share of the peak

    @classmethod
    def from_config(cls, optimizer: Any, **overrides) -> OptimizerConfig:
        """From the `optimizer` ConfigDict; `overrides` replace fields (e.g. a computed warmup)."""
        values = _read(cls, optimizer, "optimizer", overrides)
        if values.get("clip_norm") is None:  # None meant "no clipping" in older configs
            values["clip_norm"] = 0.0
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """`config.train` as the Trainer reads it, plus the optimizer's settings."""

    steps: int  # optimizer updates in the whole run
    batch_size: int  # global, over all devices and hosts
    optimizer: OptimizerConfig
    grad_accumulation: int = 1  # micro-batches per step (exact)
    fsdp: int = 1  # >1 shards parameters and optimizer state over that many devices
    seed: int = 0  # dropout: fold_in(seed, step)
    log_every: int = 100  # steps between metrics.jsonl train lines
    eval_every: int = 1000  # steps between evaluations (and always at the end)
    eval_at_start: bool = False  # also evaluate the untrained model (step 0 of the curves)
    checkpoint_every: int = 1000  # steps between checkpoints (and always at the end)
    keep_checkpoints: int = 3
    progress: bool = True  # tqdm bar
    tensorboard: bool = False  # also write TensorBoard scalars to workdir/tensorboard

    def __post_init__(self):
        # Resolved values (fine-tuning's 0 = "derive it" is gone by now): pretraining's ranges.
        values = {f"train.{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)}
        validation.check_values(values, validation.PRETRAIN)

    @classmethod
    def from_config(cls, cfg: Any, **overrides) -> TrainerConfig:
        """From an experiment ConfigDict (`train` and `optimizer` blocks). `overrides` replace
        fields with values the caller computed (fine-tuning: steps, eval/checkpoint cadence and
        `optimizer=OptimizerConfig.from_config(cfg.optimizer, warmup_steps=...)`)."""
        if "optimizer" not in overrides:
            overrides["optimizer"] = OptimizerConfig.from_config(cfg.get("optimizer"))
        return cls(**_read(cls, cfg.get("train"), "train", overrides))
