"""The train state and the compiled train and eval steps.

The model is split once (``nnx.split``) into its graph definition, its parameters and the rest; the
steps are pure functions of a state dict ``{"params", "opt_state", "step", "rng"}`` (``rng`` is raw
key data, so checkpoints hold plain arrays) and a batch (``sos_jax.data.batch`` layout). The train
step sums token-weighted losses and gradients over ``accum`` micro-batches with ``lax.scan``, so
its update equals the update of one big batch, then applies the optimizer. Both steps are compiled
ahead of time with the state's shardings, the train step donating the state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from sos_jax.models.gpt import loss_and_metrics


@dataclasses.dataclass
class Steps:
    """Compiled ``train(state, batch) -> (state, metrics)`` and ``eval(state, batch) -> sums``, with the
    state's shardings and the train step's compiled memory estimate (bytes, or None)."""

    train: Callable
    eval: Callable
    state_shardings: Any
    memory_bytes: int | None


def init_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int, mesh) -> tuple[Any, Any, dict]:
    """``(graphdef, rest, state)``: the model split once, and the initial train state on ``mesh``
    (optimizer moments take the parameters' shardings; scalars and the key are replicated)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init, out_shardings=opt_state_shardings(tx, params, mesh))(params)
    state = {"params": params, "opt_state": opt_state, "step": jnp.zeros((), jnp.int32),
             "rng": jax.random.key_data(jax.random.key(seed))}
    replicated = NamedSharding(mesh, PartitionSpec())

    def on_mesh(x):
        return x if x.sharding.device_set == set(mesh.devices.flat) else jax.device_put(x, replicated)

    return graphdef, rest, jax.tree.map(on_mesh, state)


def opt_state_shardings(tx: optax.GradientTransformation, params, mesh):
    """Shardings of ``tx.init(params)`` for ``params`` (arrays or ``jax.ShapeDtypeStruct``s with
    shardings): every moment shaped like a parameter takes that parameter's sharding, so fsdp and
    tensor split the optimizer state as they split the parameters; counts are replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(tx, lambda _, sharding: sharding, jax.eval_shape(tx.init, params),
                                 jax.tree.map(lambda x: x.sharding, params), transform_non_params=lambda _: replicated)


def _micro(batch_BxL: dict, accum: int) -> dict:
    """``[B, L]`` -> ``[accum, B / accum, L]``: micro-batch ``i`` takes rows ``i, i + accum, ...``, so
    every device holds rows of every micro-batch."""
    return jax.tree.map(lambda x: x.reshape(-1, accum, *x.shape[1:]).swapaxes(0, 1), batch_BxL)


def _loss_sum(graphdef, rest, dropout: bool):
    def loss_sum(params, batch, key):
        model = nnx.merge(graphdef, params, rest)
        logits = model(batch["inputs"], segment_ids_BxL=batch["segment_ids"], positions_BxL=batch["positions"],
                       deterministic=not dropout, rngs=nnx.Rngs(dropout=key) if dropout else None)
        loss, metrics = loss_and_metrics(logits, batch["targets"], batch["weights"])
        return loss * metrics["tokens"], metrics

    return loss_sum


def train_step_fn(graphdef, rest, tx: optax.GradientTransformation, lr: optax.Schedule, *, accum: int,
                  dropout: bool) -> Callable:
    """The pure train step (see the module doc)."""
    loss_sum = _loss_sum(graphdef, rest, dropout)
    grad_fn = jax.value_and_grad(loss_sum, has_aux=True)

    def step(state, batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])

        def body(carry, xs):
            micro, i = xs
            (total, metrics), grads = grad_fn(state["params"], micro, jax.random.fold_in(key, i))
            add = (grads, total, metrics["tokens"], metrics["accuracy"] * metrics["tokens"])
            return jax.tree.map(jnp.add, carry, add), None

        zeros = (jax.tree.map(jnp.zeros_like, state["params"]), 0.0, 0.0, 0.0)
        (grads, total, tokens, correct), _ = jax.lax.scan(body, zeros, (_micro(batch, accum), jnp.arange(accum)))
        denom = jnp.maximum(tokens, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": total / denom, "accuracy": correct / denom, "tokens": tokens,
                   "grad_norm": optax.tree.norm(grads), "learning_rate": lr(state["step"])}
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}, metrics

    return step


def eval_step_fn(graphdef, rest) -> Callable:
    """The pure eval step: summed token loss, correct predictions and tokens of a batch."""
    loss_sum = _loss_sum(graphdef, rest, dropout=False)

    def step(state, batch):
        total, metrics = loss_sum(state["params"], batch, None)
        return {"loss_sum": total, "correct": metrics["accuracy"] * metrics["tokens"], "tokens": metrics["tokens"]}

    return step


def _abstract_args(state, mesh, batch_shape: tuple[int, int]) -> tuple[Any, dict]:
    """``state`` and a batch of ``batch_shape`` as ``jax.ShapeDtypeStruct``s with their shardings."""
    from sos_jax import parallel

    from sos_jax.data.batch import BATCH_DTYPES

    batch_sharding = parallel.batch_sharding(mesh)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    batch = {k: jax.ShapeDtypeStruct(batch_shape, dtype, sharding=batch_sharding) for k, dtype in BATCH_DTYPES.items()}
    return abstract, batch


def lower_train(graphdef, rest, state, tx, lr, mesh, *, batch_shape: tuple[int, int], accum: int,
                dropout: bool) -> jax.stages.Lowered:
    """The train step lowered ahead of time for ``state``'s shardings (``state`` may hold arrays or
    ``jax.ShapeDtypeStruct``s with shardings) and batches of ``batch_shape`` split over ``mesh``'s
    batch axes, donating the state; traced with the mesh set, so the model's activation constraints
    apply. Compile it under the same mesh."""
    abstract, batch = _abstract_args(state, mesh, batch_shape)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    train = jax.jit(train_step_fn(graphdef, rest, tx, lr, accum=accum, dropout=dropout),
                    in_shardings=(shardings, batch["inputs"].sharding), out_shardings=(shardings, None),
                    donate_argnums=0)
    with jax.set_mesh(mesh):
        return train.lower(abstract, batch)


def memory_breakdown(compiled) -> dict[str, int] | None:
    """Per-device bytes of a compiled step from ``memory_analysis()``: ``argument``, ``output``,
    ``alias`` (donated arguments reused as outputs), ``temp``, ``generated_code`` and their ``total``
    (argument + output - alias + temp + generated_code); None where the backend reports nothing."""
    memory = compiled.memory_analysis()
    if memory is None:
        return None
    out = {name: int(getattr(memory, f"{name}_size_in_bytes", 0) or 0)
           for name in ("argument", "output", "alias", "temp", "generated_code")}
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["generated_code"]
    return out


def compile_steps(graphdef, rest, state, tx, lr, mesh, *, batch_shape: tuple[int, int], accum: int,
                  dropout: bool) -> Steps:
    """Compiles both steps ahead of time for ``state``'s shardings and batches of ``batch_shape``
    split over ``mesh``'s batch axes (the train step as :func:`lower_train` lowers it)."""
    abstract, batch = _abstract_args(state, mesh, batch_shape)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    lowered = lower_train(graphdef, rest, state, tx, lr, mesh, batch_shape=batch_shape, accum=accum, dropout=dropout)
    with jax.set_mesh(mesh):
        compiled = lowered.compile()
        evaluate = jax.jit(eval_step_fn(graphdef, rest),
                           in_shardings=(shardings, batch["inputs"].sharding)).lower(abstract, batch).compile()
    memory = memory_breakdown(compiled)
    return Steps(train=compiled, eval=evaluate, state_shardings=shardings,
                 memory_bytes=None if memory is None else memory["total"])
