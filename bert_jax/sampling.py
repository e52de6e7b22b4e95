"""Seeded choices of rows, the one way: held-out splits, subsets, and each host's block of a batch.

Shared by pretraining data (documents), fine-tuning data (examples) and training (hosts), so a
split or a host's rows never depend on which layer asked.
"""

from __future__ import annotations

import numpy as np

from bert_jax.errors import BertJaxError


def held_out(
    n: int, fraction: float, seed: int, *, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split range(n) into sorted (kept, held) index arrays, holding out round(fraction * size)
    of each group (at least 1, never all of it), chosen by `seed`. `groups` (n,) keeps each
    group's share in both parts (e.g. class labels); None means one group."""
    if not 0.0 < fraction < 1.0:
        raise BertJaxError(f"held-out fraction must be in (0, 1), got {fraction}")
    groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    held = [np.zeros(0, np.int64)]
    for g in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == g))
        count = min(len(members) - 1, max(1, round(len(members) * fraction)))
        held.append(members[:count])
    is_held = np.zeros(n, bool)
    is_held[np.concatenate(held)] = True
    return np.flatnonzero(~is_held), np.flatnonzero(is_held)


def subset(n: int, limit: int, seed: int) -> np.ndarray:
    """All of range(n), or a seeded random `limit` of them in their original order."""
    if limit <= 0 or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def host_block(rows, index: int, count: int):
    """Host `index`'s contiguous block of a global batch's rows (an array or a dict of arrays,
    leading dim = rows): `jax.make_array_from_process_local_data` (and so per-row randomness such
    as dropout) expects the rows in process order."""
    if isinstance(rows, dict):
        return {k: host_block(v, index, count) for k, v in rows.items()}
    n = len(rows) // count
    return rows[index * n : (index + 1) * n]
