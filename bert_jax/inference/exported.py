"""Run what `bert-jax export` wrote, with nothing but the export directory:

    model = bert_jax.load_exported("served/")
    model(input_ids, token_type_ids, attention_mask)  # {"logits": ..., "probabilities": ...}
    model.predict(["what a day!"])                   # tokenised with the bundled tokenizer

StableHLO runs through `jax.export.deserialize` (compiled once per input shape; no model code is
imported), ONNX through onnxruntime. Output names and order are in export.json (export.py).
"""

from __future__ import annotations

import os

import numpy as np

from bert_jax.errors import BertJaxError
from bert_jax.io import read_json

MANIFEST = "export.json"


def load_exported(directory, *, manifest: dict | None = None) -> ExportedModel:
    """The exported model in `directory` (a `bert-jax export` output)."""
    directory = os.fspath(directory)
    if manifest is None:
        path = os.path.join(directory, MANIFEST)
        if not os.path.isfile(path):
            raise BertJaxError(f"{directory}: no {MANIFEST} (not a `bert-jax export` directory)")
        manifest = read_json(path)
    runners = {"stablehlo": _stablehlo_runner, "onnx": _onnx_runner}
    if manifest.get("format") not in runners:
        raise BertJaxError(f"{directory}/{MANIFEST}: unknown format {manifest.get('format')!r}")
    return ExportedModel(directory, manifest, runners[manifest["format"]](directory, manifest))


class ExportedModel:
    """An exported inference function: call it on int arrays (batch, length)."""

    def __init__(self, directory: str, manifest: dict, run):
        self.directory, self.manifest, self._run = directory, manifest, run
        self.task: str = manifest["task"]
        self.labels: list[str] = list(manifest.get("labels") or [])
        self.output_names: list[str] = list(manifest["outputs"])
        self._tokenizer = None

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None) -> dict:
        """{output name: float32 array}; token_type_ids default to 0, attention_mask to 1."""
        ids = _int_batch(input_ids, "input_ids", None)
        types = _int_batch(token_type_ids, "token_type_ids", ids.shape, fill=0)
        mask = _int_batch(attention_mask, "attention_mask", ids.shape, fill=1)
        outputs = self._run(ids, types, mask)
        return {name: np.asarray(v, np.float32) for name, v in zip(self.output_names, outputs)}

    @property
    def tokenizer(self):
        """The bundled tokenizer (loaded on first use)."""
        if self._tokenizer is None:
            from bert_jax.tokenizer import BertTokenizer

            self._tokenizer = BertTokenizer.from_pretrained(self.directory)
        return self._tokenizer

    def predict(self, texts, pairs=None) -> list[dict]:
        """Tokenise `texts` (and `pairs`) with the bundled tokenizer and run them as one batch:
        classification {"label", "score", "scores"}, regression {"value"}, ner {"tokens",
        "labels", "scores"} per token, embeddings {"embedding"} (mean-pooled). QA and masked-LM
        exports take token ids through __call__."""
        if self.task in ("qa", "mlm"):
            raise BertJaxError(
                f"predict() does not cover {self.task} exports; call the model on token ids"
            )
        enc = self.tokenizer(texts, pairs, max_length=self.manifest["max_length"])
        out = self(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])
        if self.task == "embeddings":
            return [{"embedding": row.tolist()} for row in out["mean_pooled"]]
        if self.task == "regression":
            return [{"value": float(v)} for v in out["values"]]
        if self.task == "classification":
            return [self._labelled(p) for p in out["probabilities"]]
        results = []
        for ids, mask, probs in zip(enc["input_ids"], enc["attention_mask"], out["probabilities"]):
            n = int(mask.sum())
            best = probs[:n].argmax(-1)
            results.append(
                {
                    "tokens": self.tokenizer.convert_ids_to_tokens(ids[:n].tolist()),
                    "labels": [self.labels[b] for b in best],
                    "scores": probs[:n].max(-1).tolist(),
                }
            )
        return results

    def _labelled(self, probs) -> dict:
        best = int(np.argmax(probs))
        return {
            "label": self.labels[best],
            "score": float(probs[best]),
            "scores": {name: float(p) for name, p in zip(self.labels, probs)},
        }


def _int_batch(value, name: str, shape, fill: int | None = None) -> np.ndarray:
    if value is None:
        if fill is None:
            raise BertJaxError(f"{name} is required")
        return np.full(shape, fill, np.int32)
    array = np.asarray(value)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise BertJaxError(
            f"{name}: expected a 2-D integer array (batch, length), got {array.dtype}{array.shape}"
        )
    if shape is not None and array.shape != tuple(shape):
        raise BertJaxError(f"{name}: shape {array.shape} differs from input_ids' {tuple(shape)}")
    return array.astype(np.int32)


def _stablehlo_runner(directory: str, manifest: dict):
    import jax
    from safetensors.numpy import load_file

    files = manifest.get("files") or []
    try:
        with open(os.path.join(directory, files[0]), "rb") as f:
            exported = jax.export.deserialize(bytearray(f.read()))
        weights = jax.device_put(load_file(os.path.join(directory, files[1])))
    except (OSError, IndexError) as e:
        raise BertJaxError(f"{directory}: cannot read the exported files {files} ({e})") from None
    run = jax.jit(exported.call)  # one compilation per input shape
    return lambda ids, types, mask: jax.device_get(run(weights, ids, types, mask))


def _onnx_runner(directory: str, manifest: dict):
    try:
        import onnxruntime
    except ImportError:
        raise BertJaxError(
            "running an ONNX export needs onnxruntime: pip install 'bert-jax[export]'"
        ) from None
    path = os.path.join(directory, (manifest.get("files") or ["model.onnx"])[0])
    providers = onnxruntime.get_available_providers()  # CUDA first where installed
    session = onnxruntime.InferenceSession(path, providers=providers)
    names = manifest["inputs"]
    return lambda ids, types, mask: session.run(None, dict(zip(names, (ids, types, mask))))
