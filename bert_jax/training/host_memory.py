"""Handing freed heap memory back to the OS.

glibc's malloc returns memory to the OS only from the top of each heap. Compiling an XLA program
and running it for the first time frees many blocks below blocks that stay in use (the program's
own), and those pages stay resident: ~50-150 MB per compiled shape when fine-tuning MiniLM on CPU.
`malloc_trim(0)` releases every whole free page. Measured on a quick tweet fine-tuning run (six
length buckets): the resident set after training fell from 1,300 to 1,146 MB and the peak from
1,576 to 1,446 MB. It takes milliseconds, so the Trainer calls it once per new batch shape.
"""

from __future__ import annotations

import ctypes
import functools


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
