"""bert_jax: BERT in JAX/Flax NNX with the Hugging Face directory format as its model format."""

from bert_jax.xla_flags import prefer_flags

__version__ = "0.1.0"

prefer_flags()  # before JAX starts a backend: XLA reads XLA_FLAGS once (xla_flags.py)


def __getattr__(name: str):
    # `bert_jax.load_exported` without making `import bert_jax` load JAX.
    if name == "load_exported":
        from bert_jax.inference.exported import load_exported

        return load_exported
    raise AttributeError(f"module 'bert_jax' has no attribute {name!r}")
