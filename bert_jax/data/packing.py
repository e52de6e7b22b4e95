"""Pretraining rows from documents: packed MLM rows and BERT next-sentence (NSP) pairs.

Both builders tokenize every sentence of every document in one batched call, then lay tokens out
in numpy. Output is a dict of int32 arrays of shape (num_rows, max_length):
input_ids, token_type_ids, attention_mask, segment_ids, position_ids, word_ids
(+ next_sentence_label (num_rows,) for NSP). `word_ids` numbers the words of a row (0, 1, ...,
unique within the row, -1 on [CLS]/[SEP]/pad) for whole-word masking; the pipeline drops it.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence

import numpy as np
import tokenizers

from bert_jax.errors import BertJaxError

ROW_KEYS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "segment_ids",
    "position_ids",
    "word_ids",
)


@dataclasses.dataclass(frozen=True)
class TokenizedDocs:
    """A corpus as one token stream. Sentence s is ids[sent_starts[s]:sent_starts[s + 1]];
    document d is sentences doc_starts[d]:doc_starts[d + 1]. `words` gives every token a
    corpus-wide word number (the sub-tokens of one word share it; numbers increase)."""

    ids: np.ndarray  # (num_tokens,) int32
    words: np.ndarray  # (num_tokens,) int64
    sent_starts: np.ndarray  # (num_sentences + 1,) int64
    doc_starts: np.ndarray  # (num_docs + 1,) int64

    def doc_tokens(self, d: int) -> tuple[int, int]:
        """Token range [start, stop) of document d."""
        s0, s1 = self.doc_starts[d], self.doc_starts[d + 1]
        return int(self.sent_starts[s0]), int(self.sent_starts[s1])


def tokenize_documents(docs: Sequence[Sequence[str]], tokenizer) -> TokenizedDocs:
    """Tokenize all sentences in one `encode_batch` call (no specials, no truncation)."""
    backend: tokenizers.Tokenizer = tokenizer.backend
    if backend.truncation is not None or backend.padding is not None:
        # Never lose tokens to a truncating backend; work on a plain copy.
        backend = tokenizers.Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
    sentences = [s for doc in docs for s in doc]
    encodings = backend.encode_batch(sentences, add_special_tokens=False) if sentences else []
    lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
    total = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.int32, total)
    local = np.fromiter(
        (-1 if w is None else w for e in encodings for w in e.word_ids), np.int64, total
    )
    sent_starts = np.zeros(len(sentences) + 1, np.int64)
    np.cumsum(lengths, out=sent_starts[1:])
    # A new word starts at each sentence start and wherever the per-sentence word index changes.
    new_word = np.ones(total, bool)
    new_word[1:] = local[1:] != local[:-1]
    new_word[sent_starts[:-1][lengths > 0]] = True
    new_word |= local < 0
    words = np.cumsum(new_word) - 1
    doc_starts = np.zeros(len(docs) + 1, np.int64)
    np.cumsum([len(d) for d in docs], out=doc_starts[1:])
    return TokenizedDocs(ids, words, sent_starts, doc_starts)


def build_packed_rows(
    docs: Sequence[Sequence[str]], tokenizer, max_length: int
) -> dict[str, np.ndarray]:
    """Pack documents into rows of `[CLS] sentences... [SEP]` segments, filled greedily.

    A new document starts a new segment; a sentence that does not fit in the rest of a row is
    split across rows (never dropped), and the part in the next row opens a new segment there.
    segment_ids number the segments of a row 1, 2, ... (0 = pad); position_ids restart at 0 in
    each segment; token_type_ids are 0.
    """
    if max_length < 3:
        raise BertJaxError(f"max_length={max_length}: packed rows need at least 3 tokens")
    tok = tokenize_documents(docs, tokenizer)
    # Plan the layout first: (row, column, token start, token count, segment number).
    plan = []
    row, used, seg = 0, 0, 0
    for d in range(len(tok.doc_starts) - 1):
        pos, stop = tok.doc_tokens(d)
        while pos < stop:
            room = max_length - used
            if room < 3:  # no space for [CLS] token [SEP]: close the row
                row, used, seg = row + 1, 0, 0
                continue
            k = min(stop - pos, room - 2)
            seg += 1
            plan.append((row, used, pos, k, seg))
            used, pos = used + k + 2, pos + k
    num_rows = row + 1 if plan else 0
    rows = {k: np.zeros((num_rows, max_length), np.int32) for k in ROW_KEYS}
    rows["word_ids"][:] = -1
    word_base = np.zeros(num_rows, np.int64)  # next free word number in each row
    ar = np.arange(max_length, dtype=np.int32)
    for row, col, pos, k, seg in plan:
        end = col + k + 2
        rows["input_ids"][row, col] = tokenizer.cls_id
        rows["input_ids"][row, col + 1 : end - 1] = tok.ids[pos : pos + k]
        rows["input_ids"][row, end - 1] = tokenizer.sep_id
        rows["segment_ids"][row, col:end] = seg
        rows["position_ids"][row, col:end] = ar[: k + 2]
        rows["attention_mask"][row, col:end] = 1
        w = tok.words[pos : pos + k] - tok.words[pos]
        rows["word_ids"][row, col + 1 : end - 1] = w + word_base[row]
        word_base[row] += w[-1] + 1
    return rows


def real_token_fraction(rows: dict[str, np.ndarray]) -> float:
    """Share of row positions holding a real token (specials included) rather than padding."""
    mask = rows["attention_mask"]
    return float(mask.mean()) if mask.size else 0.0


def build_nsp_rows(
    docs: Sequence[Sequence[str]],
    tokenizer,
    max_length: int,
    seed: int,
    *,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
) -> dict[str, np.ndarray]:
    """Sentence-pair rows `[CLS] A [SEP] B [SEP]` as google-research/bert create_pretraining_data.

    Per document, sentences are gathered up to a target length (max_length - 3, or with
    probability short_seq_prob a random shorter one); a random prefix of the chunk is A; B is the
    rest (IsNext, label 0) or, half the time or when the chunk is one sentence, text from a
    random other document (NotNext, label 1; the unused sentences are put back). The longer side
    is truncated, randomly from front or back, until the pair fits. token_type_ids are 0 for
    [CLS] A [SEP] and 1 for B [SEP]; segment_ids equal attention_mask; rows are shuffled.
    `dupe_factor` passes over the corpus give different pairings, as in the original.
    """
    if max_length < 5:
        raise BertJaxError(f"max_length={max_length}: sentence pairs need at least 5 tokens")
    tok = tokenize_documents(docs, tokenizer)
    # Documents as lists of sentence token ranges, without empty sentences and documents.
    doc_sents = []
    for d in range(len(tok.doc_starts) - 1):
        s = range(int(tok.doc_starts[d]), int(tok.doc_starts[d + 1]))
        spans = [(int(tok.sent_starts[i]), int(tok.sent_starts[i + 1])) for i in s]
        spans = [(a, b) for a, b in spans if b > a]
        if spans:
            doc_sents.append(spans)
    if not doc_sents:
        raise BertJaxError("corpus is empty: no tokens to build sentence pairs from")
    rng = random.Random(seed)
    max_tokens = max_length - 3
    pairs = []  # (A spans, B spans, trimmed A range, trimmed B range, label)
    for _ in range(dupe_factor):
        for d, doc in enumerate(doc_sents):
            pairs.extend(_doc_pairs(d, doc, doc_sents, max_tokens, short_seq_prob, rng))
    rng.shuffle(pairs)
    return _pairs_to_rows(pairs, tok, tokenizer, max_length)


def _doc_pairs(d, doc, doc_sents, max_tokens, short_seq_prob, rng):
    """create_instances_from_document for one document: yields (a_ids, b_ids, label) pieces."""
    target = max_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_tokens)
    chunk, length, i = [], 0, 0
    while i < len(doc):
        chunk.append(doc[i])
        length += doc[i][1] - doc[i][0]
        if i == len(doc) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a = chunk[:a_end]
            if len(chunk) == 1 or rng.random() < 0.5:
                label = 1
                b_target = target - sum(e - s for s, e in a)
                other = d
                for _ in range(10):
                    other = rng.randint(0, len(doc_sents) - 1)
                    if other != d:
                        break
                rand_doc = doc_sents[other]
                b, b_len = [], 0
                for span in rand_doc[rng.randint(0, len(rand_doc) - 1) :]:
                    b.append(span)
                    b_len += span[1] - span[0]
                    if b_len >= b_target:
                        break
                i -= len(chunk) - a_end  # the unused sentences start the next chunk
            else:
                label, b = 0, chunk[a_end:]
            yield _truncate_pair(a, b, max_tokens, rng) + (label,)
            chunk, length = [], 0
        i += 1


def _truncate_pair(a, b, max_tokens, rng):
    """Drop tokens from the front or back (coin flip) of the longer side until both fit."""
    na, nb = sum(e - s for s, e in a), sum(e - s for s, e in b)
    cut = [[0, na], [0, nb]]  # kept [lo, hi) within the concatenated side
    while (cut[0][1] - cut[0][0]) + (cut[1][1] - cut[1][0]) > max_tokens:
        side = cut[0] if cut[0][1] - cut[0][0] > cut[1][1] - cut[1][0] else cut[1]
        if rng.random() < 0.5:
            side[0] += 1
        else:
            side[1] -= 1
    return a, b, tuple(cut[0]), tuple(cut[1])


def _pairs_to_rows(pairs, tok: TokenizedDocs, tokenizer, max_length):
    n = len(pairs)
    rows = {k: np.zeros((n, max_length), np.int32) for k in ROW_KEYS}
    rows["word_ids"][:] = -1
    labels = np.zeros(n, np.int32)
    for r, (a, b, (alo, ahi), (blo, bhi), label) in enumerate(pairs):
        a_idx = np.concatenate([np.arange(s, e) for s, e in a])[alo:ahi]
        b_idx = np.concatenate([np.arange(s, e) for s, e in b])[blo:bhi]
        na, nb = len(a_idx), len(b_idx)
        length = na + nb + 3
        ids = rows["input_ids"][r]
        ids[0], ids[na + 1], ids[length - 1] = tokenizer.cls_id, tokenizer.sep_id, tokenizer.sep_id
        ids[1 : na + 1] = tok.ids[a_idx]
        ids[na + 2 : length - 1] = tok.ids[b_idx]
        rows["token_type_ids"][r, na + 2 : length] = 1
        rows["attention_mask"][r, :length] = 1
        rows["position_ids"][r, :length] = np.arange(length)
        # Renumber corpus-wide words 0, 1, ... within the row (A and B never share a number).
        _, local = np.unique(
            np.concatenate([tok.words[a_idx], tok.words[b_idx] + (1 << 40)]), return_inverse=True
        )
        rows["word_ids"][r, 1 : na + 1] = local[:na]
        rows["word_ids"][r, na + 2 : length - 1] = local[na:]
        labels[r] = label
    rows["segment_ids"] = rows["attention_mask"].copy()
    rows["next_sentence_label"] = labels
    return rows
