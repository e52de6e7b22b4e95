"""Compact pretraining rows: what a row holds, stored small, expanded to model inputs on read.

A row is kept as the content tokens of its segments (no [CLS]/[SEP]/padding), one bit per token
saying whether it starts a word, and (NSP) its label. `Rows.expand` rebuilds the six int32 arrays
the model and the masker take, (n, max_length) each:

  packed: each segment is `[CLS] content [SEP]`; segment_ids number the segments 1, 2, ...
          (0 = pad); position_ids restart at 0 in each segment; token_type_ids are 0.
  nsp:    two segments A, B: `[CLS] A [SEP] B [SEP]`; token_type_ids 1 on `B [SEP]`;
          segment_ids equal attention_mask; position_ids run 0..length-1.

word_ids number the words of a row 0, 1, ... (-1 on specials and padding): a word starts where
its bit is set and at the first token of every segment (a segment can open mid-word where a
sentence was split across rows). `to_bytes`/`from_bytes` serialise a group of rows into one
ArrayRecord record: ~2 bytes per token with uint16 ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bert_jax.errors import BertJaxError

ROW_KEYS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "segment_ids",
    "position_ids",
    "word_ids",
)
_HAS_LABELS, _WIDE_IDS = 1, 2  # header flag bits


@dataclasses.dataclass(frozen=True)
class Rows:
    """R rows with S segments and T content tokens in all, rows in order, segments in order."""

    ids: np.ndarray  # (T,) int32 content token ids
    word_starts: np.ndarray  # (T,) bool: the token begins a word
    seg_lens: np.ndarray  # (S,) int64 content tokens per segment
    row_segs: np.ndarray  # (R,) int64 segments per row
    labels: np.ndarray | None = None  # (R,) int32 NotNext labels in the nsp layout, else None

    def __len__(self) -> int:
        return len(self.row_segs)

    @property
    def nsp(self) -> bool:
        return self.labels is not None

    def real_tokens(self) -> int:
        """Tokens the rows hold once expanded, specials included (padding excluded)."""
        specials = 3 * len(self) if self.nsp else 2 * len(self.seg_lens)
        return int(self.seg_lens.sum()) + specials

    def select(self, index: np.ndarray | Sequence[int]) -> Rows:
        """The rows at `index` (any order, repeats allowed)."""
        index = np.asarray(index, np.int64)
        seg_start = _exclusive_cumsum(self.row_segs)
        tok_start = _exclusive_cumsum(self.seg_lens)
        segs = concat_ranges(seg_start[index], self.row_segs[index])
        toks = concat_ranges(tok_start[segs], self.seg_lens[segs])
        return Rows(
            self.ids[toks],
            self.word_starts[toks],
            self.seg_lens[segs],
            self.row_segs[index],
            None if self.labels is None else self.labels[index],
        )

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        if not parts:
            raise BertJaxError("no rows to concatenate")
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])
        labels = None if parts[0].labels is None else cat("labels")
        return Rows(cat("ids"), cat("word_starts"), cat("seg_lens"), cat("row_segs"), labels)

    # ------------------------------------------------------------------------------ expansion
    def expand(self, max_length: int, cls_id: int, sep_id: int) -> dict[str, np.ndarray]:
        """The rows as int32 arrays of shape (R, max_length) (+ next_sentence_label (R,))."""
        n_rows, n_segs = len(self.row_segs), len(self.seg_lens)
        out = {k: np.zeros((n_rows, max_length), np.int32) for k in ROW_KEYS}
        out["word_ids"][:] = -1
        if self.nsp:
            out["next_sentence_label"] = self.labels.astype(np.int32)
        if n_segs == 0:
            return out
        seg_row = np.repeat(np.arange(n_rows), self.row_segs)  # (S,)
        first_seg = _exclusive_cumsum(self.row_segs)  # (R,)
        seg_in_row = np.arange(n_segs) - first_seg[seg_row]  # 0, 1, ... within each row
        # nsp: [CLS] only before A; packed: before every segment. [SEP] after every segment.
        prefix = (seg_in_row == 0) if self.nsp else np.ones(n_segs, bool)
        width = self.seg_lens + prefix + 1  # (S,) columns a segment takes
        seg_start = _exclusive_cumsum(width)  # in the concatenation of all rows
        col0 = seg_start - seg_start[first_seg][seg_row]  # first column within its row
        if np.any(col0 + width > max_length):
            raise BertJaxError(f"a stored row is longer than max_length={max_length}")
        slot_seg = np.repeat(np.arange(n_segs), width)  # (P,) segment of each filled slot
        j = np.arange(len(slot_seg)) - seg_start[slot_seg]  # offset within the segment
        row, col = seg_row[slot_seg], col0[slot_seg] + j
        is_cls = (j == 0) & prefix[slot_seg]
        is_sep = j == width[slot_seg] - 1
        content = ~(is_cls | is_sep)
        values = np.where(is_cls, cls_id, sep_id).astype(np.int32)
        values[content] = self.ids
        out["input_ids"][row, col] = values
        out["attention_mask"][row, col] = 1
        if self.nsp:
            out["token_type_ids"][row, col] = seg_in_row[slot_seg] >= 1
            out["segment_ids"][row, col] = 1
            out["position_ids"][row, col] = col
        else:
            out["segment_ids"][row, col] = seg_in_row[slot_seg] + 1
            out["position_ids"][row, col] = j
        out["word_ids"][row[content], col[content]] = self._word_numbers(seg_row)
        return out

    def _word_numbers(self, seg_row: np.ndarray) -> np.ndarray:
        """(T,) word number of each content token within its row."""
        starts = self.word_starts.astype(bool, copy=True)
        tok_start = _exclusive_cumsum(self.seg_lens)
        nonempty = self.seg_lens > 0
        starts[tok_start[nonempty]] = True  # a segment always opens a word
        count = np.cumsum(starts)
        row_tokens = np.bincount(seg_row, weights=self.seg_lens, minlength=len(self.row_segs))
        row_first = _exclusive_cumsum(row_tokens.astype(np.int64))
        base = np.where(row_first > 0, count[np.maximum(row_first - 1, 0)], 0)  # words before
        tok_row = np.repeat(np.arange(len(self.row_segs)), row_tokens.astype(np.int64))
        return (count - base[tok_row] - 1).astype(np.int32)

    # ---------------------------------------------------------------------------- serialising
    def to_bytes(self, id_dtype: np.dtype) -> bytes:
        """One record: header (4 x uint32), row_segs and seg_lens (uint16), ids (id_dtype),
        labels (uint8, nsp), word-start bits."""
        id_dtype = np.dtype(id_dtype)
        flags = (_HAS_LABELS if self.nsp else 0) | (_WIDE_IDS if id_dtype.itemsize == 4 else 0)
        header = np.array([len(self.row_segs), len(self.seg_lens), len(self.ids), flags], "<u4")
        parts = [
            header,
            self.row_segs.astype("<u2"),
            self.seg_lens.astype("<u2"),
            self.ids.astype(id_dtype.newbyteorder("<")),
        ]
        if self.nsp:
            parts.append(self.labels.astype(np.uint8))
        parts.append(np.packbits(self.word_starts.astype(bool)))
        return b"".join(p.tobytes() for p in parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Rows:
        """Inverse of `to_bytes`; raises ValueError on a record of the wrong size."""
        n_rows, n_segs, n_toks, flags = (int(x) for x in np.frombuffer(data, "<u4", 4))
        id_dtype = np.dtype("<u4" if flags & _WIDE_IDS else "<u2")
        n_label = n_rows if flags & _HAS_LABELS else 0
        sizes = (16, 2 * n_rows, 2 * n_segs, id_dtype.itemsize * n_toks, n_label, -(-n_toks // 8))
        if sum(sizes) != len(data):
            raise ValueError(f"record of {len(data)} bytes, its header says {sum(sizes)}")
        at = np.cumsum(sizes)
        view = memoryview(data)
        row_segs = np.frombuffer(view[at[0] : at[1]], "<u2").astype(np.int64)
        seg_lens = np.frombuffer(view[at[1] : at[2]], "<u2").astype(np.int64)
        ids = np.frombuffer(view[at[2] : at[3]], id_dtype).astype(np.int32)
        labels = np.frombuffer(view[at[3] : at[4]], np.uint8).astype(np.int32) if n_label else None
        bits = np.unpackbits(np.frombuffer(view[at[4] : at[5]], np.uint8), count=n_toks)
        return cls(ids, bits.astype(bool), seg_lens, row_segs, labels)


def id_dtype_for(vocab_size: int) -> np.dtype:
    """uint16 ids where the vocabulary fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    out = np.zeros(len(x), np.int64)
    np.cumsum(x[:-1], out=out[1:])
    return out


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), without a Python loop."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    keep = lengths > 0
    starts, lengths = np.asarray(starts, np.int64)[keep], lengths[keep]
    step = np.ones(total, np.int64)
    first = _exclusive_cumsum(lengths)
    step[0] = starts[0]
    step[first[1:]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
    return np.cumsum(step)
