"""Optimizers for BERT: AdamW / LAMB with warmup + decay and a weight-decay mask.

Gradient accumulation is not here: the train step sums micro-batch grads before calling `tx.update`,
so one optimizer update always sees one (effective) batch.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from bert_jax.errors import BertJaxError
from bert_jax.training.sharding import param_path
from bert_jax.training.trainer_config import OptimizerConfig

DECAYS = ("linear", "cosine", "constant")
OPTIMIZERS = ("adamw", "lamb")

# Substrings of a param path that mark it as exempt from weight decay (compared lower-cased), as in
# the original BERT: biases and LayerNorm parameters are not decayed.
_NO_DECAY = ("bias", "norm")


def make_schedule(
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int,
    decay: str = "linear",
    end_lr_fraction: float = 0.0,
) -> optax.Schedule:
    """Linear warmup from 0 to `peak_lr` over `warmup_steps`, then decay to
    `peak_lr * end_lr_fraction` at `total_steps` ("linear", "cosine") or stay flat ("constant")."""
    if decay not in DECAYS:
        raise BertJaxError(f"optimizer.decay: expected one of {DECAYS}, got {decay!r}")
    if total_steps <= 0:
        raise BertJaxError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise BertJaxError(
            f"optimizer.warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}"
        )
    end_lr = peak_lr * end_lr_fraction
    decay_steps = total_steps - warmup_steps
    warmup = optax.linear_schedule(0.0, peak_lr, max(warmup_steps, 1))
    if decay == "constant" or decay_steps == 0:
        after = optax.constant_schedule(peak_lr)
    elif decay == "linear":
        after = optax.linear_schedule(peak_lr, end_lr, decay_steps)
    else:
        after = optax.cosine_decay_schedule(peak_lr, decay_steps, alpha=end_lr_fraction)
    # With warmup_steps=0 the boundary is 0, so step 0 already uses the decay schedule (= peak_lr).
    return optax.join_schedules([warmup, after], [warmup_steps])


def weight_decay_mask(params: Any) -> Any:
    """Same-structure pytree of bools: True where weight decay applies (kernels, embeddings),
    False for biases, norm parameters and any leaf with ndim <= 1.

    Works on `nnx.State` (leaves sit under the Variable's `.value`) and on nested dicts.
    """

    def decays(path, leaf) -> bool:
        name = param_path(path).lower()
        return not (any(s in name for s in _NO_DECAY) or getattr(leaf, "ndim", 0) <= 1)

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    *,
    name: str = "adamw",
    learning_rate: float | optax.Schedule,
    weight_decay: float = 0.01,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    clip_norm: float | None = 1.0,
    params_for_mask: Any = None,
) -> optax.GradientTransformation:
    """`clip_by_global_norm(clip_norm)` then AdamW or LAMB, decaying only where
    `weight_decay_mask` is True. `clip_norm` None or <= 0 disables clipping.

    `params_for_mask` (optional) precomputes the mask; otherwise it is derived from the update tree
    at each step, which has the same paths and shapes as the params.
    """
    if name not in OPTIMIZERS:
        raise BertJaxError(f"optimizer.name: expected one of {OPTIMIZERS}, got {name!r}")
    mask = weight_decay_mask if params_for_mask is None else weight_decay_mask(params_for_mask)
    factory = optax.adamw if name == "adamw" else optax.lamb
    opt = factory(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
    if clip_norm is None or clip_norm <= 0:
        return opt
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt)


def from_config(
    config: OptimizerConfig, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`(tx, schedule)` for the typed `optimizer` settings over `total_steps` updates."""
    schedule = make_schedule(
        peak_lr=config.learning_rate,
        total_steps=total_steps,
        warmup_steps=config.warmup_steps,
        decay=config.decay,
        end_lr_fraction=config.end_lr_fraction,
    )
    tx = make_optimizer(
        name=config.name,
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        clip_norm=config.clip_norm,
    )
    return tx, schedule
