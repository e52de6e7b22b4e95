"""BertConfig: the model's hyper-parameters, with Google's size presets and HF `config.json` I/O."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Self

import jax.numpy as jnp

from bert_jax.errors import BertJaxError
from bert_jax.model.formats import FORMATS

# hidden_act names used in HF config.json files → what they mean for us.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "tanh")
# config.json fields every family (ModernBERT too) reads or writes itself, not into `extra`.
HF_COMMON_FIELDS = (
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "architectures",
    "model_type",
    "dtype",
    "torch_dtype",
    "transformers_version",
)
# Fields we read and write ourselves besides the family's (formats.py); everything else in a
# config.json is kept verbatim in `extra` so a load/save round trip loses nothing.
_OWN_FIELDS = (*HF_COMMON_FIELDS, "position_embedding_type")


def hf_label_and_dtype_fields(d: dict) -> dict[str, Any]:
    """The config.json fields every family reads alike: label maps (`id2label`, else
    `num_labels` → LABEL_i), `problem_type`, and the stored weights' dtype."""
    kwargs: dict[str, Any] = {}
    if "id2label" in d:
        id2label = {int(k): v for k, v in d["id2label"].items()}
        kwargs["id2label"] = tuple(id2label[i] for i in range(len(id2label)))
    elif "num_labels" in d:
        kwargs["id2label"] = tuple(f"LABEL_{i}" for i in range(int(d["num_labels"])))
    kwargs["problem_type"] = d.get("problem_type")
    # Weights are loaded as stored: a bf16 checkpoint keeps bf16 params, fp16 ones load as fp32.
    stored = d.get("dtype") or d.get("torch_dtype")
    if stored in ("bfloat16", "float16", "float32"):
        kwargs["param_dtype"] = stored if stored != "float16" else "float32"
    return kwargs


class ConfigMethods:
    """What every family's frozen config dataclass shares (BertConfig, ModernBertConfig): the
    derived names the rest of bert_jax reads, label maps, and config.json writing. The subclass
    has the fields hidden_size, num_attention_heads, id2label, problem_type, dtype, param_dtype
    and a `to_hf_dict(architectures)`."""

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

    def replace(self, **changes) -> Self:
        return dataclasses.replace(self, **changes)

    def with_labels(self, labels) -> Self:
        """A copy for a classifier over `labels` (names, or a count → LABEL_0..LABEL_{n-1})."""
        if isinstance(labels, int):
            labels = [f"LABEL_{i}" for i in range(labels)]
        return self.replace(id2label=tuple(str(x) for x in labels))

    def to_json_file(self, path: str | os.PathLike, architectures: list[str] | None = None) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_hf_dict(architectures), f, indent=2, sort_keys=True)
            f.write("\n")

    def _with_hf_label_and_dtype_fields(self, d: dict, architectures: list[str] | None) -> dict:
        """`d` (a config.json dict) plus the fields every family writes alike."""
        d["dtype"] = self.param_dtype
        if architectures:
            d["architectures"] = architectures
        if self.id2label:
            d["id2label"] = {str(i): name for i, name in enumerate(self.id2label)}
            d["label2id"] = {name: i for i, name in enumerate(self.id2label)}
        if self.problem_type:
            d["problem_type"] = self.problem_type
        return d


@dataclasses.dataclass(frozen=True)
class BertConfig(ConfigMethods):
    """Architecture of a BERT-style encoder (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT: see
    formats.py). Field names follow HF's BERT `config.json`; `model_type` names the family."""

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
    model_type: str = "bert"
    # ELECTRA: width of the embedding tables, projected to hidden_size; None = hidden_size.
    embedding_size: int | None = None
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
        if self.model_type not in FORMATS:
            raise BertJaxError(
                f"config: model_type {self.model_type!r} is not one of {sorted(FORMATS)}"
            )
        projected = self.embedding_size not in (None, self.hidden_size)
        if (
            projected
            and ("embedding_size", "embedding_size") not in FORMATS[self.model_type].fields
        ):
            raise BertJaxError(
                f"config: embedding_size {self.embedding_size} != hidden_size is ELECTRA's; "
                f"model_type {self.model_type!r} has no embedding projection"
            )

    # ---- derived -----------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        """Width of the embedding tables (ELECTRA's embedding_size, else hidden_size)."""
        return self.embedding_size or self.hidden_size

    @property
    def position_offset(self) -> int:
        """First position id of a real token: pad_token_id + 1 for RoBERTa/XLM-R, else 0."""
        return self.pad_token_id + 1 if FORMATS[self.model_type].positions_after_padding else 0

    @property
    def max_sequence_length(self) -> int:
        """Longest input the position table serves (514 positions hold 512 RoBERTa tokens)."""
        return self.max_position_embeddings - self.position_offset

    def hf_value(self, name: str, default: Any = None) -> Any:
        """A config.json field we keep verbatim (e.g. DistilBERT's qa_dropout), or `default`."""
        return dict(self.extra).get(name, default)

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

    # ---- HF config.json -------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict, *, source: str = "config.json") -> BertConfig:
        """Read a config.json of any family in formats.py (DistilBERT's `dim`, `n_layers`, ...
        included); `model_type` absent means BERT."""
        model_type = d.get("model_type", "bert")
        if model_type not in FORMATS:
            raise BertJaxError(
                f"{source}: model_type {model_type!r} is not supported here; expected one of "
                f"{', '.join(sorted(FORMATS))}"
            )
        fmt = FORMATS[model_type]
        kwargs: dict[str, Any] = {"model_type": model_type, **dict(fmt.fixed)}
        for ours, theirs in fmt.fields:
            if theirs in d:
                kwargs[ours] = d[theirs]
        for _, theirs in fmt.fields[:4]:  # vocab, width, depth, heads
            if theirs not in d:
                raise BertJaxError(f"{source}: field {theirs!r} is missing")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise BertJaxError(f"{source}: only position_embedding_type 'absolute' is supported")
        kwargs.update(hf_label_and_dtype_fields(d))
        known = {theirs for _, theirs in fmt.fields} | set(_OWN_FIELDS)
        kwargs["extra"] = tuple(sorted((k, v) for k, v in d.items() if k not in known))
        try:
            return cls(**kwargs)
        except TypeError as e:  # e.g. a string where a number belongs
            raise BertJaxError(f"{source}: {e}") from None

    def to_hf_dict(self, architectures: list[str] | None = None) -> dict:
        fmt = FORMATS[self.model_type]
        d: dict[str, Any] = dict(self.extra)
        d.update({theirs: getattr(self, ours) for ours, theirs in fmt.fields})
        d["model_type"] = self.model_type
        if self.model_type == "bert":
            d["position_embedding_type"] = "absolute"
        return self._with_hf_label_and_dtype_fields(d, architectures)

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
