"""The tests run on several fake CPU devices (8 by default), so that sharded code paths are really exercised."""

import os

import jax


def test_cpu_devices_as_configured():
    assert jax.default_backend() == os.environ["JAX_PLATFORMS"] == "cpu"
    assert jax.device_count() == int(os.environ["JAX_NUM_CPU_DEVICES"]) > 1, jax.devices()
