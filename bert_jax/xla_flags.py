"""The XLA flags bert_jax prefers, added to XLA_FLAGS when `bert_jax` is imported.

XLA reads XLA_FLAGS once, when JAX starts its first backend (`import jax` alone starts none), so
they take effect when bert_jax is imported before any computation runs, as the CLI and most
notebooks do. A flag the user already names in XLA_FLAGS keeps the user's value.

- XLA:CPU's concurrency-optimised scheduler orders a program's ops so that independent ones can
  run side by side, which keeps more buffers alive at once. Turned off, a MiniLM fine-tuning step
  (batch 32, length 64) needs 499 MB of temporaries instead of 641 MB, and a quick tweet
  fine-tuning run peaked at 1,941 MB of RSS instead of 2,082, at the same step time on 2 cores
  (docs/benchmarks.md §6). XLA honours it only through XLA_FLAGS: `jax.jit(compiler_options=...)`
  accepts and ignores it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

PREFERRED = {"xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def prefer_flags(environ: MutableMapping[str, str] = os.environ) -> str:
    """Append each PREFERRED flag that `environ["XLA_FLAGS"]` does not name; returns the result."""
    flags = environ.get("XLA_FLAGS", "")
    named = {part.lstrip("-").split("=", 1)[0] for part in flags.split()}
    added = [f"--{name}={value}" for name, value in PREFERRED.items() if name not in named]
    if added:
        environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return environ.get("XLA_FLAGS", "")
