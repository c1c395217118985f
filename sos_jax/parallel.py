"""Data parallelism over the local devices: one mesh axis ``data``, batch rows split across it."""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding, PartitionSpec

DATA = "data"
# Mesh axes a batch's leading dimension is split over, where the mesh has them.
BATCH_AXES = (DATA, "fsdp")


def data_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis ``data`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def row_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of an array whose leading (batch) axis is split over ``data``."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of a global batch: rows split over the mesh's batch axes (``data``, ``fsdp``)."""
    axes = tuple(a for a in mesh.axis_names if a in BATCH_AXES)
    return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def shard_rows(fn, mesh: jax.sharding.Mesh, n_replicated: int = 1):
    """``fn(*replicated, *batched)`` run independently on each device's rows, as one jitted call.

    The first ``n_replicated`` arguments (keys, tables) are copied to every device; the others and
    every output are split along their leading axis. Each device sees only its own rows, so ``fn``
    must treat rows independently (as the generators, keyed by global problem index, do).
    """

    def specs(args):
        return tuple(PartitionSpec() if i < n_replicated else PartitionSpec(DATA) for i in range(len(args)))

    def call(*args):
        mapped = jax.shard_map(fn, mesh=mesh, in_specs=specs(args), out_specs=PartitionSpec(DATA), check_vma=False)
        return mapped(*args)

    return jax.jit(call)
