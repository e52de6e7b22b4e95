"""What every train-step benchmark worker shares: the synthetic MLM batch, the FLOPs count, timing,
and the tiny stdin/stdout protocol the driver (`train_step.py`) uses to interleave workers.

numpy-only on purpose: it is imported both by our worker (main venv) and by the HF Flax worker
(the separate peer venv, which has no bert_jax).

Protocol, one JSON object per line:
  driver → worker  {"cmd": "time", "steps": k}
  worker → driver  {"times": [s, ...], "cpu": [s, ...]}
  driver → worker  {"cmd": "quit"}
The worker first prints {"ready": true, ...info} once its step is compiled and warmed up.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable

import numpy as np

# Google's BERT presets: (layers, hidden); heads = hidden / 64, intermediate = 4 * hidden.
SIZES = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}
VOCAB = 30522
MASK_RATE = 0.15
MASK_ID = 103  # [MASK] in bert-base-uncased
PEAK_LR = 1e-4


@dataclasses.dataclass(frozen=True)
class Workload:
    size: str
    batch: int
    seq: int
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1

    @property
    def layers(self) -> int:
        return SIZES[self.size][0]

    @property
    def hidden(self) -> int:
        return SIZES[self.size][1]

    @property
    def heads(self) -> int:
        return self.hidden // 64

    @property
    def masked(self) -> int:
        """P: predictions per row."""
        return max(1, round(MASK_RATE * self.seq))

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, s: str) -> Workload:
        return cls(**json.loads(s))


def trainer_config(batch_size: int):
    """The Trainer settings every bert_jax row uses. As configs/pretrain/*.py and as the peers:
    clip 1.0, AdamW, weight decay 0.01 off biases and LayerNorm. (bert_jax is imported here, not
    at the top: the HF Flax peer's venv has none.)"""
    from bert_jax.training.trainer_config import OptimizerConfig, TrainerConfig

    optimizer = OptimizerConfig(
        name="adamw",
        learning_rate=PEAK_LR,
        weight_decay=0.01,
        warmup_steps=100,
        decay="linear",
        clip_norm=1.0,
        b1=0.9,
        b2=0.999,
        eps=1e-6,
    )
    return TrainerConfig(
        steps=1_000_000, batch_size=batch_size, optimizer=optimizer, keep_checkpoints=1
    )


def make_batch(w: Workload, seed: int = 0) -> dict[str, np.ndarray]:
    """One full-length (unpadded) row per example, P distinct masked positions per row.

    Our format: input_ids, token_type_ids, attention_mask, segment_ids, position_ids (B, L) int32;
    masked_positions/masked_ids (B, P) int32; masked_weights (B, P) float32.
    HF format (also here): `labels` (B, L) int, -100 except at the masked positions.
    """
    rng = np.random.default_rng(seed)
    b, length, p = w.batch, w.seq, w.masked
    original = rng.integers(1000, VOCAB, size=(b, length), dtype=np.int32)
    original[:, 0], original[:, -1] = 101, 102  # [CLS] ... [SEP]
    positions = np.sort(
        np.stack([rng.choice(np.arange(1, length - 1), p, replace=False) for _ in range(b)]), axis=1
    ).astype(np.int32)
    rows = np.arange(b)[:, None]
    input_ids = original.copy()
    input_ids[rows, positions] = MASK_ID
    labels = np.full((b, length), -100, np.int64)
    labels[rows, positions] = original[rows, positions]
    ones = np.ones((b, length), np.int32)
    return {
        "input_ids": input_ids,
        "token_type_ids": np.zeros((b, length), np.int32),
        "attention_mask": ones,
        "segment_ids": ones,  # one document per row
        "position_ids": np.broadcast_to(np.arange(length, dtype=np.int32), (b, length)).copy(),
        "masked_positions": positions,
        "masked_ids": original[rows, positions],
        "masked_weights": np.ones((b, p), np.float32),
        "labels": labels,
    }


OUR_KEYS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "segment_ids",
    "position_ids",
    "masked_positions",
    "masked_ids",
    "masked_weights",
)


def flops_per_token(w: Workload, head_fraction: float = 1.0, vocab: int = VOCAB) -> float:
    """Training matmul FLOPs per token: 3 x forward (forward + backward ≈ 2 x forward).

    Forward per token and layer: 2·(4·D² + 2·D·I) for the QKV/output/FFN matmuls (I = 4D) plus
    2·2·L·D for QKᵀ and PV. The MLM head (transform D² + decoder D·V) runs on `head_fraction` of
    the tokens: 1 for HF (every position), P/L for bert_jax (masked positions only).
    Embedding lookups, LayerNorm, softmax, GELU and the optimizer are not counted.
    """
    d, i = w.hidden, 4 * w.hidden
    per_layer = 2 * (4 * d * d + 2 * d * i) + 2 * 2 * w.seq * d
    head = 2 * (d * d + d * vocab) * head_fraction
    return 3.0 * (w.layers * per_layer + head)


def time_steps(step: Callable[[], None], k: int) -> tuple[list[float], list[float]]:
    """Wall times and process CPU times (all threads) of k calls of `step`, which must block
    until its results are ready. CPU time is the robust one on a shared machine: other
    processes stretch wall time, but not (much) the CPU seconds a step needs."""
    wall, cpu = [], []
    for _ in range(k):
        c0, t0 = time.process_time(), time.perf_counter()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def serve(step: Callable[[], None], warmup: int, info: dict) -> None:
    """Warm up `step`, announce readiness, then answer the driver's timing requests on stdio."""
    t0 = time.perf_counter()
    time_steps(step, 1)  # includes compilation
    info = {"ready": True, "first_step_s": time.perf_counter() - t0, **info}
    time_steps(step, max(0, warmup - 1))
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints from libraries must not corrupt the protocol
    out.write(json.dumps(info) + "\n")
    out.flush()
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        wall, cpu = time_steps(step, int(msg["steps"]))
        out.write(json.dumps({"times": wall, "cpu": cpu}) + "\n")
        out.flush()
