"""Tokenizers on Hugging Face `tokenizers` (Rust): WordPiece (BERT), byte-level BPE (RoBERTa) and
Unigram (XLM-R) `tokenizer.json`s, loaded, saved, trained (deterministically) and run with offsets.

core.py      BertTokenizer: load/save HF directories, encode to arrays, check texts
training.py  deterministic WordPiece training
formats.py   the non-WordPiece tokenizer.json formats and their special tokens
"""

from bert_jax.tokenizer.core import (
    TOKENIZER_FILES,
    BertTokenizer,
    check_texts,
    train_tokenizer,
)
from bert_jax.tokenizer.training import SPECIAL_TOKENS, train_wordpiece

__all__ = [
    "SPECIAL_TOKENS",
    "TOKENIZER_FILES",
    "BertTokenizer",
    "check_texts",
    "train_tokenizer",
    "train_wordpiece",
]
