"""The tests run on 8 fake CPU devices, so that sharded code paths are really exercised."""

import os

import pytest


def test_eight_cpu_devices():
    if os.environ.get("JAX_NUM_CPU_DEVICES") != "8" or os.environ.get("JAX_PLATFORMS") != "cpu":
        pytest.skip("JAX_PLATFORMS/JAX_NUM_CPU_DEVICES overridden in the environment")
    import jax

    assert jax.device_count() == 8, jax.devices()
    assert all(d.platform == "cpu" for d in jax.devices())
