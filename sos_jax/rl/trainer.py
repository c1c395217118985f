"""The policy-gradient update shared by GRPO, PPO and APA: a jitted ``prepare`` and ``update``.

An algorithm is a module with ``USES_VALUE`` (whether it trains a value model), a
``targets(batch, settings) -> batch`` that adds its advantages (and returns) to a prepared batch,
and a ``loss(new, batch, settings) -> (loss, metrics)`` of the current policy's outputs ``new``
(``logp_RxL``, ``entropy_RxL``, and ``values_RxL`` when it uses a value model).

``prepare(state, reference, rollout)`` runs once per rollout: the policy's log-probabilities before
the update (``old_logp_RxL``), the frozen reference policy's (``ref_logp_RxL``; the pretrained
model), the value model's values (``old_values_RxL``), then the algorithm's targets. ``update(state,
batch, rows_M)`` takes one optimizer step on the rows ``rows_M`` of the prepared batch. The state is
a dict ``{"params", "value", "opt_state", "step", "rng"}`` (``value`` is ``{}`` without a value
model); ``params`` is laid out as a pretrain checkpoint's, so the eval job reads RL checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sos_jax.rl import losses
from sos_jax.rl.policy import sequence_logprobs
from sos_jax.rl.rollout import Rollout


@dataclasses.dataclass
class Trainer:
    """Compiled ``prepare`` and ``update`` for one algorithm (module doc)."""

    prepare: Callable
    update: Callable


def init_state(params, value, tx_policy: optax.GradientTransformation, tx_value: optax.GradientTransformation,
               seed: int, mesh) -> dict:
    """The initial RL state on ``mesh`` (optimizer moments take the parameters' shardings)."""
    from jax.sharding import NamedSharding, PartitionSpec

    with jax.set_mesh(mesh):
        opt_state = {"policy": jax.jit(tx_policy.init)(params), "value": jax.jit(tx_value.init)(value)}
    replicated = NamedSharding(mesh, PartitionSpec())
    scalars = {"step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(jax.random.key(seed))}
    return {"params": params, "value": value, "opt_state": opt_state, **jax.device_put(scalars, replicated)}


def make_trainer(algorithm, settings, *, policy_graphdef, value_graphdef, tx_policy, tx_value, temperature: float,
                 mesh) -> Trainer:
    """``prepare`` and ``update`` for ``algorithm`` with its ``settings`` (a ConfigDict section)."""
    uses_value = algorithm.USES_VALUE

    def outputs(params, value, tokens_RxL) -> dict[str, Any]:
        logp, entropy = sequence_logprobs(nnx.merge(policy_graphdef, params), tokens_RxL, temperature)
        out = {"logp_RxL": logp, "entropy_RxL": entropy}
        if uses_value:
            out["values_RxL"] = nnx.merge(value_graphdef, value)(tokens_RxL)
        return out

    def prepare(state, reference, rollout: Rollout) -> dict[str, Any]:
        old = outputs(state["params"], state["value"], rollout.tokens_RxL)
        ref_logp, _ = sequence_logprobs(nnx.merge(policy_graphdef, reference), rollout.tokens_RxL, temperature)
        batch = {"tokens_RxL": rollout.tokens_RxL, "completion_RxL": rollout.completion_RxL,
                 "reward_R": rollout.reward_R, "old_logp_RxL": old["logp_RxL"], "ref_logp_RxL": ref_logp}
        if uses_value:
            batch["old_values_RxL"] = old["values_RxL"]
        return algorithm.targets(jax.tree.map(jax.lax.stop_gradient, batch), settings)

    def update(state, batch, rows_M):
        mini = jax.tree.map(lambda x: jnp.take(x, rows_M, axis=0), batch)

        def objective(params, value):
            new = outputs(params, value, mini["tokens_RxL"])
            loss, metrics = algorithm.loss(new, mini, settings)
            completion = mini["completion_RxL"]
            metrics.update(entropy=losses.masked_mean(new["entropy_RxL"], completion),
                           kl_ref=losses.masked_mean(losses.kl_estimate(new["logp_RxL"], mini["ref_logp_RxL"], "k3"),
                                                     completion))
            return loss, metrics

        (loss, metrics), (g_policy, g_value) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
            state["params"], state["value"])
        up_policy, opt_policy = tx_policy.update(g_policy, state["opt_state"]["policy"], state["params"])
        up_value, opt_value = tx_value.update(g_value, state["opt_state"]["value"], state["value"])
        metrics.update(loss=loss, grad_norm=optax.tree.norm(g_policy))
        return {"params": optax.apply_updates(state["params"], up_policy),
                "value": optax.apply_updates(state["value"], up_value),
                "opt_state": {"policy": opt_policy, "value": opt_value},
                "step": state["step"] + 1, "rng": state["rng"]}, metrics

    def on_mesh(fn, **kwargs):
        jitted = jax.jit(fn, **kwargs)

        def call(*args):
            with jax.set_mesh(mesh):
                return jitted(*args)

        return call

    return Trainer(prepare=on_mesh(prepare), update=on_mesh(update, donate_argnums=0))
