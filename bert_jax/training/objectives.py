"""Objectives: what a batch means for a model, as loss sums and their counts.

The Trainer adds each loss term's sum over micro-batches and divides once by that term's count over
the *whole* batch, which it gets from `counts(batch)` before the model runs: k micro-batches give
exactly the gradient of one big batch. Every loss comes from training/losses.py — the functions the
parity tests check against transformers — and tests/test_objectives.py checks that each objective's
`combined_loss` equals those losses' means.

Objectives are frozen dataclasses: hashable, so one can be a static option of a jitted function
(`model.forward.jit_forward(model, fn, objective=...)`). Fine-tuning batches carry `weights` (B,):
0 marks padding rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.model.forward import encoder_inputs, head_outputs
from bert_jax.training import losses

Batch = Mapping[str, jax.Array]
Sums = dict[str, jax.Array]


class Objective(Protocol):
    """What the Trainer minimises. All sums are over the rows given, in float32."""

    @property
    def metric_counts(self) -> Mapping[str, str]:
        """Metric name → name of the count it is averaged over (e.g. accuracy → "mlm")."""

    def outputs(self, model: nnx.Module, batch: Batch) -> Any:
        """The model outputs `sums` needs (e.g. logits at the masked positions)."""

    def counts(self, batch: Batch) -> Sums:
        """Denominator of each loss term over `batch`, from the batch alone (no model)."""

    def sums(self, outputs: Any, batch: Batch) -> tuple[Sums, Sums]:
        """({term: summed loss}, {metric: summed value}) of `outputs` on `batch`."""


def combined_loss(sums: Mapping[str, jax.Array], counts: Mapping[str, jax.Array]) -> jax.Array:
    """The loss that is minimised: Σ over terms of sum / count (e.g. MLM mean + NSP mean)."""
    return sum(sums[k] / jnp.maximum(counts[k], 1.0) for k in sums)


def loss_sums(objective: Objective, model: nnx.Module, batch: Batch) -> tuple[Sums, Sums]:
    """`objective.sums` of the model's outputs on `batch`."""
    return objective.sums(objective.outputs(model, batch), batch)


@dataclasses.dataclass(frozen=True)
class MaskedLMObjective:
    """MLM (and optionally NSP). The MLM head runs only at `masked_positions`."""

    nsp: bool = False

    @property
    def metric_counts(self) -> dict[str, str]:
        return {"mlm_accuracy": "mlm"} | ({"nsp_accuracy": "nsp"} if self.nsp else {})

    def outputs(self, model, batch):
        """MLM logits (B, P, V), or (those, NSP logits (B, 2)) with `nsp`."""
        return model(masked_positions=batch["masked_positions"], **encoder_inputs(batch))

    def counts(self, batch):
        counts = {"mlm": jnp.sum(batch["masked_weights"].astype(jnp.float32))}
        if self.nsp:
            counts["nsp"] = jnp.sum(_real_rows(batch))
        return counts

    def sums(self, outputs, batch):
        mlm_logits, nsp_logits = outputs if self.nsp else (outputs, None)
        ids, weights = batch["masked_ids"], batch["masked_weights"].astype(jnp.float32)
        terms = {"mlm": losses.mlm_loss_sum(mlm_logits, ids, weights)[0]}
        # "label logit is the max" == argmax hit (up to exact ties), without argmax's slow CPU path.
        label_logit = jnp.take_along_axis(mlm_logits, ids[..., None], axis=-1)[..., 0]
        hit = label_logit >= jnp.max(mlm_logits, axis=-1)
        metrics = {"mlm_accuracy": jnp.sum(hit * weights)}
        if self.nsp:
            real, labels = _real_rows(batch), batch["next_sentence_label"]
            terms["nsp"] = losses.classification_loss_sum(nsp_logits, labels, real)[0]
            metrics["nsp_accuracy"] = jnp.sum((jnp.argmax(nsp_logits, -1) == labels) * real)
        return terms, metrics


def _real_rows(batch) -> jax.Array:
    """(B,) 1 for rows holding a sequence, 0 for padding rows (their [CLS] is not attended)."""
    return batch["attention_mask"][:, 0].astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class ClassificationObjective:
    """Cross-entropy over classes, or squared error when `regression` (one output)."""

    regression: bool = False

    @property
    def metric_counts(self) -> dict[str, str]:
        return {} if self.regression else {"accuracy": "classification"}

    def outputs(self, model, batch):
        return head_outputs(model, batch)  # (B, C)

    def counts(self, batch):
        return {"classification": jnp.sum(batch["weights"].astype(jnp.float32))}

    def sums(self, logits, batch):
        labels, w = batch["labels"], batch["weights"].astype(jnp.float32)
        terms = {"classification": losses.classification_loss_sum(logits, labels, w)[0]}
        if self.regression:
            return terms, {}
        return terms, {"accuracy": jnp.sum(w * (jnp.argmax(logits, -1) == labels))}


@dataclasses.dataclass(frozen=True)
class TokenClassificationObjective:
    """Cross-entropy over tokens whose label is not IGNORE_INDEX (first sub-token of each word)."""

    @property
    def metric_counts(self) -> dict[str, str]:
        return {"token_accuracy": "ner"}

    def outputs(self, model, batch):
        return head_outputs(model, batch)  # (B, L, C)

    def counts(self, batch):
        return {"ner": jnp.sum(losses.token_weights(batch["labels"]))}

    def sums(self, logits, batch):
        labels = batch["labels"]
        valid = losses.token_weights(labels)
        hit = jnp.argmax(logits, -1) == labels  # never at IGNORE_INDEX (-100)
        total = losses.token_classification_loss_sum(logits, labels)[0]
        return {"ner": total}, {"token_accuracy": jnp.sum(valid * hit)}


@dataclasses.dataclass(frozen=True)
class QAObjective:
    """(CE(start) + CE(end)) / 2 per window; windows without the answer point at [CLS] (0)."""

    @property
    def metric_counts(self) -> dict[str, str]:
        return {}

    def outputs(self, model, batch):
        return head_outputs(model, batch)  # (start (B, L), end (B, L))

    def counts(self, batch):
        length = batch["input_ids"].shape[1]
        start, end = batch["start_positions"], batch["end_positions"]
        return {"qa": losses.qa_count(start, end, length, batch["weights"])}

    def sums(self, logits, batch):
        start, end = batch["start_positions"], batch["end_positions"]
        return {"qa": losses.qa_loss_sum(*logits, start, end, batch["weights"])[0]}, {}


def make_objective(kind: str, regression: bool = False) -> Objective:
    """The objective of a fine-tuning task kind: "classification", "ner" or "qa"."""
    if kind == "classification":
        return ClassificationObjective(regression)
    return TokenClassificationObjective() if kind == "ner" else QAObjective()
