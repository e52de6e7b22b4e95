"""tokenizer.json files of every family: RoBERTa's byte-level BPE and XLM-R's Unigram as well as
BERT's WordPiece, loaded and written back without sentencepiece.

`BertTokenizer` (tokenizer.py) runs all three. A WordPiece file gets BERT's normaliser and
[CLS]/[SEP] template from tokenizer_config.json, as transformers' BertTokenizerFast does. A BPE or
Unigram file runs as written (normaliser, pre-tokeniser, post-processor such as
`<s> A </s></s> B </s>`, added tokens such as `<mask>` that swallows the space before it), which is
what transformers' fast tokenizers do with it; its special tokens come from tokenizer_config.json /
special_tokens_map.json, else RoBERTa's and XLM-R's defaults.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, processors

from bert_jax.errors import BertJaxError
from bert_jax.io import read_json, write_json

MODEL_TYPES = ("WordPiece", "BPE", "Unigram")
ROLES = ("pad", "unk", "cls", "sep", "mask")  # the tokens BertTokenizer needs, by role
DEFAULT_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"}


def load(path: Path) -> tuple[Tokenizer, str]:
    """The tokenizer in `path` and its model type; one error line for a file we cannot run."""
    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception
        raise BertJaxError(f"{path}: cannot load ({e})") from None
    kind = type(backend.model).__name__
    if kind not in MODEL_TYPES:
        raise BertJaxError(
            f"{path}: a {kind} tokenizer, which bert-jax cannot run (it runs "
            f"{', '.join(MODEL_TYPES)})"
        )
    return backend, kind


def special_tokens(directory: Path, config: dict) -> dict[str, str]:
    """Role → token for a BPE/Unigram tokenizer: tokenizer_config.json's `<role>_token`, else
    special_tokens_map.json's, else `<pad>`, `<unk>`, `<s>`, `</s>`, `<mask>`."""
    saved = {}
    if (directory / "special_tokens_map.json").is_file():
        saved = read_json(directory / "special_tokens_map.json")
    out = {}
    for role in ROLES:
        value = config.get(f"{role}_token") or saved.get(f"{role}_token") or DEFAULT_SPECIALS[role]
        out[role] = value["content"] if isinstance(value, dict) else str(value)
    return out


def with_post_processor(backend: Tokenizer, specials: dict[str, str]) -> Tokenizer:
    """`backend`, given RoBERTa's `<s> A </s></s> B </s>` template if its file has no
    post-processor (transformers' RobertaTokenizer installs the same)."""
    if backend.post_processor is None:
        cls, sep = specials["cls"], specials["sep"]
        ids = [(t, backend.token_to_id(t)) for t in (cls, sep)]
        if any(i is None for _, i in ids):
            raise BertJaxError(f"tokenizer.json: vocabulary needs both {cls} and {sep}")
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} {sep} $B {sep}", special_tokens=ids
        )
    return backend


def save(
    directory: Path,
    backend: Tokenizer,
    specials: dict[str, str],
    config: dict,
    model_max_length: int | None,
) -> None:
    """Write tokenizer.json, tokenizer_config.json (the loaded one, e.g. add_prefix_space, with
    our special tokens) and special_tokens_map.json; transformers' AutoTokenizer reads them."""
    directory.mkdir(parents=True, exist_ok=True)
    backend.save(str(directory / "tokenizer.json"))
    tokens = {f"{role}_token": token for role, token in specials.items()}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **config, **tokens}
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    write_json(directory / "tokenizer_config.json", config)
    write_json(directory / "special_tokens_map.json", tokens)
