"""BertConfig: the model's hyper-parameters, with Google's size presets and HF `config.json` I/O."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp

from bert_jax.errors import BertJaxError

# hidden_act names used in HF config.json files → what they mean for us.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "tanh")

# Fields of HF's BertConfig that we read and write ourselves; everything else in a config.json
# is kept verbatim in `extra` so a load/save round trip loses nothing.
_HF_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "initializer_range",
    "classifier_dropout",
)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT encoder. Field names follow HF's `config.json`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    classifier_dropout: float | None = None
    # Label maps for classification / token-classification heads: id2label[i] is label i's name.
    id2label: tuple[str, ...] = ()
    problem_type: str | None = None
    # Compute dtype of matmuls/activations; parameters stay in `param_dtype`. Softmax, LayerNorm
    # and losses always run in float32.
    dtype: str = "float32"
    param_dtype: str = "float32"
    # Unknown HF fields, kept for a lossless round trip (json-able values only).
    extra: tuple[tuple[str, Any], ...] = dataclasses.field(default=(), hash=False, compare=False)

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise BertJaxError(
                f"config: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise BertJaxError(
                f"config: hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}"
            )

    # ---- derived -----------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label) or 2

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def weights_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes) -> BertConfig:
        return dataclasses.replace(self, **changes)

    def with_labels(self, labels) -> BertConfig:
        """A copy for a classifier over `labels` (names, or a count → LABEL_0..LABEL_{n-1})."""
        if isinstance(labels, int):
            labels = [f"LABEL_{i}" for i in range(labels)]
        return self.replace(id2label=tuple(str(x) for x in labels))

    # ---- presets: Google's BERT family (Turc et al. 2019 for the compact ones) ------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> BertConfig:
        sizes = {
            "tiny": (2, 128),
            "mini": (4, 256),
            "small": (4, 512),
            "medium": (8, 512),
            "base": (12, 768),
            "large": (24, 1024),
        }
        if name not in sizes:
            raise BertJaxError(f"unknown model size {name!r}; expected one of {sorted(sizes)}")
        layers, hidden = sizes[name]
        base = dict(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=hidden // 64,
            intermediate_size=4 * hidden,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def tiny(cls, **kw) -> BertConfig:
        return cls.preset("tiny", **kw)

    @classmethod
    def mini(cls, **kw) -> BertConfig:
        return cls.preset("mini", **kw)

    @classmethod
    def small(cls, **kw) -> BertConfig:
        return cls.preset("small", **kw)

    @classmethod
    def medium(cls, **kw) -> BertConfig:
        return cls.preset("medium", **kw)

    @classmethod
    def base(cls, **kw) -> BertConfig:
        return cls.preset("base", **kw)

    @classmethod
    def large(cls, **kw) -> BertConfig:
        return cls.preset("large", **kw)

    # ---- HF config.json ---------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict, *, source: str = "config.json") -> BertConfig:
        kwargs: dict[str, Any] = {}
        for name in _HF_FIELDS:
            if name in d:
                kwargs[name] = d[name]
        for required in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            if required not in d:
                raise BertJaxError(f"{source}: field {required!r} is missing")
        if d.get("model_type", "bert") != "bert":
            raise BertJaxError(f"{source}: model_type is {d['model_type']!r}, expected 'bert'")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise BertJaxError(f"{source}: only position_embedding_type 'absolute' is supported")
        if "id2label" in d:
            id2label = {int(k): v for k, v in d["id2label"].items()}
            kwargs["id2label"] = tuple(id2label[i] for i in range(len(id2label)))
        elif "num_labels" in d:
            kwargs["id2label"] = tuple(f"LABEL_{i}" for i in range(int(d["num_labels"])))
        kwargs["problem_type"] = d.get("problem_type")
        if d.get("dtype") or d.get("torch_dtype"):
            # Weights are loaded as stored; a bf16 checkpoint keeps bf16 params.
            stored = d.get("dtype") or d.get("torch_dtype")
            if stored in ("bfloat16", "float16", "float32"):
                kwargs["param_dtype"] = stored if stored != "float16" else "float32"
        known = set(_HF_FIELDS) | {
            "id2label",
            "label2id",
            "num_labels",
            "problem_type",
            "architectures",
            "model_type",
            "dtype",
            "torch_dtype",
            "transformers_version",
            "position_embedding_type",
        }
        kwargs["extra"] = tuple(sorted((k, v) for k, v in d.items() if k not in known))
        try:
            return cls(**kwargs)
        except TypeError as e:  # e.g. a string where a number belongs
            raise BertJaxError(f"{source}: {e}") from None

    def to_hf_dict(self, architectures: list[str] | None = None) -> dict:
        d: dict[str, Any] = dict(self.extra)
        d.update({name: getattr(self, name) for name in _HF_FIELDS})
        d["model_type"] = "bert"
        d["position_embedding_type"] = "absolute"
        d["dtype"] = self.param_dtype
        if architectures:
            d["architectures"] = architectures
        if self.id2label:
            d["id2label"] = {str(i): name for i, name in enumerate(self.id2label)}
            d["label2id"] = {name: i for i, name in enumerate(self.id2label)}
        if self.problem_type:
            d["problem_type"] = self.problem_type
        return d

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> BertConfig:
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise BertJaxError(
                f"{path}: not found (an HF model directory needs config.json)"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BertJaxError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise BertJaxError(f"{path}: expected a JSON object")
        return cls.from_hf_dict(d, source=str(path))

    def to_json_file(self, path: str | os.PathLike, architectures: list[str] | None = None) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_hf_dict(architectures), f, indent=2, sort_keys=True)
            f.write("\n")
