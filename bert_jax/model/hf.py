"""The Hugging Face directory format, both ways: `config.json` + weights (+ tokenizer files).

Reads `model.safetensors`, sharded `model.safetensors.index.json`, or `pytorch_model.bin` (through
`torch.load(weights_only=True)`, never pickle); keys with or without the family's prefix (`bert.`,
`roberta.`, ...); legacy `gamma`/`beta` LayerNorm names; tied copies of the output embeddings.
Writes `config.json` + `model.safetensors` (+ tokenizer) atomically, with exactly the keys
`transformers.<Family>For<Head>` expects.

Our parameter paths and HF keys differ only by the family's table (`hf_key`, formats.py); Linear
kernels are stored (in, out) by Flax and (out, in) by PyTorch, so they are transposed both ways.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.io import read_json, staged_dir
from bert_jax.model.config import BertConfig
from bert_jax.model.formats import BUFFER_KEY, ENCODER_KEY, FORMATS

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
# Everything `save_pretrained` writes (the tokenizer's files included): a directory holding only
# these may be replaced by a new save; one holding anything else is the user's.
SAVED_FILES = frozenset(
    {
        "config.json",
        SAFETENSORS,
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
)

_LEAF_TABLE = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}

_BUFFER_KEY = re.compile(BUFFER_KEY)  # buffers HF checkpoints may hold: not parameters
_ENCODER_KEY = re.compile(ENCODER_KEY)


def hf_key(path: tuple, model_type: str = "bert") -> tuple[str, bool]:
    """Our parameter path → (HF key, transpose?). E.g. ('bert','layers',0,'attention','query',
    'kernel') → ('bert.encoder.layer.0.attention.self.query.weight', True); with model_type
    "distilbert" → ('distilbert.transformer.layer.0.attention.q_lin.weight', True)."""
    fmt = FORMATS[model_type]
    *module, leaf = (str(p) for p in path)
    prefix = ""
    if module and module[0] == "bert":  # a head's encoder: HF's base_model_prefix
        prefix, module = fmt.prefix + ".", module[1:]
    dotted = ".".join(module)
    for pattern, replacement in fmt.modules:
        if re.fullmatch(pattern, dotted):
            name = re.sub(pattern, replacement, dotted)
            return f"{prefix}{name}.{_LEAF_TABLE[leaf]}", leaf == "kernel"
    raise KeyError(f"no HF name for parameter {'/'.join(map(str, path))}")


def canonical_key(key: str, with_prefix: bool, model_type: str = "bert") -> str:
    """A checkpoint key in our canonical HF spelling: legacy LayerNorm names fixed, the family's
    prefix (`bert.`, `roberta.`, ...) present exactly when the target model is a head class."""
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    prefix = FORMATS[model_type].prefix + "."
    has_prefix = key.startswith(prefix)
    if with_prefix and not has_prefix and _ENCODER_KEY.match(key):
        return prefix + key
    if not with_prefix and has_prefix:
        return key[len(prefix) :]
    return key


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as e:  # safetensors raises SafetensorError / OSError for bad headers
        raise BertJaxError(f"{path}: not a valid safetensors file ({e})") from None


def _load_torch_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise BertJaxError(
            f"{path}: reading pytorch_model.bin needs torch (pip install torch); "
            "or convert the checkpoint to model.safetensors"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BertJaxError(f"{path}: not a readable PyTorch state dict ({e})") from None
    out = {}
    for key, tensor in state.items():
        if tensor.dtype == torch.bfloat16:
            import ml_dtypes

            out[key] = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[key] = tensor.numpy()
    return out


def read_weights(directory: str) -> dict[str, np.ndarray]:
    """All tensors of an HF model directory, by their stored names."""
    single = os.path.join(directory, SAFETENSORS)
    index = os.path.join(directory, SAFETENSORS_INDEX)
    if os.path.isfile(single):
        return _load_safetensors(single)
    if os.path.isfile(index):
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise BertJaxError(f"{index}: expected JSON with a 'weight_map' object")
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(directory, shard)
            if not os.path.isfile(shard_path):
                raise BertJaxError(f"{index}: shard {shard} is missing from {directory}")
            tensors.update(_load_safetensors(shard_path))
        return tensors
    binary = os.path.join(directory, PYTORCH_BIN)
    if os.path.isfile(binary):
        return _load_torch_bin(binary)
    raise BertJaxError(
        f"{directory}: no weights found "
        f"(expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_BIN})"
    )


def read_config(directory: str) -> BertConfig:
    if not os.path.isdir(directory):
        raise BertJaxError(f"{directory}: not a directory (expected an HF-format model directory)")
    return BertConfig.from_json_file(os.path.join(directory, "config.json"))


def params_to_hf(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters as an HF state dict (numpy, PyTorch orientation)."""
    out = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key, transpose = hf_key(path, model.config.model_type)
        value = np.asarray(variable.get_value())
        out[key] = np.ascontiguousarray(value.T if transpose else value)
    return out


