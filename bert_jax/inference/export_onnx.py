"""ONNX export through jax2onnx (an optional package: `pip install 'bert-jax[export]'`).

The weights are closed over, so they become ONNX initializers; jax2onnx spills large ones into
model.onnx.data beside model.onnx. Batch and length stay symbolic ("batch", "length").
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp

from bert_jax.errors import BertJaxError

ONNX_FILE, ONNX_DATA = "model.onnx", "model.onnx.data"
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def write_onnx(serve, weights, directory: str, output_names) -> dict:
    """Convert `serve(weights, *inputs)` with `weights` fixed; write model.onnx (+ data)."""
    try:
        import jax2onnx
        import onnxruntime  # noqa: F401  (loading an ONNX export needs it; fail before writing)
    except ImportError as e:
        raise BertJaxError(
            f"export --format onnx needs jax2onnx and onnxruntime ({e.name} is missing): "
            "pip install 'bert-jax[export]'"
        ) from None
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("batch, length"), jnp.int32)
    path = os.path.join(directory, ONNX_FILE)
    # onnx_ir warns about every shape-only helper value it does not serialise, and jax2onnx
    # about each plugin whose optional package (equinox, dm-pix) is absent: noise for our graph.
    quiet = [logging.getLogger(name) for name in ("onnx_ir", "jax2onnx")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        jax2onnx.to_onnx(
            functools.partial(serve, weights),
            [spec] * len(INPUTS),
            model_name="bert_jax",
            return_mode="file",
            output_path=path,
            input_names=list(INPUTS),
            output_names=list(output_names),
        )
    except (NotImplementedError, ValueError, TypeError) as e:
        raise BertJaxError(f"export: jax2onnx cannot convert this model ({e})") from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    files = [ONNX_FILE] + (
        [ONNX_DATA] if os.path.exists(os.path.join(directory, ONNX_DATA)) else []
    )
    unexpected = sorted(set(os.listdir(directory)) - set(files))
    if unexpected:  # a jax2onnx release naming its sidecar differently: say so, do not ship it
        raise BertJaxError(f"export: jax2onnx wrote unexpected files {unexpected}")
    return {"files": files, "onnx_opset": 23, "jax2onnx_version": _version("jax2onnx")}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
