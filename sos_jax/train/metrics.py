"""Training metrics: a JSONL log and TensorBoard event files in the workdir, throughput and MFU."""

from __future__ import annotations

import json
import os
import time
from typing import Any

# Dense peak FLOP/s per device for bfloat16 (the compute dtype of large runs), by device_kind prefix.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H200": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA A100": 312e12,
}


def measured_matmul_peak(size: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of a float32 ``size x size`` matmul on the default device, best of ``repeats``."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops_per_device(configured: float) -> tuple[float, str]:
    """The peak used for MFU and where it came from: the config, the table, or a measured CPU matmul."""
    import jax

    if configured > 0:
        return configured, "config"
    kind = jax.devices()[0].device_kind
    for prefix, peak in PEAK_FLOPS.items():
        if kind.startswith(prefix):
            return peak, f"table ({prefix})"
    return measured_matmul_peak(), f"measured f32 matmul on {kind}"


class Writers:
    """Appends metric dicts to ``metrics.jsonl`` and TensorBoard event files under ``tb/``.

    Over several processes only process 0 writes; on the others every call does nothing.
    """

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        from sos_jax import distributed

        self._enabled = distributed.is_main_process()
        if self._enabled:
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Records ``metrics`` (numbers) at ``step``."""
        if not self._enabled:
            return
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        for name, value in metrics.items():
            self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        """Flushes and closes both files."""
        if self._enabled:
            self._jsonl.close()
            self._tb.close()