def load_hf_weights(model: nnx.Module, tensors: dict[str, np.ndarray], *, source: str) -> dict:
    """Copy HF tensors into `model` in place. Returns {"missing": [...], "unexpected": [...]}.

    Missing parameters keep their fresh initialisation (one warning names them); unexpected tensors
    are listed in a warning; a shape mismatch is an error naming the tensor and both shapes.
    """
    model_type = model.config.model_type
    with_prefix = hasattr(model, "bert")  # heads hold the encoder at .bert; BertModel is it
    available = {}
    for key, value in tensors.items():
        if not _BUFFER_KEY.fullmatch(key):
            available[canonical_key(key, with_prefix, model_type)] = value
    _resolve_ties(available, model_type, with_prefix, check=hasattr(model, "mlm"), source=source)
    return copy_tensors(
        model, available, lambda path: hf_key(path, model_type), source=source, family=model_type
    )


def copy_tensors(
    model: nnx.Module, available: dict[str, np.ndarray], key_of, *, source: str, family: str
) -> dict:
    """Copy `available` (canonical HF key → tensor) into `model`'s parameters, each found by
    `key_of(path) → (HF key, transpose?)`; the checks and warnings of `load_hf_weights`, whose
    caller the warnings point at. `family` names the model in the no-match error."""
    missing, used = [], set()
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key, transpose = key_of(path)
        if key not in available:
            missing.append(key)
            continue
        value = available[key].T if transpose else available[key]
        expected = variable.get_value().shape
        if value.shape != expected:
            raise BertJaxError(
                f"{source}: tensor {key} has shape {tuple(available[key].shape)}, the config "
                f"expects {tuple(expected[::-1] if transpose else expected)}"
            )
        variable.set_value(jnp.asarray(value, dtype=variable.get_value().dtype))
        used.add(key)
    if not used:
        raise BertJaxError(f"{source}: no {family} weights found (none of its tensor names match)")
    unexpected = sorted(set(available) - used)
    # stacklevel 4: past this helper and load_hf_weights, at the caller of from_pretrained.
    if missing:
        warnings.warn(
            f"{source}: newly initialised (not in the checkpoint): {', '.join(missing)}",
            stacklevel=4,
        )
    if unexpected:
        warnings.warn(
            f"{source}: unused tensors in the checkpoint: {', '.join(unexpected)}", stacklevel=4
        )
    return {"missing": missing, "unexpected": unexpected}


def _resolve_ties(available: dict, model_type: str, with_prefix: bool, *, check: bool, source):
    """Drop the checkpoint's copies of tied tensors (the MLM decoder = the word embeddings, its
    bias = the head's bias). A copy stands in for its original when that is absent (older
    checkpoints); with `check` (an MLM model) a copy that differs is an error, since our decoder
    is always tied."""
    for copy, original in FORMATS[model_type].tied:
        if copy not in available:
            continue
        value = available.pop(copy)
        original = canonical_key(original, with_prefix, model_type)
        if original not in available:
            available[original] = value
        elif check and (
            value.shape != available[original].shape
            or not np.array_equal(value, available[original])
        ):
            raise BertJaxError(
                f"{source}: {copy} differs from {original}; untied output embeddings are not "
                "supported"
            )


