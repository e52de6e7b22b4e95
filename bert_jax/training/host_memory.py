"""Handing freed heap memory back to the OS.

glibc's malloc returns memory to the OS only from the top of each heap. Compiling an XLA program
and running it for the first time frees many blocks below blocks that stay in use (the program's
own), and those pages stay resident: ~50-150 MB per compiled shape when fine-tuning MiniLM on CPU.
`malloc_trim(0)` releases every whole free page. Measured on a quick tweet fine-tuning run (six
length buckets): the resident set after training fell from 1,300 to 1,096 MB and the peak from
1,576 to 1,424 MB. It takes milliseconds; the Trainer calls it after building its state, after
each new batch shape's first step (`TrimAfterNewShapes`) and after each evaluation.
"""

from __future__ import annotations

import ctypes
import functools

import jax
import numpy as np


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc (Linux); absent elsewhere
    except (OSError, AttributeError):
        return None


def release_free_heap() -> bool:
    """Return the heap's whole free pages to the OS; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class TrimAfterNewShapes:
    """`trim(batch, outputs)` after each step: the first time a batch shape is seen (its program
    was just compiled and run once) it waits for `outputs` and releases the free heap."""

    def __init__(self):
        self.seen: set = set()

    def __call__(self, batch: dict, outputs) -> None:
        shape = tuple(sorted((name, np.shape(value)) for name, value in batch.items()))
        if shape in self.seen:
            return
        self.seen.add(shape)
        jax.block_until_ready(outputs)  # its temporaries are freed once the step is done
        release_free_heap()
