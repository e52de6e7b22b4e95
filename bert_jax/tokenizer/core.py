"""WordPiece tokenizer on Hugging Face `tokenizers` (Rust): load, train, save, encode with offsets.
Loads RoBERTa's byte-level BPE and XLM-R's Unigram tokenizer.json as well (formats.py).

Directories use the HF layout (tokenizer.json, vocab.txt, tokenizer_config.json,
special_tokens_map.json): `transformers.BertTokenizerFast.from_pretrained(dir)` reads what we write.
Normalisation follows HF: lower-casing, accent stripping and Chinese-character splitting come from
tokenizer_config.json (defaults True / None / True); `strip_accents=None` means "same as lowercase".
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from bert_jax.errors import BertJaxError
from bert_jax.io import read_json, staged_dir, write_json
from bert_jax.tokenizer import formats
from bert_jax.tokenizer.training import SPECIAL_TOKENS, train_wordpiece

# What `save_pretrained` writes (a directory holding only these may be replaced by a new save).
TOKENIZER_FILES = frozenset(
    {"tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}
)
_PADDING = ("longest", "max_length", False, "do_not_pad")
_HUGE = 10**6  # HF writes 1e30 for "no limit"; anything this large means unset


class BertTokenizer:
    """A BERT WordPiece tokenizer, or any BPE/Unigram tokenizer.json with its `special_tokens`
    (role → token: pad, unk, cls, sep, mask; BERT's [PAD] ... by default).

    `backend` is kept without truncation/padding; __call__ encodes with a private copy made at
    construction, so build a new BertTokenizer(backend, ...) after changing `backend`.
    """

    def __init__(
        self,
        backend: Tokenizer,
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int | None = None,
        special_tokens: dict[str, str] | None = None,
        hf_config: dict | None = None,
    ):
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.kind = type(backend.model).__name__  # WordPiece, BPE or Unigram
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = model_max_length
        self.special_tokens = dict(special_tokens or zip(formats.ROLES, SPECIAL_TOKENS))
        self.hf_config = dict(hf_config or {})  # a BPE/Unigram tokenizer_config.json, kept
        for role, token in self.special_tokens.items():
            tid = backend.token_to_id(token)
            if tid is None:
                raise BertJaxError(f"vocabulary has no {token} token")
            setattr(self, f"{role}_id", tid)  # pad_id, unk_id, cls_id, sep_id, mask_id
        self.special_ids = frozenset(
            [self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id]
            + [i for i, t in backend.get_added_tokens_decoder().items() if t.special]
        )
        # __call__ sets truncation/padding per call on a private copy, so `backend` stays plain
        # and other threads calling backend.encode_batch are unaffected.
        self._encoder = Tokenizer.from_str(backend.to_str())
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_vocab(
        cls,
        vocab_file,
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int | None = None,
    ) -> BertTokenizer:
        """Build from a vocab.txt (one token per line, id = line number), as HF does."""
        try:
            lines = Path(vocab_file).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise BertJaxError(f"{vocab_file}: cannot read vocabulary ({e})") from None
        if lines and lines[-1] == "":
            lines.pop()
        vocab = {token: i for i, token in enumerate(lines)}  # later duplicates win, as in HF
        model = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
        backend = Tokenizer(model)
        backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS if t in vocab]
        )
        return cls._assemble(
            backend, lowercase, strip_accents, tokenize_chinese_chars, model_max_length
        )

    @classmethod
    def from_pretrained(cls, directory) -> BertTokenizer:
        """Load a HF tokenizer directory: tokenizer.json if present, else vocab.txt."""
        directory = Path(directory)
        config = {}
        if (directory / "tokenizer_config.json").is_file():
            config = read_json(directory / "tokenizer_config.json")
        lower = bool(config.get("do_lower_case", True))
        strip = config.get("strip_accents")
        chinese = bool(config.get("tokenize_chinese_chars", True))
        max_len = config.get("model_max_length")
        max_len = int(max_len) if isinstance(max_len, (int, float)) and max_len < _HUGE else None
        if (directory / "tokenizer.json").is_file():
            backend, kind = formats.load(directory / "tokenizer.json")
            if kind != "WordPiece":  # RoBERTa's BPE, XLM-R's Unigram: run as written
                specials = formats.special_tokens(directory, config)
                backend = formats.with_post_processor(backend, specials)
                return cls(
                    backend, model_max_length=max_len, special_tokens=specials, hf_config=config
                )
            # transformers rebuilds the normaliser from tokenizer_config.json; so do we.
            return cls._assemble(backend, lower, strip, chinese, max_len)
        if (directory / "vocab.txt").is_file():
            return cls.from_vocab(
                directory / "vocab.txt",
                lowercase=lower,
                strip_accents=strip,
                tokenize_chinese_chars=chinese,
                model_max_length=max_len,
            )
        raise BertJaxError(f"{directory}: has neither tokenizer.json nor vocab.txt")

    @classmethod
    def from_pretrained_if_present(cls, directory) -> BertTokenizer | None:
        """The directory's tokenizer, or None when it holds no tokenizer files (weights only)."""
        directory = Path(directory)
        if any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
            return cls.from_pretrained(directory)
        return None

    @classmethod
    def train(
        cls,
        texts,
        *,
        vocab_size: int = 30522,
        lowercase: bool = True,
        min_frequency: int = 2,
        limit_alphabet: int = 1000,
    ) -> BertTokenizer:
        """Train a WordPiece vocab (deterministically: see `training.train_wordpiece`): a
        list/tuple means file paths (UTF-8 text), a callable returns a fresh iterable of texts at
        each call, any other iterable yields texts. Special tokens come first: [PAD]=0 [UNK]=1
        [CLS]=2 [SEP]=3 [MASK]=4."""
        backend = train_wordpiece(
            texts,
            vocab_size=vocab_size,
            lowercase=lowercase,
            min_frequency=min_frequency,
            limit_alphabet=limit_alphabet,
        )
        return cls._assemble(backend, lowercase, None, True, None)

    @classmethod
    def _assemble(cls, backend, lower, strip, chinese, max_len) -> BertTokenizer:
        """Install the BERT normaliser, pre-tokeniser, [CLS] A [SEP] B [SEP] template, decoder."""
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=chinese, strip_accents=strip, lowercase=lower
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise BertJaxError("vocabulary needs both [CLS] and [SEP] tokens")
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        return cls(
            backend,
            do_lower_case=lower,
            strip_accents=strip,
            tokenize_chinese_chars=chinese,
            model_max_length=max_len,
        )

    def save_pretrained(self, directory) -> None:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json."""
        directory = Path(directory)
        if self.kind != "WordPiece":  # no vocab.txt
            args = (self.backend, self.special_tokens, self.hf_config, self.model_max_length)
            return formats.save(directory, *args)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        by_id = {i: t for t, i in self.backend.get_vocab(with_added_tokens=True).items()}
        if sorted(by_id) != list(range(len(by_id))):
            raise BertJaxError("vocabulary ids are not contiguous from 0; cannot write vocab.txt")
        (directory / "vocab.txt").write_text(
            "".join(by_id[i] + "\n" for i in range(len(by_id))), encoding="utf-8"
        )
        specials = dict(
            zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS)
        )
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            **specials,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        write_json(directory / "tokenizer_config.json", config)
        write_json(directory / "special_tokens_map.json", specials)

    # ---------------------------------------------------------------------------------- encoding
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __call__(
        self,
        texts: str | Sequence[str],
        pairs: str | Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        truncation: bool = True,
        padding: str | bool = "longest",
        pad_to_multiple_of: int | None = None,
        return_offsets: bool = False,
        return_word_ids: bool = False,
    ) -> dict:
        """Encode texts (and optional pair texts) to int32 arrays of shape (batch, length).

        Keys: input_ids, token_type_ids, attention_mask; with return_offsets, offsets (batch,
        length, 2) of character spans into the text of each token's own segment ((0, 0) for
        specials/pad); with return_word_ids, word_ids and (for pairs) sequence_ids, -1 for
        specials/pad. padding=False gives, per key, a list of 1-D arrays instead.
        Truncation is longest-first to max_length (default model_max_length, else 512).
        """
        texts, pairs, max_length = self._check_call(
            texts, pairs, max_length, truncation, padding, pad_to_multiple_of
        )
        inputs = texts if pairs is None else list(zip(texts, pairs))
        with self._lock:
            enc = self._encoder
            if truncation:
                enc.enable_truncation(max_length, strategy="longest_first")
            else:
                enc.no_truncation()
            pad = dict(
                pad_id=self.pad_id,
                pad_token=self.special_tokens["pad"],
                pad_to_multiple_of=pad_to_multiple_of,
            )
            if padding == "longest":
                enc.enable_padding(**pad)
            elif padding == "max_length":
                enc.enable_padding(length=max_length, **pad)
            else:
                enc.no_padding()
            try:
                encodings = enc.encode_batch(inputs)
            except Exception as e:  # the Rust side raises plain Exception
                raise BertJaxError(f"tokenizer: {e}") from None
        rows = _rows(encodings, return_offsets, return_word_ids, pairs is not None)
        if padding in (False, "do_not_pad"):
            return {k: [np.asarray(r, np.int32) for r in v] for k, v in rows.items()}
        return _stacked(rows, max_length)

    def _check_call(self, texts, pairs, max_length, truncation, padding, pad_to_multiple_of):
        """Validated (texts, pairs, max_length) for `__call__`: one error line per mistake."""
        texts = check_texts(texts, "text")
        if pairs is not None:
            pairs = check_texts(pairs, "pair")
            if len(pairs) != len(texts):
                raise BertJaxError(f"got {len(texts)} texts but {len(pairs)} pairs")
        if padding not in _PADDING:
            raise BertJaxError(f"padding={padding!r}: expected one of {_PADDING}")
        max_length = max_length or self.model_max_length or 512
        post = self._encoder.post_processor  # [CLS] A [SEP]: 2 and 3; <s> A </s></s> B </s>: 2, 4
        n_special = post.num_special_tokens_to_add(pairs is not None) if post else 0
        if truncation and max_length <= n_special:
            raise BertJaxError(f"max_length={max_length} leaves no room beside special tokens")
        if truncation and padding and pad_to_multiple_of and max_length % pad_to_multiple_of:
            # as HF: padding up past the truncation length could overrun the position table
            raise BertJaxError(
                f"max_length={max_length} is not a multiple of "
                f"pad_to_multiple_of={pad_to_multiple_of}"
            )
        return texts, pairs, max_length

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.backend.id_to_token(int(i)) for i in ids]

    def token_to_id(self, token: str) -> int:
        """The token's id, or unk_id when it is not in the vocabulary (as HF does)."""
        tid = self.backend.token_to_id(token)
        return self.unk_id if tid is None else tid


