"""The optimizer: AdamW with linear warmup and cosine decay, a weight-decay mask, global-norm clipping."""

from __future__ import annotations

import jax
import optax


def schedule(*, peak: float, warmup_steps: int, total_steps: int, end_fraction: float) -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps`` (none: ``peak`` from the first step),
    then cosine decay to ``peak * end_fraction`` at ``total_steps``."""
    if warmup_steps == 0:
        return optax.cosine_decay_schedule(peak, max(total_steps, 1), alpha=end_fraction)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(total_steps, warmup_steps + 1),
                                              end_value=peak * end_fraction)


def decay_mask(params):
    """Weight decay on matrices (kernels, embedding tables) only; biases and norm scales are left alone."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(*, learning_rate: float, warmup_steps: int, total_steps: int, end_fraction: float, b1: float,
                   b2: float, weight_decay: float, clip_norm: float) -> optax.GradientTransformation:
    """``clip_by_global_norm(clip_norm)`` (0: off) followed by masked AdamW on the schedule above."""
    lr = schedule(peak=learning_rate, warmup_steps=warmup_steps, total_steps=total_steps, end_fraction=end_fraction)
    adamw = optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask)
    return optax.chain(optax.clip_by_global_norm(clip_norm), adamw) if clip_norm > 0 else adamw
