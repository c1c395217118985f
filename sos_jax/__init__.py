"""sos_jax: language models that learn to search, in JAX (Stream of Search, on device)."""

__version__ = "0.1.0"
