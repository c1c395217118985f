"""The policy's log-probabilities on rollout sequences, and the value model.

``sequence_logprobs`` reads a rollout's ``[R, L]`` sequences (prompt then completion, PAD after)
with one forward pass and returns, at each column ``t``, the log-probability of token ``t`` given
tokens ``< t`` under the softmax at the sampling temperature (what the sampler recorded), and that
distribution's entropy; column 0 holds 0.

The value model is the published one (SoS paper, APA; Guided-ReST, PPO): a separate copy of the
network, started from the policy's pretrained parameters, with an MLP head ``D -> 2D -> 1`` on its
final hidden states. ``values_RxL[t]`` is the value of the state before token ``t`` (read at column
``t - 1``), aligned with the log-probabilities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sos_jax.models.gpt import GPT, INIT_STD, GPTConfig, logical_axes
from sos_jax.tokenizers.countdown import PAD


def _inputs(tokens_RxL):
    """Segment ids (1 on tokens, 0 on padding after them) and positions of right-padded rows."""
    col_L = jnp.arange(tokens_RxL.shape[1], dtype=jnp.int32)
    real_RxL = jnp.cumsum((tokens_RxL != PAD)[:, ::-1], axis=1)[:, ::-1] > 0  # up to the last non-PAD token
    return real_RxL.astype(jnp.int32), jnp.broadcast_to(col_L, tokens_RxL.shape)


def _shift_right(x_RxL):
    """Column ``t`` takes column ``t - 1``'s value; column 0 is 0."""
    return jnp.pad(x_RxL[:, :-1], ((0, 0), (1, 0)))


def sequence_logprobs(model: GPT, tokens_RxL, temperature: float) -> tuple[jax.Array, jax.Array]:
    """``(logp_RxL, entropy_RxL)`` (module doc); ``temperature`` 0 means 1 (greedy samples)."""
    segment_RxL, positions_RxL = _inputs(tokens_RxL)
    logits_RxLxV = model(tokens_RxL, segment_ids_BxL=segment_RxL, positions_BxL=positions_RxL)
    if temperature > 0:
        logits_RxLxV = logits_RxLxV / temperature
    logp_RxLxV = jax.nn.log_softmax(logits_RxLxV[:, :-1], axis=-1)
    token_logp = jnp.take_along_axis(logp_RxLxV, tokens_RxL[:, 1:, None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_RxLxV) * logp_RxLxV, axis=-1)
    return jnp.pad(token_logp, ((0, 0), (1, 0))), jnp.pad(entropy, ((0, 0), (1, 0)))


class ValueModel(nnx.Module):
    """A GPT trunk and an MLP value head; ``model(tokens_RxL)`` gives ``values_RxL`` (module doc)."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        self.trunk = GPT(config, rngs=rngs)
        init = nnx.initializers.normal(INIT_STD)
        self.hidden = nnx.Linear(config.d_model, 2 * config.d_model, kernel_init=init,
                                 kernel_metadata=logical_axes("embed", "mlp"), bias_metadata=logical_axes("mlp"),
                                 rngs=rngs)
        self.out = nnx.Linear(2 * config.d_model, 1, kernel_init=init, kernel_metadata=logical_axes("mlp", None),
                              bias_metadata=logical_axes(None), rngs=rngs)

    def __call__(self, tokens_RxL) -> jax.Array:
        segment_RxL, positions_RxL = _inputs(tokens_RxL)
        features = self.trunk.features(tokens_RxL, segment_ids_BxL=segment_RxL, positions_BxL=positions_RxL)
        values = self.out(jax.nn.gelu(self.hidden(features.astype(jnp.float32))))[..., 0]
        return _shift_right(values)
