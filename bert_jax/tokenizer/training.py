"""Deterministic WordPiece training on `tokenizers`' trainer.

The vocabulary is a pure function of (texts, settings): `tokenizers` gives continuing-subword
tokens (`##e`) ids in hash-map order, and those ids break ties between equally frequent merges
(huggingface/tokenizers#1794), so two runs could learn different vocabularies. A cheap first pass
(no merges) finds those tokens; the real pass gets them up front, sorted.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers

from bert_jax.errors import BertJaxError
from bert_jax.io import check_utf8

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4 in trained vocabs


def train_wordpiece(
    texts: Sequence[str | os.PathLike] | Iterable[str] | Callable[[], Iterable[str]],
    *,
    vocab_size: int = 30522,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
) -> Tokenizer:
    """A WordPiece `tokenizers.Tokenizer` trained on `texts` (file paths as a list/tuple, a
    callable giving a fresh iterable, or an iterable of texts, held in memory as it is read
    twice), its special tokens at ids 0..4."""
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise BertJaxError(
            f"vocab_size must be at least {len(SPECIAL_TOKENS) + 1}, got {vocab_size}"
        )
    if isinstance(texts, (list, tuple)):
        files = [str(f) for f in texts]
        for f in files:
            if not os.path.isfile(f):
                raise BertJaxError(f"{f}: no such file")
            check_utf8(f)
        fit = lambda backend, trainer: backend.train(files, trainer)
    else:
        if not callable(texts):
            texts = list(texts)
        fresh = texts if callable(texts) else (lambda: iter(texts))
        fit = lambda backend, trainer: backend.train_from_iterator(fresh(), trainer)

    run = functools.partial(
        _train_wordpiece,
        fit,
        lowercase=lowercase,
        min_frequency=min_frequency,
        limit_alphabet=limit_alphabet,
    )
    first = run(len(SPECIAL_TOKENS), list(SPECIAL_TOKENS))  # alphabet + ## tokens, no merges
    continuing = sorted(t for t in first.get_vocab() if t.startswith("##"))
    backend = run(vocab_size, list(SPECIAL_TOKENS) + continuing)
    # Rebuild from the vocabulary alone: the ## tokens were registered as special tokens only
    # to fix their ids; in the tokenizer they are ordinary WordPiece entries.
    vocab = backend.get_vocab()
    plain = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    plain.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return plain


def _train_wordpiece(fit, size: int, specials: list[str], **settings) -> Tokenizer:
    """One `tokenizers` WordPiece training run over the texts `fit` feeds it."""
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=settings.pop("lowercase"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=size,
        special_tokens=specials,
        continuing_subword_prefix="##",
        show_progress=False,
        **settings,
    )
    fit(backend, trainer)
    return backend
