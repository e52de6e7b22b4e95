"""`bert-jax export`: a model directory → a serving directory that needs nothing but itself.

The inference function, task head included, is traced once with symbolic batch and length and
attention forced to XLA's portable ops (`portable_attention`: no cuDNN custom call), then
serialised:

  stablehlo  `jax.export` for CPU, CUDA and TPU at once (model.jax_export) with the weights as
             its first argument (weights.safetensors, flat names), so the artifact stays small
             and no constant folding slows its compilation;
  onnx       through jax2onnx (model.onnx, large weights in model.onnx.data), checked under
             onnxruntime before it is written (export_onnx.py).

Both directories hold export.json (task, input and output names in order, labels, max length)
and the tokenizer files. Inputs are (input_ids, token_type_ids, attention_mask), int32
(batch, length); outputs by task:

  classification  logits (B, C), probabilities (B, C)
  regression      values (B,)
  ner             logits (B, L, C), probabilities (B, L, C)
  qa              start_logits (B, L), end_logits (B, L)
  mlm             logits (B, L, V)
  bare encoder    last_hidden_state (B, L, D), mean_pooled (B, D) (mean over attention_mask)

`bert_jax.load_exported(dir)` runs either format (inference/exported.py).
"""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.io import read_json, staged_dir, write_json
from bert_jax.model import load_model
from bert_jax.model.attention import portable_attention
from bert_jax.model.forward import jit_forward, max_positions, task_of
from bert_jax.tokenizer import TOKENIZER_FILES, BertTokenizer

FORMATS = ("stablehlo", "onnx")
DTYPES = ("float32", "bfloat16")
PLATFORMS = ("cpu", "cuda", "tpu")
INPUTS = ("input_ids", "token_type_ids", "attention_mask")
OUTPUTS = {
    "classification": ("logits", "probabilities"),
    "regression": ("values",),
    "ner": ("logits", "probabilities"),
    "qa": ("start_logits", "end_logits"),
    "mlm": ("logits",),
    "embeddings": ("last_hidden_state", "mean_pooled"),
}
MANIFEST = "export.json"
STABLEHLO_FILE, WEIGHTS_FILE = "model.jax_export", "weights.safetensors"
ONNX_FILE, ONNX_DATA = "model.onnx", "model.onnx.data"  # as export_onnx writes them
# Everything an export may write: a directory holding only these may be replaced by a new export.
EXPORT_FILES = frozenset({MANIFEST, STABLEHLO_FILE, WEIGHTS_FILE, ONNX_FILE, ONNX_DATA})
# The self-check batch: a padded row so masking is part of what is compared.
_CHECK_SHAPE = (2, 16)


def export_model(
    model_dir,
    out,
    *,
    format: str = "stablehlo",
    dtype: str = "float32",
    overwrite: bool = False,
) -> dict:
    """Export the model in `model_dir` (an HF-format directory) to `out`; returns the manifest.

    `dtype` is the compute dtype baked into the artifact (weights stay fp32). `out` may be new,
    empty or an earlier export; anything else there is refused unless `overwrite`. Before the
    directory is published the artifact runs once on a padded batch and must match the model
    (max abs difference recorded in the manifest as `check_max_abs_diff`).
    """
    model_dir = os.fspath(model_dir)
    _check_options(format, dtype)
    with staged_dir(out, owned=EXPORT_FILES | TOKENIZER_FILES, overwrite=overwrite) as tmp:
        model = load_model(model_dir, dtype=dtype)
        model.eval()
        task = serving_task(model)
        tokenizer = BertTokenizer.from_pretrained_if_present(model_dir)
        if tokenizer is None:
            raise BertJaxError(
                f"{model_dir}: no tokenizer files (tokenizer.json or vocab.txt); an export "
                "bundles the tokenizer so a server needs nothing else"
            )
        manifest = _manifest(model_dir, model, tokenizer, task, format, dtype)
        weights, serve = serving_function(model, task)
        with portable_attention():
            if format == "stablehlo":
                manifest.update(_write_stablehlo(serve, weights, tmp))
            else:
                from bert_jax.inference.export_onnx import write_onnx

                manifest.update(write_onnx(serve, weights, tmp, manifest["outputs"]))
        manifest["check_max_abs_diff"] = _check(model, task, tmp, manifest)
        tokenizer.save_pretrained(tmp)
        write_json(os.path.join(tmp, MANIFEST), manifest)
    return manifest


def _check_options(format: str, dtype: str) -> None:
    if format not in FORMATS:
        raise BertJaxError(f"export: --format must be one of {FORMATS}, got {format!r}")
    if dtype not in DTYPES:
        raise BertJaxError(f"export: --dtype must be one of {DTYPES}, got {dtype!r}")
    if format == "onnx" and dtype != "float32":
        raise BertJaxError(
            "export: ONNX export runs in float32 only (jax2onnx 0.17's bfloat16 graphs fail "
            "onnxruntime's type check); use --dtype float32 or --format stablehlo"
        )
    if format == "onnx":
        missing = [p for p in ("jax2onnx", "onnxruntime") if importlib.util.find_spec(p) is None]
        if missing:  # say so before loading the model
            raise BertJaxError(
                f"export --format onnx needs jax2onnx and onnxruntime ({', '.join(missing)} "
                "missing): pip install 'bert-jax[export]'"
            )


