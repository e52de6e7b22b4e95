"""What the machine offers: the compute dtype it runs fastest, and JAX's persistent compile cache.

`resolve_dtype("auto")` is bfloat16 (fp32 accumulation, see precision.py) on GPUs, TPUs and CPUs
with native bf16 dot instructions (AVX512-BF16 or AMX: measured 1.4-3x faster train steps), and
float32 elsewhere, where bf16 matmuls are emulated and slower than fp32. Parameters, LayerNorm and
softmax stay fp32 either way.

`enable_compilation_cache()` points JAX's persistent cache at a user cache dir, so a second run of
the same model and shapes (a resumed fine-tuning, the next `predict`) loads compiled executables
instead of compiling them again.
"""

from __future__ import annotations

import functools
import os

import jax

from bert_jax.errors import BertJaxError

DTYPES = ("auto", "float32", "bfloat16", "float16")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fast_bf16(platform: str | None = None, flags: frozenset[str] | None = None) -> bool:
    """Whether bf16 matmuls run natively (faster than fp32) on the default backend."""
    platform = platform or jax.default_backend()
    if platform in ("gpu", "cuda", "rocm", "tpu"):
        return True
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def resolve_dtype(
    name: str | None, *, platform: str | None = None, flags: frozenset[str] | None = None
) -> str:
    """A concrete compute dtype for a config value: "auto" (or empty) picks by `fast_bf16`."""
    name = name or "auto"
    if name not in DTYPES:
        raise BertJaxError(f"dtype must be one of {DTYPES}, got {name!r}")
    if name != "auto":
        return name
    return "bfloat16" if fast_bf16(platform, flags) else "float32"


def describe_dtype(name: str | None, resolved: str) -> str:
    """One line for the log: which dtype runs, and why."""
    if (name or "auto") != "auto":
        return f"compute dtype {resolved} (set in the config)"
    reason = "native bf16 matmuls" if resolved == "bfloat16" else "no native bf16 on this device"
    return f"compute dtype {resolved} (auto: {reason}; set dtype=float32 to override)"


def default_cache_dir() -> str:
    """$BERT_JAX_CACHE_DIR, else $XDG_CACHE_HOME/bert_jax/jax, else ~/.cache/bert_jax/jax."""
    if os.environ.get("BERT_JAX_CACHE_DIR"):
        return os.environ["BERT_JAX_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bert_jax", "jax")


@functools.cache
def enable_compilation_cache(directory: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (once per process) unless the user configured
    one already or set BERT_JAX_CACHE_DIR=off. Returns the directory in use (None: off)."""
    if os.environ.get("BERT_JAX_CACHE_DIR", "").lower() in ("off", "0", "none"):
        return None
    if jax.config.jax_compilation_cache_dir:  # the user's own choice wins
        return jax.config.jax_compilation_cache_dir
    directory = directory or default_cache_dir()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache rather than fail
    jax.config.update("jax_compilation_cache_dir", directory)
    # Small models compile in well under a second per shape; cache those too.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
