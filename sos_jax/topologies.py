"""Hardware topologies a pretraining run can be sized for, each with a default mesh.

A topology names a slice or a set of GPU nodes: the device kind (as ``jax.devices()[0].device_kind``
reports it), how many devices and hosts it has, the memory of one device and the (data, fsdp,
tensor) mesh a ``PRESET@TOPOLOGY`` config gets. The default meshes keep ``fsdp`` within one host
(its fast local links: NVLink, or a TPU host's chips) and put ``data`` across hosts; ``tensor`` stays
1, since every model preset (up to ``sos-250m``) fits on one device once ``fsdp`` shards it. TPU
names follow Cloud TPU: v4 and v5p names count TensorCores (two per chip, one JAX device per chip),
so ``v4-32`` and ``v5p-128`` are 16 and 64 devices; v5e and v6e names count chips.

``cpu-8`` is 8 fake CPU devices (``JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=8``), the tests' setup.
"""

from __future__ import annotations

import dataclasses

from sos_jax.jobs import ConfigError

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Topology:
    """One topology (see the module doc). ``device_kinds`` lists the ``device_kind`` strings accepted
    for it, the reference part first; ``usable_fraction`` is the share of ``hbm_bytes`` a JAX process
    gets by default (GPUs: JAX preallocates 75%, ``XLA_PYTHON_CLIENT_MEM_FRACTION``)."""

    name: str
    device_kinds: tuple[str, ...]
    devices: int
    hosts: int
    hbm_bytes: int | None  # per device; None: host memory (CPU)
    mesh: tuple[int, int, int]  # data, fsdp, tensor
    usable_fraction: float = 1.0

    @property
    def device_kind(self) -> str:
        """The reference part's ``device_kind``."""
        return self.device_kinds[0]

    @property
    def usable_bytes(self) -> int | None:
        """Memory per device a step may use by default; None for CPU topologies."""
        return None if self.hbm_bytes is None else int(self.hbm_bytes * self.usable_fraction)

    def mesh_dict(self) -> dict[str, int]:
        """The default mesh as ``{"data": ..., "fsdp": ..., "tensor": ...}``."""
        return dict(zip(("data", "fsdp", "tensor"), self.mesh))

    def batch_for(self, batch: int) -> int:
        """``batch`` rounded up to a multiple of data x fsdp (the rows split over the mesh)."""
        rows = self.mesh[0] * self.mesh[1]
        return -(-batch // rows) * rows


_H100 = ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL")
_H200 = ("NVIDIA H200", "NVIDIA H200 NVL")
# Total memory per GPU: the H100 as CUDA reports it to JAX (its default bytes_limit / 0.75, read on an
# H100 SXM), the H200 as nvidia-smi reports it.
_H100_BYTES, _H200_BYTES = 85_018_542_080, 143771 * 2**20

TOPOLOGIES: dict[str, Topology] = {t.name: t for t in (
    Topology("cpu-8", ("cpu",), 8, 1, None, (2, 4, 1)),
    Topology("v4-32", ("TPU v4",), 16, 4, 32 * GIB, (4, 4, 1)),
    Topology("v5e-8", ("TPU v5 lite",), 8, 1, 16 * GIB, (1, 8, 1)),
    Topology("v5e-256", ("TPU v5 lite",), 256, 64, 16 * GIB, (64, 4, 1)),
    Topology("v5p-128", ("TPU v5",), 64, 16, 95 * GIB, (16, 4, 1)),
    Topology("v6e-256", ("TPU v6 lite",), 256, 64, 32 * GIB, (64, 4, 1)),
    Topology("1xH100", _H100, 1, 1, _H100_BYTES, (1, 1, 1), 0.75),
    Topology("8xH100", _H100, 8, 1, _H100_BYTES, (1, 8, 1), 0.75),
    Topology("2x8xH100", _H100, 16, 2, _H100_BYTES, (2, 8, 1), 0.75),
    Topology("8xH200", _H200, 8, 1, _H200_BYTES, (1, 8, 1), 0.75),
)}


def get(name: str) -> Topology:
    """The topology called ``name``; ConfigError naming the choices if there is none."""
    if name not in TOPOLOGIES:
        raise ConfigError(f"config.topology={name!r}: unknown topology; choose one of {', '.join(TOPOLOGIES)}")
    return TOPOLOGIES[name]


def kind_matches(topology: Topology, device_kind: str) -> bool:
    """Whether a device of ``device_kind`` is the kind ``topology`` is made of."""
    return device_kind in topology.device_kinds


def check(topology: Topology, devices=None) -> None:
    """ConfigError unless ``devices`` (default: all of this run's) are the topology's count and, on
    an accelerator, its device kind. CPU devices pass the kind check, so a topology can be tried on
    fake CPU devices of the same count."""
    import jax

    devices = jax.devices() if devices is None else devices
    kind, platform = devices[0].device_kind, devices[0].platform
    if len(devices) != topology.devices:
        raise ConfigError(f"config.topology={topology.name!r} has {topology.devices} devices, but this run has "
                          f"{len(devices)} ({kind}); pick the topology of this machine, or size the run with "
                          "--config.train.plan_only=True")
    if platform != "cpu" and not kind_matches(topology, kind):
        raise ConfigError(f"config.topology={topology.name!r} is made of {topology.device_kind!r} devices, but "
                          f"this run's are {kind!r}")
