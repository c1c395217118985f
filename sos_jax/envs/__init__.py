"""Puzzle environments: problem sampling, transitions and solution checks, pure JAX."""
