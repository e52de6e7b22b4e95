"""release_free_heap (training/host_memory.py) hands freed heap pages back to the OS."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bert_jax.training.host_memory import release_free_heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")


def test_freed_blocks_below_a_live_one_leave_the_resident_set():
    # 3,000 blocks of 64 KB (under glibc's mmap threshold: they come from the heap); all but the
    # last are freed, so the heap cannot shrink from its top and ~190 MB stay resident until
    # the trim hands the free pages back.
    code = textwrap.dedent(
        """
        import numpy as np
        from bert_jax.training.host_memory import release_free_heap

        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096 / 2**20

        blocks = [np.ones(8192) for _ in range(3000)]  # 64 KB each, written: resident
        last = blocks[-1]
        del blocks
        before = rss_mb()
        assert release_free_heap()
        print(before - rss_mb(), float(last.sum()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    released, _ = out.stdout.split()
    assert float(released) > 150


def test_release_is_harmless_to_call_often():
    assert release_free_heap() is True
    assert release_free_heap() is True


def test_the_trainer_trims_once_per_new_batch_shape(monkeypatch):
    import jax.numpy as jnp

    from bert_jax.training import host_memory

    calls = []
    monkeypatch.setattr(host_memory, "release_free_heap", lambda: calls.append(1) or True)
    trim = host_memory.TrimAfterNewShapes()
    for length in (16, 16, 32, 16, 32):
        batch = {"input_ids": np.zeros((8, length), np.int32), "labels": np.zeros(8, np.int32)}
        trim(batch, {"loss": jnp.ones(())})
    assert len(calls) == 2
