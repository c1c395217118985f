"""Advantages and losses of policy improvement (GRPO, PPO, APA), as pure jax.numpy functions.

Conventions:

* ``R`` rows are rollout samples, prompt-major: row ``prompt * G + sample`` with ``G`` the group size
  (the samples of one prompt are consecutive rows).
* An action array ``x_RxA`` holds one quantity per action ``0..A-1`` of each row (an action is a
  token, or a line of the completion for operation-level PPO); ``mask_RxA`` is true on the real
  actions of each row, which always form a prefix (actions ``0..n_r-1``). ``_R`` is per row, ``_RxL``
  per sequence position, ``_V`` per vocabulary id.
* Masks may be bool or float; they are used as float32 weights. Entries where the mask is 0 are
  ignored: they may hold anything (padding, even inf or NaN) without reaching a result or a gradient.
* All math is float32, and every function jits: options that change the computation (``kind``,
  ``aggregation``, ``level``, ``group_size``, ``num_actions``, ``clip`` of ``value_loss``) are Python
  values, checked at trace time.

Operation-level PPO builds its action arrays from token arrays: ``ids = action_ids(..., "operation")``,
the per-line log-ratio ``to_actions(token_logratio_RxL, ids, A)`` (the line's ratio is the product
of its tokens' ratios) and the value at line starts ``to_actions(values_RxL * action_starts(ids), ids, A)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _weights(mask) -> jax.Array:
    """The mask as float32 weights."""
    return jnp.asarray(mask, jnp.float32)


def _clean(x, w) -> jax.Array:
    """``x`` as float32, with 0 where the weight is 0 (so padding never yields NaN, forward or backward)."""
    return jnp.where(w != 0, jnp.asarray(x, jnp.float32), 0.0)


def masked_mean(x, mask, axis=None) -> jax.Array:
    """``sum(x * mask) / max(sum(mask), 1e-8)`` over all entries, or along ``axis``."""
    w = _weights(mask)
    return jnp.sum(_clean(x, w) * w, axis=axis) / jnp.maximum(jnp.sum(w, axis=axis), 1e-8)


def whiten(x, mask, eps: float = 1e-8) -> jax.Array:
    """``(x - mean) / sqrt(var + eps)`` with the masked mean and variance of all masked entries;
    0 where the mask is 0."""
    w = _weights(mask)
    x = _clean(x, w)
    mean = masked_mean(x, w)
    var = masked_mean(jnp.square(x - mean), w)
    return jnp.where(w != 0, (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


def group_advantages(rewards_R, group_size: int, eps: float = 1e-6, scale: bool = True) -> jax.Array:
    """GRPO advantages: each reward minus the mean of its group of ``group_size`` consecutive rows,
    divided (if ``scale``) by the group's population std plus ``eps``. A group of equal rewards gets
    exactly 0. Raises ValueError when R is not a multiple of ``group_size``."""
    rewards_R = jnp.asarray(rewards_R, jnp.float32)
    num_rows = rewards_R.shape[0]
    if group_size < 1 or num_rows % group_size:
        raise ValueError(f"{num_rows} rows are not a whole number of groups of size {group_size}")
    rewards_PxG = rewards_R.reshape(-1, group_size)
    # Shifting by the group's first reward changes no advantage and makes equal rewards give exactly 0.
    centered_PxG = rewards_PxG - rewards_PxG[:, :1]
    adv_PxG = centered_PxG - jnp.mean(centered_PxG, axis=1, keepdims=True)
    if scale:
        adv_PxG = adv_PxG / (jnp.std(centered_PxG, axis=1, keepdims=True) + eps)
    return adv_PxG.reshape(num_rows)


def kl_estimate(logp, ref_logp, kind: str) -> jax.Array:
    """Per-element estimate of KL(pi || ref) from the log-probs of tokens sampled from pi:
    "k1" is ``logp - ref_logp``; "k3" is ``exp(d) - d - 1`` with ``d = ref_logp - logp`` (never
    negative). Raises ValueError for another ``kind``."""
    logp = jnp.asarray(logp, jnp.float32)
    ref_logp = jnp.asarray(ref_logp, jnp.float32)
    if kind == "k1":
        return logp - ref_logp
    if kind == "k3":
        d = ref_logp - logp
        return jnp.maximum(jnp.expm1(d) - d, 0.0)  # expm1 keeps small d accurate; max absorbs rounding
    raise ValueError(f"unknown KL estimator {kind!r}: expected 'k1' or 'k3'")


def clipped_policy_loss(logratio_RxA, advantages_RxA, mask_RxA, clip_eps: float,
                        aggregation: str = "token") -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped surrogate loss ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)`` with
    ``ratio = exp(logratio)``, and its metrics.

    ``aggregation`` "token" takes the masked mean over all real actions of the batch; "sequence" the
    mean, over the rows with at least one real action, of each row's masked mean (0 when no row has
    one). Raises ValueError for another ``aggregation``. Metrics (masked means over all real actions,
    whatever the aggregation): "clip_fraction", the share of real actions whose ratio lies outside
    ``[1 - eps, 1 + eps]``; "ratio_mean", the mean ratio.
    """
    if aggregation not in ("token", "sequence"):
        raise ValueError(f"unknown aggregation {aggregation!r}: expected 'token' or 'sequence'")
    w_RxA = _weights(mask_RxA)
    ratio_RxA = jnp.exp(_clean(logratio_RxA, w_RxA))
    adv_RxA = _clean(advantages_RxA, w_RxA)
    clipped_RxA = jnp.clip(ratio_RxA, 1.0 - clip_eps, 1.0 + clip_eps)
    loss_RxA = -jnp.minimum(ratio_RxA * adv_RxA, clipped_RxA * adv_RxA)
    if aggregation == "token":
        loss = masked_mean(loss_RxA, w_RxA)
    else:
        has_action_R = (jnp.sum(w_RxA, axis=-1) > 0).astype(jnp.float32)
        row_loss_R = masked_mean(loss_RxA, w_RxA, axis=-1)
        loss = jnp.sum(row_loss_R * has_action_R) / jnp.maximum(jnp.sum(has_action_R), 1.0)
    metrics = {
        "clip_fraction": masked_mean(jnp.abs(ratio_RxA - 1.0) > clip_eps, w_RxA),
        "ratio_mean": masked_mean(ratio_RxA, w_RxA),
    }
    return loss, metrics


