"""PPO with a value model and GAE, at token level or at operation level.

Token level: every generated token is an action. Operation level (the Guided-ReST paper's finding
for Countdown): every generated trace line is one action; its log-ratio is the sum of its tokens'
log-ratios (the ratio is the product of theirs), and its value is the value model's at the line's
first token. The reward (1 for a solved trace) arrives with the last action; advantages come from
GAE (``gamma``, ``lam``) over the actions, optionally whitened over the batch. Loss: the clipped
policy loss over the actions plus ``value_coef`` times the (optionally clipped) value loss.
Settings: ``config.ppo``.
"""

from __future__ import annotations

import jax.numpy as jnp

from sos_jax.data.batch import LINE_END_IDS
from sos_jax.rl import losses
from sos_jax.tokenizers.countdown import VOCAB_SIZE

USES_VALUE = True
LEVELS = ("token", "operation")
_LINE_END_V = jnp.zeros((VOCAB_SIZE,), bool).at[LINE_END_IDS].set(True)


def actions(batch: dict, level: str):
    """``(action_RxL, num_actions)``: each column's action id (-1 outside the completion)."""
    return losses.action_ids(batch["tokens_RxL"], batch["completion_RxL"], _LINE_END_V, level), \
        batch["tokens_RxL"].shape[1]


def per_action(x_RxL, action_RxL, num_actions: int, at_start: bool = False):
    """``x`` summed over each action's columns, or (``at_start``) read at its first column."""
    if at_start:
        x_RxL = x_RxL * losses.action_starts(action_RxL)
    return losses.to_actions(x_RxL, action_RxL, num_actions)


def action_targets(batch: dict, level: str, gamma: float, lam: float, whiten: bool) -> dict:
    """Adds ``mask_RxA``, ``old_values_RxA``, ``advantages_RxA`` and ``returns_RxA``: GAE over the
    actions with the reward on each row's last action."""
    action_RxL, num = actions(batch, level)
    count_R = jnp.max(action_RxL, axis=1) + 1
    index_A = jnp.arange(num)
    mask = index_A[None, :] < count_R[:, None]
    rewards = jnp.where(index_A[None, :] == (count_R - 1)[:, None], batch["reward_R"][:, None], 0.0)
    values = per_action(batch["old_values_RxL"], action_RxL, num, at_start=True)
    advantages, returns = losses.gae(rewards, values, mask, gamma, lam)
    if whiten:
        advantages = losses.whiten(advantages, mask)
    return {**batch, "mask_RxA": mask, "old_values_RxA": values, "advantages_RxA": advantages, "returns_RxA": returns}


def value_loss(new: dict, batch: dict, level: str, clip: float):
    """The value model's loss on the actions' returns."""
    action_RxL, num = actions(batch, level)
    values = per_action(new["values_RxL"], action_RxL, num, at_start=True)
    return losses.value_loss(values, batch["returns_RxA"], batch["mask_RxA"], batch["old_values_RxA"], clip)


def targets(batch: dict, settings) -> dict:
    """GAE advantages and returns over the configured actions."""
    return action_targets(batch, settings.level, settings.gamma, settings.lam, settings.whiten)


def loss(new: dict, batch: dict, settings):
    """Clipped policy loss over the actions plus the value loss (module doc)."""
    action_RxL, num = actions(batch, settings.level)
    logratio = per_action(new["logp_RxL"] - batch["old_logp_RxL"], action_RxL, num)
    policy_loss, metrics = losses.clipped_policy_loss(logratio, batch["advantages_RxA"], batch["mask_RxA"],
                                                      settings.clip_eps, "token")
    v_loss = value_loss(new, batch, settings.level, settings.value_clip)
    metrics.update(policy_loss=policy_loss, value_loss=v_loss)
    return policy_loss + settings.value_coef * v_loss, metrics