def from_pretrained(
    cls,
    directory: str,
    *,
    dtype: str | None = None,
    seed: int = 0,
    dont_load: Sequence[str] = (),
    **config_changes,
):
    """Build `cls` (a model class) from an HF directory. `dtype` sets the compute dtype;
    `config_changes` override config fields (e.g. id2label for a new classifier); tensors whose
    HF key matches a `dont_load` regex keep their fresh initialisation (e.g. a new head)."""
    directory = os.fspath(directory)
    config = read_config(directory)
    if config.model_type != cls.family():
        raise BertJaxError(
            f"{directory}: config.json holds a {config.model_type!r} model; {cls.__name__} reads "
            f"{cls.family()!r} (bert_jax.model.load_model picks the class for you)"
        )
    return build_and_load(
        cls, config, directory, load_hf_weights, dtype, seed, dont_load, config_changes
    )


def build_and_load(cls, config, directory, load, dtype, seed, dont_load, config_changes):
    """The tail of every family's from_pretrained: apply `dtype`/`config_changes` to `config`,
    build `cls`, and `load(model, tensors, source=directory)` the directory's weights but those
    matching a `dont_load` regex."""
    if dtype is not None:
        config_changes["dtype"] = dtype
    if config_changes:
        config = config.replace(**config_changes)
    tensors = read_weights(directory)
    if dont_load:
        drop = re.compile("|".join(f"(?:{p})" for p in dont_load))
        tensors = {k: v for k, v in tensors.items() if not drop.fullmatch(k)}

    def build() -> nnx.Module:
        return cls(config, rngs=nnx.Rngs(seed))

    # Shapes only: the weights the checkpoint holds are never randomly initialised, which saves
    # the model's size in transient memory and a compiled program per initialiser shape.
    model = nnx.eval_shape(build)
    load(model, tensors, source=directory)
    initialise_unset(model, build)
    return model


def initialise_unset(model: nnx.Module, build) -> None:
    """Give each variable of `model` (from `nnx.eval_shape(build)`) still holding only a shape —
    a new head, RNG streams — the value a fresh `build()` gives it, in one compiled program that
    computes just those."""
    unset = [
        (path, variable)
        for path, variable in nnx.to_flat_state(nnx.state(model))
        if isinstance(variable.get_value(), jax.ShapeDtypeStruct)
    ]
    if not unset:
        return
    paths = [path for path, _ in unset]

    def fresh_values():
        fresh = dict(nnx.to_flat_state(nnx.state(build())))
        return [fresh[path].get_value() for path in paths]

    for (_, variable), value in zip(unset, jax.jit(fresh_values)(), strict=True):
        variable.set_value(value)


def save_pretrained(
    model: nnx.Module,
    directory: str,
    tokenizer=None,
    extra_tensors=None,
    *,
    overwrite: bool = False,
) -> None:
    """Write `config.json`, `model.safetensors` (and tokenizer files) into `directory`, atomically:
    everything goes to a temporary sibling first, which then replaces `directory` — if that holds
    nothing but an earlier save's files (else an error, unless `overwrite`)."""
    from safetensors.numpy import save_file

    with staged_dir(directory, owned=SAVED_FILES, overwrite=overwrite) as tmp:
        tensors = params_to_hf(model)
        if extra_tensors:
            tensors.update(extra_tensors)
        save_file(tensors, os.path.join(tmp, SAFETENSORS), metadata={"format": "pt"})
        model.config.to_json_file(os.path.join(tmp, "config.json"), [type(model).__name__])
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
