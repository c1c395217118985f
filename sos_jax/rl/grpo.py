"""GRPO (group relative policy optimisation): group-normalised rewards as advantages, no value model.

Each prompt's G samples form a group; a sample's advantage is its reward minus the group's mean,
divided by the group's standard deviation (``scale``), and every token of the sample gets it. The
loss is the clipped-ratio policy loss over the generated tokens, aggregated as a mean over all
tokens (``aggregation="token"``) or as a mean over samples of each sample's token mean
(``"sequence"``), plus ``kl_coef`` times the mean KL estimate (``kl_estimator`` ``k1`` or ``k3``) to
the frozen pretrained policy. A group whose rewards are all equal has zero advantage everywhere.
Settings: ``config.grpo`` (``group_size`` is ``config.rollout.group_size``).
"""

from __future__ import annotations

from sos_jax.rl import losses

USES_VALUE = False
AGGREGATIONS = ("token", "sequence")
KL_ESTIMATORS = ("k1", "k3")


def targets(batch: dict, settings) -> dict:
    """Adds ``advantages_R``, the group-normalised rewards."""
    advantages = losses.group_advantages(batch["reward_R"], settings.group_size, scale=settings.scale)
    return {**batch, "advantages_R": advantages}


def loss(new: dict, batch: dict, settings):
    """Clipped policy loss plus the KL term (module doc)."""
    completion = batch["completion_RxL"]
    logratio = new["logp_RxL"] - batch["old_logp_RxL"]
    advantages = batch["advantages_R"][:, None] * completion
    policy_loss, metrics = losses.clipped_policy_loss(logratio, advantages, completion, settings.clip_eps,
                                                      settings.aggregation)
    kl = losses.masked_mean(losses.kl_estimate(new["logp_RxL"], batch["ref_logp_RxL"], settings.kl_estimator),
                            completion)
    metrics.update(policy_loss=policy_loss, kl=kl)
    return policy_loss + settings.kl_coef * kl, metrics
