"""Flax NNX decoder-only transformer (GPT), its loss, and sharding by logical axis names."""