def gae(rewards_RxA, values_RxA, mask_RxA, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation along the action axis (a reverse ``lax.scan``).

    ``delta_t = r_t + gamma * V_{t+1} * mask_{t+1} - V_t`` and
    ``A_t = delta_t + gamma * lam * mask_{t+1} * A_{t+1}``: the value after a row's last real action
    is 0 (terminal). Returns ``(advantages_RxA, returns_RxA)`` with returns ``A + V``, both 0 where
    the mask is 0.
    """
    w_RxA = _weights(mask_RxA)
    rewards_AxR = _clean(rewards_RxA, w_RxA).T
    values_AxR = _clean(values_RxA, w_RxA).T
    w_AxR = w_RxA.T

    def step(carry, t_inputs):
        next_value_R, next_w_R, next_adv_R = carry
        reward_R, value_R, w_R = t_inputs
        delta_R = reward_R + gamma * next_value_R * next_w_R - value_R
        adv_R = delta_R + gamma * lam * next_w_R * next_adv_R
        return (value_R, w_R, adv_R), adv_R

    zeros_R = jnp.zeros(w_AxR.shape[1], jnp.float32)
    _, adv_AxR = jax.lax.scan(step, (zeros_R, zeros_R, zeros_R), (rewards_AxR, values_AxR, w_AxR), reverse=True)
    real_RxA = w_RxA != 0
    adv_RxA = jnp.where(real_RxA, adv_AxR.T, 0.0)
    returns_RxA = jnp.where(real_RxA, adv_RxA + values_AxR.T, 0.0)
    return adv_RxA, returns_RxA


def value_loss(values_RxA, returns_RxA, mask_RxA, old_values_RxA=None, clip: float = 0.0) -> jax.Array:
    """Masked mean of ``0.5 * (v - ret)^2``. With ``clip > 0``, PPO's clipped value loss: the larger of
    that and ``0.5 * (v_clipped - ret)^2`` with ``v_clipped = old + clip(v - old, -clip, clip)``;
    raises ValueError when ``clip > 0`` comes without ``old_values_RxA``."""
    w_RxA = _weights(mask_RxA)
    values_RxA = _clean(values_RxA, w_RxA)
    returns_RxA = _clean(returns_RxA, w_RxA)
    err_RxA = 0.5 * jnp.square(values_RxA - returns_RxA)
    if clip > 0:
        if old_values_RxA is None:
            raise ValueError("a clipped value loss (clip > 0) needs old_values_RxA")
        old_RxA = _clean(old_values_RxA, w_RxA)
        clipped_RxA = old_RxA + jnp.clip(values_RxA - old_RxA, -clip, clip)
        err_RxA = jnp.maximum(err_RxA, 0.5 * jnp.square(clipped_RxA - returns_RxA))
    return masked_mean(err_RxA, w_RxA)


def apa_loss(logp_RxA, ref_logp_RxA, advantages_RxA, mask_RxA, coef: float = 0.5) -> jax.Array:
    """APA (Advantage-Induced Policy Alignment): masked mean of ``(logp - coef * A - ref_logp)^2``."""
    w_RxA = _weights(mask_RxA)
    diff_RxA = _clean(jnp.asarray(logp_RxA, jnp.float32) - coef * jnp.asarray(advantages_RxA, jnp.float32)
                      - jnp.asarray(ref_logp_RxA, jnp.float32), w_RxA)
    return masked_mean(jnp.square(diff_RxA), w_RxA)


def action_ids(tokens_RxL, completion_RxL, line_end_V, level: str) -> jax.Array:
    """The action each sequence position belongs to (int32), -1 outside the completion.

    ``completion_RxL`` marks the generated tokens of each row (one contiguous block). "token": the
    index of the token within the completion. "operation": the index of the line within the
    completion; a completion token starts a line when it is the completion's first token or the
    previous token is a line-ending one (``line_end_V[token]``, true for ids whose text ends with a
    newline). Raises ValueError for another ``level``.
    """
    completion_RxL = jnp.asarray(completion_RxL, bool)
    if level == "token":
        starts_RxL = completion_RxL
    elif level == "operation":
        ends_line_RxL = jnp.asarray(line_end_V, bool)[tokens_RxL]
        prev_completion_RxL = jnp.pad(completion_RxL[:, :-1], ((0, 0), (1, 0)))
        prev_ends_line_RxL = jnp.pad(ends_line_RxL[:, :-1], ((0, 0), (1, 0)))
        starts_RxL = completion_RxL & (~prev_completion_RxL | prev_ends_line_RxL)
    else:
        raise ValueError(f"unknown action level {level!r}: expected 'token' or 'operation'")
    index_RxL = jnp.cumsum(starts_RxL, axis=-1, dtype=jnp.int32) - 1
    return jnp.where(completion_RxL, index_RxL, -1).astype(jnp.int32)


def to_actions(x_RxL, action_RxL, num_actions: int) -> jax.Array:
    """Per-row float32 sums of ``x`` over the positions of each action 0..num_actions-1, shape
    [R, num_actions]; positions of action -1 (or of an action >= num_actions) are dropped."""
    def row_sums(x_L, action_L):
        return jax.ops.segment_sum(x_L, action_L, num_segments=num_actions)

    return jax.vmap(row_sums)(jnp.asarray(x_RxL, jnp.float32), action_RxL)


def action_starts(action_RxL) -> jax.Array:
    """True at the first position of each action: ``action >= 0`` and unlike the previous position's."""
    prev_RxL = jnp.pad(action_RxL[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    return (action_RxL >= 0) & (action_RxL != prev_RxL)
