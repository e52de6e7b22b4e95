"""Running a model outside training: one compiled forward per (model structure, function, shapes).

`jit_forward(model, fn, **options)` jits `fn(model, **options, **batch)` through a module-level
`jax.jit` whose static arguments are the model's graphdef, `fn` and `options`: a second `embed()`,
a new `Predictor` or an evaluation of the same model reuses the compiled code instead of tracing
again. `fn` must be a module-level function (a fresh closure or lambda would miss the cache) and
`options` hashable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.model.modeling import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from bert_jax.model.modernbert import (
    ModernBertForQuestionAnswering,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
)

# Head classes by task (every family's).
_SEQUENCE = (BertForSequenceClassification, ModernBertForSequenceClassification)
_TOKEN = (BertForTokenClassification, ModernBertForTokenClassification)
_QA = (BertForQuestionAnswering, ModernBertForQuestionAnswering)

# Every input the encoder takes; a batch may hold any subset (plus labels etc., ignored).
ENCODER_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "segment_ids", "position_ids")


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _forward(graphdef, fn, options, state, batch):
    return fn(nnx.merge(graphdef, state), **dict(options), **batch)


def jit_forward(model: nnx.Module, fn: Callable, **options) -> Callable:
    """`forward(**batch)` = jitted `fn(model, **options, **batch)` with the model in eval mode."""
    model.eval()
    graphdef, state = nnx.split(model)
    frozen = tuple(sorted(options.items()))
    return lambda **batch: _forward(graphdef, fn, frozen, state, batch)


def encoder_inputs(batch: dict) -> dict:
    """The encoder's inputs present in `batch`."""
    return {k: batch[k] for k in ENCODER_INPUTS if k in batch}


def head_outputs(model, batch) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The head's fp32 outputs for a batch dict (extra keys such as labels are ignored)."""
    return model(**encoder_inputs(batch))


def task_of(model) -> str:
    """ "classification", "regression", "ner" or "qa" from the model's head class."""
    if isinstance(model, _SEQUENCE):
        regression = model.config.num_labels == 1 or model.config.problem_type == "regression"
        return "regression" if regression else "classification"
    if isinstance(model, _TOKEN):
        return "ner"
    if isinstance(model, _QA):
        return "qa"
    raise BertJaxError(
        f"{type(model).__name__} has no task head; predict needs BertForSequenceClassification, "
        "BertForTokenClassification or BertForQuestionAnswering (`bert-jax embed` for embeddings)"
    )


def check_vocab(model: nnx.Module, tokenizer, where: str) -> None:
    """A tokenizer with more ids than the model's embedding table would feed it out-of-range ids
    (gathers that silently return garbage or NaN): refuse the pair with one line."""
    if tokenizer.vocab_size > model.config.vocab_size:
        raise BertJaxError(
            f"{where}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size "
            f"is {model.config.vocab_size}; this tokenizer does not belong to this model"
        )


def max_positions(config) -> int:
    """Longest input a config's positions serve: max_position_embeddings, less RoBERTa's
    offset (its 514 positions hold 512 tokens)."""
    return getattr(config, "max_sequence_length", config.max_position_embeddings)


def max_length_for(model: nnx.Module, tokenizer) -> int:
    """Longest input the model takes: texts beyond it are truncated (documented behaviour)."""
    limit = max_positions(model.config)
    return min(limit, tokenizer.model_max_length or limit)