def train_tokenizer(
    files_glob: str | Callable[[], Iterable[str]],
    vocab_size: int,
    out_dir,
    lowercase: bool = True,
    *,
    overwrite: bool = False,
) -> BertTokenizer:
    """Train on the UTF-8 files matching `files_glob` (or on the texts a callable streams, once
    per pass, e.g. bert_jax.data.sources.corpus_lines) and write `out_dir` atomically; an
    existing `out_dir` holding anything but tokenizer files is refused unless `overwrite`."""
    if callable(files_glob):
        texts = files_glob
        if next(iter(texts()), None) is None:
            raise BertJaxError("corpus is empty: no text to train a tokenizer on")
    else:
        texts = sorted(
            f
            for f in glob.glob(os.path.expanduser(files_glob), recursive=True)
            if os.path.isfile(f)
        )
        if not texts:
            raise BertJaxError(f"--files {files_glob!r} matches no files")
    tokenizer = BertTokenizer.train(texts, vocab_size=vocab_size, lowercase=lowercase)
    with staged_dir(out_dir, owned=TOKENIZER_FILES, overwrite=overwrite) as tmp:
        tokenizer.save_pretrained(tmp)
    return tokenizer


def check_texts(texts, what: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, Sequence) and not isinstance(texts, np.ndarray):
        raise BertJaxError(f"{what}s must be a str or a list of str, got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise BertJaxError(f"{what} {i} is {type(t).__name__}, expected str")
        if not t.strip():
            raise BertJaxError(f"{what} {i} is empty")
    return texts


def _rows(encodings, offsets: bool, word_ids: bool, paired: bool) -> dict[str, list]:
    """Per-key lists of per-text lists from `tokenizers` encodings."""
    rows = {
        "input_ids": [e.ids for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
    }
    if offsets:
        rows["offsets"] = [e.offsets for e in encodings]
    if word_ids:
        rows["word_ids"] = [[-1 if w is None else w for w in e.word_ids] for e in encodings]
        if paired:
            rows["sequence_ids"] = [
                [-1 if s is None else s for s in e.sequence_ids] for e in encodings
            ]
    return rows


def _stacked(rows: dict[str, list], max_length: int) -> dict[str, np.ndarray]:
    """(batch, length) int32 arrays ((batch, length, 2) for offsets) of equal-length rows."""
    lengths = {len(r) for r in rows["input_ids"]}
    if len(lengths) > 1:  # only padding="max_length" with truncation=False gets here
        i = next(i for i, r in enumerate(rows["input_ids"]) if len(r) > max_length)
        raise BertJaxError(
            f"text {i} has {len(rows['input_ids'][i])} tokens, more than "
            f"max_length={max_length}; enable truncation"
        )
    width = lengths.pop() if lengths else 0
    out = {}
    for k, v in rows.items():
        shape = (len(v), width, 2) if k == "offsets" else (len(v), width)
        out[k] = np.asarray(v, np.int32).reshape(shape)
    return out
