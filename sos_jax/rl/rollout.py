"""Rollouts: G sampled completions per prompt, scored on device, in one jitted call.

``Rollouts(graphdef, state, sampling, reward, mesh=..., batch_size=B, prompt_len=P, judge=...)(state,
prompts_BxP, lengths_B, problem_B, answer_B, key)`` samples ``sampling.num_samples`` (G)
completions of each prompt with the KV-cache sampler, joins each to its prompt, judges the joined
sequence on device and computes the reward, all inside one ``jax.jit``: nothing returns to the
host between the prompts and the rewards.

The judge fits the task: ``countdown_verdict`` (the default; ``problem_B`` the numbers [B, K],
``answer_B`` the target [B]) runs the strict Countdown verifier, and ``sudoku_verdict``
(``problem_B`` the puzzle [B, 81], ``answer_B`` its solution) the replay verifier of
``sos_jax.search.sudoku_verify`` (a Sudoku prompt is the board up to ``SOL_S n``; its clue lines
replay to the puzzle's own values, so they never change the verdict).

Rows are prompt-major (row ``b * G + s``). A row's sequence is its prompt (``BOS`` + the root
line, or any longer prefix such as a Guided-ReST edit) followed by its completion, right-padded
with ``PAD`` to ``L = P + T`` (``T = sampling.max_new_tokens``): the layout the policy's forward
pass reads (positions 0, 1, ... from the row's first token).

Reward (:class:`RewardParams`): 1 for a solved trace, else 0; plus ``format_weight`` when the
answer is well formed (Countdown: it ends in a goal claim with well-formed state and operation
lines, i.e. the verifier's reason is neither ``NO_GOAL``, ``NO_STATE`` nor ``NO_EXPLORE``; Sudoku:
it closes its answer with ``SOL_E``), minus ``length_penalty * tokens / max_new_tokens``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from sos_jax import parallel
from sos_jax.envs.countdown_check import NO_EXPLORE, NO_GOAL, NO_STATE
from sos_jax.models.sampler import Sampler, SamplingParams, place_inputs
from sos_jax.search.countdown_verify import verify_tokens
from sos_jax.search.sudoku_verify import replay_tokens
from sos_jax.tokenizers import sudoku as sudoku_tok
from sos_jax.tokenizers.countdown import PAD


@dataclasses.dataclass(frozen=True)
class RewardParams:
    """Reward shaping on top of 1 (solved) / 0 (see the module doc)."""

    format_weight: float = 0.0
    length_penalty: float = 0.0

    def validate(self) -> RewardParams:
        """``self``, or a ``ValueError`` naming the first bad field."""
        for name in ("format_weight", "length_penalty"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < float("inf"):
                raise ValueError(f"RewardParams.{name} must be a finite number >= 0, got {value!r}")
        return self


@struct.dataclass
class Rollout:
    """One rollout batch of ``R = B * G`` rows (``L = P + T`` columns)."""

    tokens_RxL: jax.Array  # prompt then completion, PAD after
    completion_RxL: jax.Array  # bool: the generated tokens
    logprobs_RxL: jax.Array  # the sampler's log-prob of each generated token (at its column), 0 elsewhere
    prompt_lengths_R: jax.Array
    lengths_R: jax.Array  # generated tokens
    stop_R: jax.Array  # sampler.STOP_* code
    reward_R: jax.Array
    solved_R: jax.Array
    reason_R: jax.Array  # the verifier's reason code (0: solved)


def join(prompts_RxP, prompt_lengths_R, new_RxT, new_lengths_R, fill=PAD):
    """Each row's prompt (its first ``prompt_lengths_R`` ids) followed by its first ``new_lengths_R``
    new values, right-padded with ``fill`` to ``[R, P + T]``."""
    width_p, width_t = prompts_RxP.shape[1], new_RxT.shape[1]
    col_L = jnp.arange(width_p + width_t, dtype=jnp.int32)[None, :]
    p_R, n_R = prompt_lengths_R[:, None], new_lengths_R[:, None]
    from_prompt = jnp.take_along_axis(prompts_RxP, jnp.broadcast_to(jnp.minimum(col_L, width_p - 1),
                                                                     (prompts_RxP.shape[0], col_L.shape[1])), axis=1)
    from_new = jnp.take_along_axis(new_RxT, jnp.broadcast_to(jnp.clip(col_L - p_R, 0, width_t - 1),
                                                             (new_RxT.shape[0], col_L.shape[1])), axis=1)
    return jnp.where(col_L < p_R, from_prompt, jnp.where(col_L < p_R + n_R, from_new, jnp.asarray(fill, new_RxT.dtype)))


def countdown_verdict(tokens_L, length, nums_K, target) -> dict:
    """``solved``, ``reason`` (the strict verifier's code, 0 when solved) and ``formatted`` of one
    Countdown row (``BOS``, the prompt line, the completion)."""
    verdict = verify_tokens(tokens_L, length, nums_K, jnp.int32(nums_K.shape[-1]), target)
    formatted = ~jnp.isin(verdict["reason"], jnp.asarray((NO_GOAL, NO_STATE, NO_EXPLORE)))
    return {"solved": verdict["solved"], "reason": verdict["reason"], "formatted": formatted}


def sudoku_verdict(tokens_L, length, puzzle_81, solution_81) -> dict:
    """``solved`` (the fills replay to the solution), ``reason`` (0 when solved, else 1) and
    ``formatted`` (``SOL_E`` closes the answer) of one Sudoku row (the board prompt, the completion)."""
    solved = replay_tokens(tokens_L, length, puzzle_81, solution_81)
    inside_L = jnp.arange(tokens_L.shape[-1]) < length
    formatted = jnp.any(inside_L & (tokens_L == sudoku_tok.SOL_E))
    return {"solved": solved, "reason": jnp.where(solved, 0, 1).astype(jnp.int32), "formatted": formatted}


def rewards(verdict: dict, lengths_R, max_new_tokens: int, params: RewardParams):
    """The reward of each row from its verdict (a judge's outputs) and generated length."""
    reward = verdict["solved"].astype(jnp.float32)
    if params.format_weight:
        reward = reward + params.format_weight * verdict["formatted"].astype(jnp.float32)
    if params.length_penalty:
        reward = reward - params.length_penalty * lengths_R.astype(jnp.float32) / max_new_tokens
    return reward


class Rollouts:
    """A compiled rollout for one model, prompt batch shape, ``SamplingParams`` and ``RewardParams``
    (see the module doc); ``state`` may be any state of the model's structure (updated parameters).
    ``judge(tokens_L, length, problem, answer)`` gives one row's verdict (``countdown_verdict`` or
    ``sudoku_verdict``)."""

    def __init__(self, graphdef, state, sampling: SamplingParams, reward: RewardParams, *, mesh=None,
                 batch_size: int, prompt_len: int, judge=countdown_verdict):
        self.sampler = Sampler(graphdef, state, sampling, mesh=mesh, batch_size=batch_size, prompt_len=prompt_len)
        self.sampling, self.reward, self.mesh, self.judge = sampling, reward.validate(), mesh, judge
        if mesh is None:
            self._run = jax.jit(self._rollout_fn)
        else:
            rows = parallel.batch_sharding(mesh)
            from jax.sharding import NamedSharding, PartitionSpec

            state_shardings = jax.tree.map(lambda x: x.sharding, state)
            self._run = jax.jit(self._rollout_fn, in_shardings=(state_shardings, rows, rows, rows, rows,
                                                                NamedSharding(mesh, PartitionSpec())))

    def __call__(self, state, prompts_BxP, lengths_B, problem_B, answer_B, key) -> Rollout:
        """Rolls out every prompt ``num_samples`` times; see the module doc."""
        args = tuple(jnp.asarray(x, jnp.int32) for x in (prompts_BxP, lengths_B, problem_B, answer_B))
        if self.mesh is None:
            return self._run(state, *args, key)
        key, *args = place_inputs(self.mesh, key, *args)
        with jax.set_mesh(self.mesh):
            return self._run(state, *args, key)

    def _rollout_fn(self, state, prompts_BxP, lengths_B, problem_B, answer_B, key) -> Rollout:
        n = self.sampling.num_samples
        samples = self.sampler.generate(state, prompts_BxP, lengths_B, key)
        prompts_RxP, prompt_lengths_R = jnp.repeat(prompts_BxP, n, axis=0), jnp.repeat(lengths_B, n, axis=0)
        problem_R, answer_R = jnp.repeat(problem_B, n, axis=0), jnp.repeat(answer_B, n, axis=0)
        tokens_RxL = join(prompts_RxP, prompt_lengths_R, samples.tokens_BxT, samples.lengths_B)
        col_L = jnp.arange(tokens_RxL.shape[1], dtype=jnp.int32)[None, :]
        end_R = prompt_lengths_R + samples.lengths_B
        completion_RxL = (col_L >= prompt_lengths_R[:, None]) & (col_L < end_R[:, None])
        logprobs_RxL = join(jnp.zeros(prompts_RxP.shape, jnp.float32), prompt_lengths_R, samples.logprobs_BxT,
                            samples.lengths_B, fill=0.0)
        verdict = jax.vmap(self.judge)(tokens_RxL, prompt_lengths_R + samples.lengths_B, problem_R, answer_R)
        return Rollout(tokens_RxL=tokens_RxL, completion_RxL=completion_RxL, logprobs_RxL=logprobs_RxL,
                       prompt_lengths_R=prompt_lengths_R, lengths_R=samples.lengths_B, stop_R=samples.stop_B,
                       reward_R=rewards(verdict, samples.lengths_B, self.sampling.max_new_tokens, self.reward),
                       solved_R=verdict["solved"], reason_R=verdict["reason"])
