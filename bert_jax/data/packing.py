"""Pretraining rows from documents: packed MLM rows and BERT next-sentence (NSP) pairs.

Both builders tokenize every sentence of a batch of documents in one call and lay the rows out
as compact `Rows` (content tokens + segment lengths, bert_jax.data.rows): what `prepare` stores.
`build_packed_rows`/`build_nsp_rows` expand them to a dict of int32 arrays of shape
(num_rows, max_length): input_ids, token_type_ids, attention_mask, segment_ids, position_ids,
word_ids (+ next_sentence_label (num_rows,) for NSP). `word_ids` numbers the words of a row
(0, 1, ..., -1 on [CLS]/[SEP]/pad) for whole-word masking; the pipeline drops it.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence

import numpy as np
import tokenizers

from bert_jax.data.rows import Rows, concat_ranges
from bert_jax.errors import BertJaxError


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

    def word_starts(self) -> np.ndarray:
        """(num_tokens,) bool: the token opens a word."""
        starts = np.ones(len(self.words), bool)
        starts[1:] = self.words[1:] != self.words[:-1]
        return starts


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
    del encodings  # the largest object here: ~100 bytes per token
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


def pack_tokens(tok: TokenizedDocs, max_length: int) -> Rows:
    """Pack documents into rows of `[CLS] sentences... [SEP]` segments, filled greedily.

    A new document starts a new segment; a sentence that does not fit in the rest of a row is
    split across rows (never dropped), and the part in the next row opens a new segment there.
    Segments cover the token stream in order, so the rows' content is `tok.ids` itself.
    """
    if max_length < 3:
        raise BertJaxError(f"max_length={max_length}: packed rows need at least 3 tokens")
    seg_lens, row_segs = [], []
    used, segs = 0, 0  # of the open row
    for d in range(len(tok.doc_starts) - 1):
        pos, stop = tok.doc_tokens(d)
        while pos < stop:
            room = max_length - used
            if room < 3:  # no space for [CLS] token [SEP]: close the row
                row_segs.append(segs)
                used, segs = 0, 0
                continue
            k = min(stop - pos, room - 2)
            seg_lens.append(k)
            segs += 1
            used, pos = used + k + 2, pos + k
    if segs:
        row_segs.append(segs)
    return Rows(
        tok.ids,
        tok.word_starts(),
        np.asarray(seg_lens, np.int64),
        np.asarray(row_segs, np.int64),
    )


def build_packed_rows(
    docs: Sequence[Sequence[str]], tokenizer, max_length: int
) -> dict[str, np.ndarray]:
    """`pack_tokens` on `docs`, expanded to (num_rows, max_length) int32 arrays. segment_ids
    number the segments of a row 1, 2, ... (0 = pad); position_ids restart at 0 in each
    segment; token_type_ids are 0."""
    rows = pack_tokens(tokenize_documents(docs, tokenizer), max_length)
    return rows.expand(max_length, tokenizer.cls_id, tokenizer.sep_id)


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
    """`pair_tokens` on `docs` with `random.Random(seed)`, expanded to int32 arrays."""
    tok = tokenize_documents(docs, tokenizer)
    rows = pair_tokens(
        tok,
        max_length,
        random.Random(seed),
        short_seq_prob=short_seq_prob,
        dupe_factor=dupe_factor,
    )
    return rows.expand(max_length, tokenizer.cls_id, tokenizer.sep_id)


def pair_tokens(
    tok: TokenizedDocs,
    max_length: int,
    rng: random.Random,
    *,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
) -> Rows:
    """Sentence-pair rows `[CLS] A [SEP] B [SEP]` as google-research/bert create_pretraining_data.

    Per document, sentences are gathered up to a target length (max_length - 3, or with
    probability short_seq_prob a random shorter one); a random prefix of the chunk is A; B is the
    rest (IsNext, label 0) or, half the time or when the chunk is one sentence, text from a
    random other document (NotNext, label 1; the unused sentences are put back). The longer side
    is truncated, randomly from front or back, until the pair fits. token_type_ids are 0 for
    [CLS] A [SEP] and 1 for B [SEP]; segment_ids equal attention_mask; rows are shuffled.
    `dupe_factor` passes over the documents give different pairings, as in the original.
    """
    if max_length < 5:
        raise BertJaxError(f"max_length={max_length}: sentence pairs need at least 5 tokens")
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
    max_tokens = max_length - 3
    pairs = []  # (A spans, B spans, trimmed A range, trimmed B range, label)
    for _ in range(dupe_factor):
        for d, doc in enumerate(doc_sents):
            pairs.extend(_doc_pairs(d, doc, doc_sents, max_tokens, short_seq_prob, rng))
    rng.shuffle(pairs)
    return _pairs_to_rows(pairs, tok)


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


def _pairs_to_rows(pairs, tok: TokenizedDocs) -> Rows:
    """Rows of (A, B) segments; A and B are each a contiguous run of the token stream."""
    starts, lengths = [], []
    for a, b, (alo, ahi), (blo, bhi), _ in pairs:
        starts += [a[0][0] + alo, b[0][0] + blo]
        lengths += [ahi - alo, bhi - blo]
    index = concat_ranges(np.asarray(starts, np.int64), np.asarray(lengths, np.int64))
    return Rows(
        tok.ids[index],
        tok.word_starts()[index],
        np.asarray(lengths, np.int64),
        np.full(len(pairs), 2, np.int64),
        np.asarray([p[-1] for p in pairs], np.int32),
    )
