"""Test setup: CPU only, 8 fake devices, set before anything imports jax.

pytest imports this file before the test modules, so the defaults below take effect for every
test (and in every pytest-xdist worker). Values already in the environment win.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
