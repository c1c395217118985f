"""Logical axis names, the (data, fsdp, tensor) mesh, and creating a model already sharded.

Every parameter of :class:`sos_jax.models.gpt.GPT` carries logical axis names in its ``out_sharding``
metadata (``("embed", "mlp")`` for the first MLP kernel, and so on); activations are constrained at
a few places with names of their own (``act_*``, so that an activation's feature axis is never mapped
to the mesh axis its batch axis already uses). :data:`LOGICAL_RULES` maps logical names to mesh axes:

- ``batch`` rows split over ``data`` and ``fsdp`` (data parallel + fully sharded data parallel);
- ``embed`` (the ``d_model`` axis of parameters) split over ``fsdp``: each device holds a slice of
  every weight, gathered by XLA where a matmul needs it (ZeRO-3 style);
- ``heads``, ``mlp`` and ``vocab`` split over ``tensor`` (Megatron-style tensor parallelism: column
  split for q/k/v and the first MLP layer, row split for the output projections);
- ``kv`` (head dimension), ``length`` and ``act_embed`` not split.

Mapping is forgiving so one set of rules serves every mesh: mesh axes the mesh lacks or that have
size 1 are dropped, and so is a mesh axis that does not divide the dimension it would split (the
117-token vocabulary, for instance, stays whole on ``tensor=2``) or that an earlier dimension of the
same array already uses.

The sharded init (:func:`create_sharded_model`) follows the NNX pattern: ``nnx.eval_shape`` for the
abstract state, shardings from the logical annotations, then the real initialisation inside
``jax.jit(out_shardings=...)`` so no device ever holds a full copy of a sharded parameter.
Activation constraints only apply while a mesh is active (``with jax.set_mesh(mesh):`` around the
jitted call or its first trace); without one the model runs unconstrained (single device).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

if TYPE_CHECKING:  # gpt.py imports this module; import it lazily at run time.
    from sos_jax.models.gpt import GPT, GPTConfig

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("length", None),  # the learned position table's rows
    ("norm", None),  # norm scales/biases: small, replicated
    # activations
    ("batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)
_RULES = dict(LOGICAL_RULES)


def make_mesh(shape: dict[str, int] | Sequence[int] | None = None, devices=None) -> jax.sharding.Mesh:
    """A mesh with axes ``("data", "fsdp", "tensor")`` (all ``Auto``).

    ``shape`` is a dict (missing axes are 1) or a 3-tuple; the default puts every device on ``data``.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if shape is None:
        sizes = (n, 1, 1)
    elif isinstance(shape, dict):
        unknown = sorted(set(shape) - set(MESH_AXES))
        if unknown:
            raise ValueError(f"mesh shape: unknown axis {unknown[0]!r} (axes are {', '.join(MESH_AXES)})")
        sizes = tuple(int(shape.get(a, 1)) for a in MESH_AXES)
    else:
        sizes = tuple(int(s) for s in shape)
        if len(sizes) != len(MESH_AXES):
            raise ValueError(f"mesh shape: expected {len(MESH_AXES)} sizes (data, fsdp, tensor), got {shape!r}")
    if any(s < 1 for s in sizes) or math.prod(sizes) != n:
        raise ValueError(
            f"mesh shape: data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {math.prod(sizes)} "
            f"does not match the {n} devices")
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def logical_to_spec(names: Sequence[str | None], mesh, shape: Sequence[int] | None = None) -> PartitionSpec:
    """The ``PartitionSpec`` of an array with logical axis ``names`` on ``mesh`` (concrete or abstract).

    Mesh axes that the mesh lacks, of size 1, already used by an earlier dimension, or (with
    ``shape``) not dividing the dimension are dropped.
    """
    sizes = dict(mesh.shape)
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        if name is None:
            out.append(None)
            continue
        if name not in _RULES:
            raise ValueError(f"logical axis {name!r} has no rule in LOGICAL_RULES")
        target = _RULES[name]
        axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        kept, prod = [], 1
        for a in axes:
            if sizes.get(a, 1) <= 1 or a in used:
                continue
            if shape is not None and shape[i] % (prod * sizes[a]):
                continue
            kept.append(a)
            prod *= sizes[a]
        used.update(kept)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*out)


def logical_to_mesh(names: Sequence[str | None], mesh: jax.sharding.Mesh,
                    shape: Sequence[int] | None = None) -> NamedSharding:
    """``NamedSharding`` on ``mesh`` for logical axis ``names`` (see :func:`logical_to_spec`)."""
    return NamedSharding(mesh, logical_to_spec(names, mesh, shape))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names, when an all-``Auto`` mesh is active; else ``x``."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not mesh.are_all_axes_auto:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, mesh, x.shape))


def _variable_sharding(var: nnx.Variable, mesh) -> NamedSharding:
    names = var.get_metadata().get("out_sharding") or (None,) * len(var.shape)
    return logical_to_mesh(names, mesh, var.shape)


def state_shardings(state, mesh: jax.sharding.Mesh):
    """For an (abstract or concrete) ``nnx.State``: the same tree with a ``NamedSharding`` per variable."""
    return jax.tree.map(lambda v: v.replace(_variable_sharding(v, mesh)), state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def abstract_model(config: GPTConfig, mesh: jax.sharding.Mesh, seed: int = 0, module=None):
    """``(graphdef, state)`` of ``GPT(config)`` (or ``module(config, rngs=...)``, another module
    built from a ``GPTConfig``) without allocating it: every variable holds a
    ``jax.ShapeDtypeStruct`` carrying its ``NamedSharding`` on ``mesh`` (e.g. an orbax restore target).

    Note: run ``nnx.eval_shape`` on this model *outside* a ``jax.set_mesh`` context (as here): under
    one, NNX would turn the logical names into mesh axes itself, without :data:`LOGICAL_RULES`.
    """
    from sos_jax.models.gpt import GPT

    config.validate()
    module = module or GPT
    graphdef, state = nnx.split(nnx.eval_shape(lambda: module(config, rngs=nnx.Rngs(seed))))
    state = jax.tree.map(
        lambda v: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=_variable_sharding(v, mesh))),
        state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return graphdef, state


def create_sharded_model(config: GPTConfig, mesh: jax.sharding.Mesh, seed: int, module=None) -> GPT:
    """A :class:`GPT` (or ``module``, as in :func:`abstract_model`) whose parameters are created
    directly in their sharded layout on ``mesh``."""
    from sos_jax.models.gpt import GPT

    module = module or GPT
    graphdef, abstract = abstract_model(config, mesh, seed, module)
    shardings = jax.tree.map(lambda v: v.replace(v.get_value().sharding), abstract,
                             is_leaf=lambda x: isinstance(x, nnx.Variable))

    def init_state():
        return nnx.state(module(config, rngs=nnx.Rngs(seed)))

    with jax.set_mesh(mesh):
        state = jax.jit(init_state, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def param_shardings(model: nnx.Module, mesh: jax.sharding.Mesh | None = None):
    """``NamedSharding`` of every parameter, as ``nnx.state(model, nnx.Param)`` is laid out.

    With ``mesh``: what the logical annotations give on that mesh (usable before the parameters
    exist, e.g. on an ``nnx.eval_shape`` model). Without: the parameters' actual shardings.
    """
    params = nnx.state(model, nnx.Param)
    if mesh is not None:
        return state_shardings(params, mesh)
    return jax.tree.map(lambda v: v.replace(v.get_value().sharding), params,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))