def _manifest(model_dir, model, tokenizer, task: str, format: str, dtype: str) -> dict:
    config = read_json(os.path.join(model_dir, "config.json"))
    return {
        "format": format,
        "task": task,
        "architecture": type(model).__name__,
        "model_type": config.get("model_type", "bert"),
        "inputs": list(INPUTS),
        "input_dtype": "int32",
        "outputs": list(OUTPUTS[task]),
        "labels": list(getattr(model.config, "id2label", ())),
        "dtype": dtype,
        "max_length": min(max_positions(model.config), tokenizer.model_max_length or 1 << 30),
        "jax_version": jax.__version__,
    }


def serving_task(model) -> str:
    """What an export of `model` returns: its task head's, a masked-LM's or an encoder's outputs."""
    try:
        return task_of(model)
    except BertJaxError:
        pass
    name = type(model).__name__
    if name.endswith("ForMaskedLM"):
        return "mlm"
    if name.endswith("Model"):
        return "embeddings"
    raise BertJaxError(
        f"export: {name} has no servable output; export a task head (…ForSequenceClassification, "
        "…ForTokenClassification, …ForQuestionAnswering), a …ForMaskedLM or a bare …Model"
    )


def serving_function(model, task: str):
    """(weights {flat name: array}, serve(weights, input_ids, token_type_ids, attention_mask)
    → tuple of OUTPUTS[task]). Non-parameter state (dropout RNG streams) is closed over."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    paths = {"/".join(map(str, path)): path for path, _ in nnx.to_flat_state(params)}
    weights = {name: v.get_value() for name, (_, v) in zip(paths, nnx.to_flat_state(params))}

    def serve(weights, input_ids, token_type_ids, attention_mask):
        flat = nnx.from_flat_state({paths[name]: value for name, value in weights.items()})
        return task_outputs(
            nnx.merge(graphdef, flat, rest), task, input_ids, token_type_ids, attention_mask
        )

    return weights, serve


def task_outputs(model, task: str, input_ids, token_type_ids, attention_mask) -> tuple:
    """The fp32 outputs OUTPUTS[task] of `model` for one padded batch."""
    out = model(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
    if task == "embeddings":
        hidden = out.last_hidden_state.astype(jnp.float32)  # (B, L, D)
        mask = attention_mask.astype(jnp.float32)[..., None]  # (B, L, 1)
        pooled = jnp.sum(hidden * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)
        return hidden, pooled
    if task == "qa":
        return tuple(out)
    if task == "regression":
        return (out[..., 0],)
    if task == "mlm":
        return (out,)
    return out, jax.nn.softmax(out, axis=-1)


def _write_stablehlo(serve, weights, directory: str) -> dict:
    from safetensors.numpy import save_file

    batch, length = jax.export.symbolic_shape("batch, length")
    ids = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()}
    try:
        exported = jax.export.export(jax.jit(serve), platforms=PLATFORMS)(specs, ids, ids, ids)
        blob = exported.serialize()
    except ImportError as e:  # serialisation needs the flatbuffers package
        raise BertJaxError(f"export: {e} (pip install flatbuffers)") from None
    with open(os.path.join(directory, STABLEHLO_FILE), "wb") as f:
        f.write(blob)
    save_file({k: np.asarray(v) for k, v in weights.items()}, os.path.join(directory, WEIGHTS_FILE))
    return {"files": [STABLEHLO_FILE, WEIGHTS_FILE], "platforms": list(PLATFORMS)}


def _check(model, task: str, directory: str, manifest: dict) -> float:
    """Run the written artifact on a padded batch; max |difference| from the model itself."""
    from bert_jax.inference.exported import load_exported

    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.config.vocab_size, _CHECK_SHAPE).astype(np.int32)
    mask = np.ones(_CHECK_SHAPE, np.int32)
    mask[1, _CHECK_SHAPE[1] // 2 :] = 0
    types = np.zeros(_CHECK_SHAPE, np.int32)
    reference = jit_forward(model, task_outputs, task=task)  # one compile, not op by op
    expected = reference(input_ids=ids, token_type_ids=types, attention_mask=mask)
    got = load_exported(directory, manifest=manifest)(ids, types, mask)
    worst = 0.0
    for name, want in zip(manifest["outputs"], expected):
        want = np.asarray(want, np.float32)
        real = mask.astype(bool) if want.ndim >= 2 and want.shape[:2] == ids.shape else Ellipsis
        worst = max(worst, float(np.abs(got[name] - want)[real].max()))
    tolerance = 1e-3 if manifest["dtype"] == "float32" else 5e-2
    if not worst <= tolerance:
        raise BertJaxError(
            f"export: the {manifest['format']} artifact differs from the model by {worst:.3g} "
            f"(tolerance {tolerance}); not written"
        )
    return worst
