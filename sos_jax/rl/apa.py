"""APA (advantage-induced policy alignment), the SoS paper's policy improvement.

Per generated token: ``(log pi(a|s) - coef * A(s, a) - log pi_ref(a|s))^2`` with ``coef = 0.5``,
where ``pi_ref`` is the frozen pretrained policy and ``A`` comes from GAE over the tokens
(``gamma`` 1, ``lam`` 0.95 in the paper) with the value model, whitened; plus ``value_coef``
(10 in the paper) times the value loss. The KL to the reference is logged, not optimised.
Settings: ``config.apa``.
"""

from __future__ import annotations

from sos_jax.rl import losses, ppo

USES_VALUE = True


def targets(batch: dict, settings) -> dict:
    """Token-level GAE advantages and returns (whitened as configured)."""
    return ppo.action_targets(batch, "token", settings.gamma, settings.lam, settings.whiten)


def loss(new: dict, batch: dict, settings):
    """The APA loss plus the value loss (module doc)."""
    action_RxL, num = ppo.actions(batch, "token")
    logp = ppo.per_action(new["logp_RxL"], action_RxL, num)
    ref_logp = ppo.per_action(batch["ref_logp_RxL"], action_RxL, num)
    policy_loss = losses.apa_loss(logp, ref_logp, batch["advantages_RxA"], batch["mask_RxA"], settings.coef)
    v_loss = ppo.value_loss(new, batch, "token", 0.0)
    return policy_loss + settings.value_coef * v_loss, {"policy_loss": policy_loss, "value_loss": v_loss}
