"""bert_jax: BERT in JAX/Flax NNX with the Hugging Face directory format as its model format."""

__version__ = "0.1.0"
