"""ModernBertConfig: ModernBERT's hyper-parameters (arXiv 2412.13663) and HF `config.json` I/O.

Reads both spellings transformers has used: v5 (`layer_types`, `rope_parameters`) and v4.48+
(`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`), and writes both, so the
saved directory loads in either. Unknown fields are kept verbatim in `extra`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from bert_jax.errors import BertJaxError
from bert_jax.io import read_json
from bert_jax.model.config import HF_COMMON_FIELDS, ConfigMethods, hf_label_and_dtype_fields

GLOBAL, LOCAL = "full_attention", "sliding_attention"  # HF's names for the two layer types
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish")
POOLINGS = ("cls", "mean")

# Fields read and written under the same name as HF's ModernBertConfig.
_HF_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "hidden_activation",
    "max_position_embeddings",
    "initializer_range",
    "initializer_cutoff_factor",
    "norm_eps",
    "norm_bias",
    "attention_bias",
    "mlp_bias",
    "classifier_bias",
    "decoder_bias",
    "attention_dropout",
    "embedding_dropout",
    "mlp_dropout",
    "classifier_dropout",
    "classifier_pooling",
    "classifier_activation",
    "local_attention",
    "pad_token_id",
    "tie_word_embeddings",
)
# Fields we consume (turned into dataclass fields) rather than keep in `extra`.
_CONSUMED = {
    *_HF_FIELDS,
    *HF_COMMON_FIELDS,
    "layer_types",
    "rope_parameters",
    "global_attn_every_n_layers",
    "global_rope_theta",
    "local_rope_theta",
}


@dataclasses.dataclass(frozen=True)
class ModernBertConfig(ConfigMethods):
    """Architecture of a ModernBERT encoder. Defaults are answerdotai/ModernBERT-base's.
    head_dim, num_labels, compute/weights_dtype, replace, with_labels, to_json_file: see
    ConfigMethods (config.py)."""

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    classifier_bias: bool = False  # of the prediction head's dense layer
    decoder_bias: bool = True
    attention_dropout: float = 0.0
    embedding_dropout: float = 0.0
    mlp_dropout: float = 0.0
    classifier_dropout: float = 0.0
    classifier_pooling: str = "cls"
    classifier_activation: str = "gelu"
    # Sliding-window layers see keys within local_attention // 2 positions on either side.
    local_attention: int = 128
    # One entry per layer: GLOBAL or LOCAL. Empty: every 3rd layer (0, 3, 6, ...) global.
    layer_types: tuple[str, ...] = ()
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    pad_token_id: int = 50283
    tie_word_embeddings: bool = True
    id2label: tuple[str, ...] = ()
    problem_type: str | None = None
    dtype: str = "float32"  # compute dtype; LayerNorm, softmax, rotary and losses stay fp32
    param_dtype: str = "float32"
    extra: tuple[tuple[str, Any], ...] = dataclasses.field(default=(), hash=False, compare=False)

    def __post_init__(self):
        if not self.layer_types:
            object.__setattr__(self, "layer_types", _every_nth_global(self.num_hidden_layers, 3))
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        checks = [
            (
                self.hidden_size % self.num_attention_heads == 0,
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}",
            ),
            (
                len(self.layer_types) == self.num_hidden_layers,
                f"layer_types has {len(self.layer_types)} entries for "
                f"{self.num_hidden_layers} layers",
            ),
            (
                set(self.layer_types) <= {GLOBAL, LOCAL},
                f"layer_types must hold {GLOBAL!r} or {LOCAL!r}, "
                f"got {sorted(set(self.layer_types))}",
            ),
            (
                self.hidden_activation in ACTIVATIONS and self.classifier_activation in ACTIVATIONS,
                f"hidden_activation/classifier_activation must be one of {ACTIVATIONS}",
            ),
            (
                self.classifier_pooling in POOLINGS,
                f"classifier_pooling must be one of {POOLINGS}, got {self.classifier_pooling!r}",
            ),
            (self.head_dim % 2 == 0, f"head_dim {self.head_dim} must be even for rotary positions"),
        ]
        for ok, message in checks:
            if not ok:
                raise BertJaxError(f"config: {message}")

    # ---- HF config.json ---------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict, *, source: str = "config.json") -> ModernBertConfig:
        if d.get("model_type") != "modernbert":
            raise BertJaxError(f"{source}: model_type is {d.get('model_type')!r}, not 'modernbert'")
        for required in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            if required not in d:
                raise BertJaxError(f"{source}: field {required!r} is missing")
        kwargs: dict[str, Any] = {k: d[k] for k in _HF_FIELDS if k in d and d[k] is not None}
        layers = int(d["num_hidden_layers"])
        kwargs["layer_types"] = tuple(
            d.get("layer_types")
            or _every_nth_global(layers, d.get("global_attn_every_n_layers", 3))
        )
        kwargs.update(_rope_thetas(d, source))
        kwargs.update(hf_label_and_dtype_fields(d))
        kwargs["extra"] = tuple(sorted((k, v) for k, v in d.items() if k not in _CONSUMED))
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise BertJaxError(f"{source}: {e}") from None
        except BertJaxError as e:
            raise BertJaxError(f"{source}: {e}") from None

    def to_hf_dict(self, architectures: list[str] | None = None) -> dict:
        d: dict[str, Any] = dict(self.extra)
        d.update({name: getattr(self, name) for name in _HF_FIELDS})
        d["model_type"] = "modernbert"
        d["layer_types"] = list(self.layer_types)
        d["rope_parameters"] = {
            GLOBAL: {"rope_theta": self.global_rope_theta, "rope_type": "default"},
            LOCAL: {"rope_theta": self.local_rope_theta, "rope_type": "default"},
        }
        # The v4 spelling too, for transformers releases before `layer_types`.
        d["global_rope_theta"], d["local_rope_theta"] = (
            self.global_rope_theta,
            self.local_rope_theta,
        )
        every = _regular_period(self.layer_types)
        if every:
            d["global_attn_every_n_layers"] = every
        return self._with_hf_label_and_dtype_fields(d, architectures)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> ModernBertConfig:
        return cls.from_hf_dict(read_json(path), source=str(path))


def _every_nth_global(layers: int, every: int) -> tuple[str, ...]:
    """HF's default pattern: layer i is global when i % every == 0."""
    return tuple(LOCAL if i % int(every) else GLOBAL for i in range(layers))


def _regular_period(layer_types: tuple[str, ...]) -> int | None:
    for every in range(1, len(layer_types) + 1):
        if _every_nth_global(len(layer_types), every) == layer_types:
            return every
    return None


def _rope_thetas(d: dict, source: str) -> dict[str, float]:
    """{"global_rope_theta", "local_rope_theta"} from either spelling; only plain RoPE runs here."""
    out = {}
    rope = d.get("rope_parameters") or {}
    for layer_type, field in ((GLOBAL, "global_rope_theta"), (LOCAL, "local_rope_theta")):
        params = rope.get(layer_type) or {}
        if params.get("rope_type", "default") != "default":
            raise BertJaxError(
                f"{source}: rope_parameters.{layer_type}.rope_type {params['rope_type']!r} is "
                "not supported (only 'default' rotary positions)"
            )
        theta = params.get("rope_theta", d.get(field))
        if theta is not None:
            out[field] = float(theta)
    if d.get("rope_scaling"):
        raise BertJaxError(f"{source}: rope_scaling is not supported (only plain rotary positions)")
    return out
