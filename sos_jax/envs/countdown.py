"""Countdown on device: the puzzle's transitions, heuristics, solver and problem sampler.

A state is a list of ``m`` int32 numbers. Children of a state with ``m`` numbers come in the
reference order: pairs ``(i, j)`` as ``itertools.combinations``, and for each pair the four
candidate operations ``+ * - /`` (subtraction and division written larger-first; a division is
valid only when it is exact and the divisor non-zero). Every function has static shapes and is
meant to be used under ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from sos_jax.envs.countdown_check import TraceVerdict, check_trace

__all__ = [
    "CountdownSpec",
    "Children",
    "Problems",
    "TraceVerdict",
    "check_trace",
    "expand",
    "factor_table",
    "held_out_targets",
    "split_targets",
    "sample_problems",
    "solve",
    "sum_key",
    "mult_key",
]

OP_ADD, OP_MUL, OP_SUB, OP_DIV = 0, 1, 2, 3
INT32_MAX = 2**31 - 1
HEURISTIC_LCM = 60  # lcm(1..6): mean-heuristic remainders scale to a common denominator


@struct.dataclass
class CountdownSpec:
    """Static description of a problem family: number count, number range and target range."""

    num_count: int = struct.field(pytree_node=False, default=4)
    num_min: int = struct.field(pytree_node=False, default=1)
    num_max: int = struct.field(pytree_node=False, default=99)
    target_min: int = struct.field(pytree_node=False, default=10)
    target_max: int = struct.field(pytree_node=False, default=100)

    def validate(self) -> "CountdownSpec":
        """Checks the ranges; raises ValueError naming the field at fault."""
        if not 3 <= self.num_count <= 6:
            raise ValueError(f"num_count={self.num_count}: must be in 3..6")
        if not 0 <= self.num_min <= self.num_max:
            raise ValueError(f"num_min={self.num_min}, num_max={self.num_max}: need 0 <= num_min <= num_max")
        if not 2 <= self.target_min <= self.target_max:
            raise ValueError(
                f"target_min={self.target_min}, target_max={self.target_max}: need 2 <= target_min <= target_max"
            )
        # Every value reachable from n numbers <= M is below (M+1)**n; heuristics add n*target.
        bound = (self.num_max + 1) ** self.num_count + self.num_count * (self.target_max + 1)
        if bound > INT32_MAX:
            raise ValueError(
                f"num_max={self.num_max} with num_count={self.num_count}: intermediate values may reach "
                f"{bound:,}, beyond int32; lower num_max (or num_count)"
            )
        return self

    @property
    def max_divisors(self) -> int:
        """Largest count of factors f in 2..t of any target t in range (static array width)."""
        return max(sum(1 for f in range(2, t + 1) if t % f == 0) for t in range(self.target_min, self.target_max + 1))


class Children(NamedTuple):
    """The 4*C(m,2) candidate children of one state, in the reference order."""

    nums: jax.Array  # [K, m-1] remaining numbers, then the result
    x: jax.Array  # [K] first printed operand
    op: jax.Array  # [K] OP_ADD, OP_MUL, OP_SUB or OP_DIV
    y: jax.Array  # [K] second printed operand
    value: jax.Array  # [K] result
    valid: jax.Array  # [K] bool: false for a division that is not exact


def _pair_layout(m: int):
    pairs = list(itertools.combinations(range(m), 2))
    rest = [[k for k in range(m) if k not in (i, j)] for i, j in pairs]
    return np.array(pairs, dtype=np.int32).reshape(-1, 2), np.array(rest, dtype=np.int32).reshape(len(pairs), m - 2)


def expand(nums_M: jax.Array) -> Children:
    """All candidate children of a state of ``m`` numbers (m static, >= 2)."""
    m = nums_M.shape[-1]
    pairs, rest = _pair_layout(m)
    a = nums_M[pairs[:, 0]]
    b = nums_M[pairs[:, 1]]
    small, large = jnp.minimum(a, b), jnp.maximum(a, b)
    a_first = a > b  # larger-first text: "a-b" when a > b, else "b-a"
    safe_small = jnp.where(small == 0, 1, small)
    exact = (small != 0) & (large % safe_small == 0)
    x = jnp.stack([a, a, jnp.where(a_first, a, b), jnp.where(a_first, a, b)], axis=1)
    y = jnp.stack([b, b, jnp.where(a_first, b, a), jnp.where(a_first, b, a)], axis=1)
    value = jnp.stack([a + b, a * b, large - small, large // safe_small], axis=1)
    valid = jnp.stack([jnp.ones_like(exact), jnp.ones_like(exact), jnp.ones_like(exact), exact], axis=1)
    op = jnp.broadcast_to(jnp.array([OP_ADD, OP_MUL, OP_SUB, OP_DIV], jnp.int32), x.shape)
    kept = nums_M[rest]  # [P, m-2]
    new_nums = jnp.concatenate(
        [jnp.broadcast_to(kept[:, None, :], (len(pairs), 4, m - 2)), value[..., None]], axis=-1
    )
    return Children(
        nums=new_nums.reshape(-1, m - 1),
        x=x.reshape(-1),
        op=op.reshape(-1),
        y=y.reshape(-1),
        value=value.reshape(-1),
        valid=valid.reshape(-1),
    )


def sum_key(nums_KxM: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact sum heuristic (mean |n - target|) as a (quotient, scaled remainder) pair.

    Pairs compare lexicographically as the rational means do, for states of any sizes 1..6.
    """
    m = nums_KxM.shape[-1]
    total = jnp.sum(jnp.abs(nums_KxM - target), axis=-1)
    return total // m, (total % m) * (HEURISTIC_LCM // m)


def mult_key(nums_KxM: jax.Array, factors_F: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact mult heuristic (sum of distances to the nearest factor >= 2 of the target).

    ``factors_F`` lists the target's factors, padded with a repeat of the target itself.
    """
    dist = jnp.min(jnp.abs(nums_KxM[..., None] - factors_F), axis=-1)
    total = jnp.sum(dist, axis=-1)
    return total, jnp.zeros_like(total)


def factor_table(target: jax.Array, spec: CountdownSpec) -> jax.Array:
    """Factors f in 2..target of ``target`` (ascending), padded to ``spec.max_divisors`` with the target."""
    cand = jnp.arange(2, spec.target_max + 1, dtype=jnp.int32)
    is_factor = (cand <= target) & (target % cand == 0)
    order = jnp.argsort(jnp.where(is_factor, cand, INT32_MAX), stable=True)[: spec.max_divisors]
    return jnp.where(is_factor[order], cand[order], target)


def _solvable_leaves(nums_M: jax.Array, target: jax.Array):
    """Whether each leaf of the full search tree equals the target, leaves in reference order.

    Returns ``hits`` (flat bool over all leaves) and the per-level Children needed to read a path.
    """
    levels = []
    frontier = nums_M[None, :]
    while frontier.shape[-1] > 1:
        ch = jax.vmap(expand)(frontier)
        levels.append(ch)
        frontier = ch.nums.reshape(-1, frontier.shape[-1] - 1)
    valid = jnp.ones((1,), bool)
    for ch in levels:
        valid = (valid[:, None] & ch.valid).reshape(-1)
    hits = valid & (frontier[:, 0] == target)
    return hits, levels


DENSE_MAX = 4  # states of up to this many numbers are searched as one dense tree (1,465 nodes for 4)


def _first_solvable_child(nums_M: jax.Array, target: jax.Array):
    """Index of the first child (reference order) whose subtree holds a solution, and the children.

    Children are tried one at a time in a ``while_loop`` that stops at the first success, so a
    solvable state rarely pays for its whole tree; returns ``(found, index, children)``.
    """
    ch = expand(nums_M)
    width = ch.x.shape[0]

    def body(state):
        i, _ = state
        return i + 1, ch.valid[i] & _solvable(ch.nums[i], target)

    count, found = jax.lax.while_loop(lambda s: ~s[1] & (s[0] < width), body, (jnp.int32(0), jnp.bool_(False)))
    return found, count - 1, ch


def _solvable(nums_M: jax.Array, target: jax.Array) -> jax.Array:
    """Whether the numbers can be combined, all of them, into the target (exhaustive search)."""
    if nums_M.shape[-1] <= DENSE_MAX:
        return jnp.any(_solvable_leaves(nums_M, target)[0])
    return _first_solvable_child(nums_M, target)[0]


def solve(nums_M: jax.Array, target: jax.Array) -> dict:
    """First solution in reference order (depth first: pairs, then operations).

    Returns a dict with ``solvable`` (bool) and the operation fields ``x, op, y, value``, each of
    shape [m-1], one entry per step (meaningless where not solvable). Up to ``DENSE_MAX`` numbers
    the whole tree is searched at once; above, the first solvable child is found with an early
    exit and the search recurses into it.
    """
    if nums_M.shape[-1] > DENSE_MAX:
        found, i, ch = _first_solvable_child(nums_M, target)
        rest = solve(ch.nums[i], target)
        head = {k: getattr(ch, k)[i][None] for k in ("x", "op", "y", "value")}
        return {"solvable": found, **{k: jnp.concatenate([head[k], rest[k]]) for k in head}}
    hits, levels = _solvable_leaves(nums_M, target)
    leaf = jnp.argmax(hits)
    widths = [ch.x.shape[-1] for ch in levels]
    steps = {k: [] for k in ("x", "op", "y", "value")}
    for level, ch in enumerate(levels):
        node = leaf // math.prod(widths[level + 1 :])  # index among all nodes of this level
        parent, digit = node // widths[level], node % widths[level]
        for k in steps:
            steps[k].append(getattr(ch, k)[parent, digit])
    return {"solvable": jnp.any(hits), **{k: jnp.stack(v) for k, v in steps.items()}}


def held_out_targets(seed: int = 4, target_min: int = 10, target_max: int = 100, fraction: float = 0.1) -> list[int]:
    """The held-out ("unseen") targets of the reference split, as the original generator drew them."""
    targets = list(range(target_min, target_max + 1))
    random.Random(seed).shuffle(targets)
    return sorted(targets[: int(fraction * len(targets))])


def split_targets(spec: CountdownSpec, split: str, seed: int = 4, fraction: float = 0.1) -> np.ndarray:
    """Targets of a split: ``seen``, ``unseen`` or ``all`` (int32 array)."""
    held = set(held_out_targets(seed, spec.target_min, spec.target_max, fraction))
    every = range(spec.target_min, spec.target_max + 1)
    if split == "all":
        chosen = list(every)
    elif split == "seen":
        chosen = [t for t in every if t not in held]
    elif split == "unseen":
        chosen = sorted(held)
    else:
        raise ValueError(f"split={split!r}: must be 'seen', 'unseen' or 'all'")
    if not chosen:
        raise ValueError(f"split={split!r} has no targets in {spec.target_min}..{spec.target_max}")
    return np.asarray(chosen, dtype=np.int32)


@struct.dataclass
class Problems:
    """A batch of problems: ``nums`` [B, N] and ``target`` [B] (int32), and each one's global ``index`` [B]."""

    nums: jax.Array
    target: jax.Array
    index: jax.Array


def _try_round(problem_key, target, round_, spec: CountdownSpec, tries: int):
    """Draws ``tries`` number lists for round ``round_`` of one problem; the first solvable one wins."""
    nums = jax.random.randint(jax.random.fold_in(problem_key, round_ + 1), (tries, spec.num_count), spec.num_min,
                              spec.num_max + 1, dtype=jnp.int32)
    ok = jax.vmap(_solvable, in_axes=(0, None))(nums, target)
    return jnp.any(ok), nums[jnp.argmax(ok)]


def sample_problems(key: jax.Array, indices_B: jax.Array, spec: CountdownSpec, targets_T: jax.Array,
                    tries_per_round: int = 2, max_rounds: int = 512) -> tuple[Problems, jax.Array]:
    """Solvable problems for the given global problem indices.

    Problem ``i`` depends only on ``(key, i)``: its target is drawn uniformly from ``targets_T``,
    then rounds of ``tries_per_round`` number lists are drawn (target fixed) until the exhaustive
    on-device search finds a solvable one, the first in draw order. So the same seed gives the same
    problems whatever the batch size or device count. All problems try one round together; the
    few left unsolved then retry in small chunks, so a hard target does not hold up the batch.
    Returns the problems and a bool flag per problem that is false only if ``max_rounds`` rounds
    found nothing solvable (the caller should treat that as an error).
    """
    batch = indices_B.shape[0]
    problem_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices_B)
    target = jax.vmap(lambda k: targets_T[jax.random.randint(k, (), 0, targets_T.shape[0])])(problem_keys)
    try_round = jax.vmap(functools.partial(_try_round, spec=spec, tries=tries_per_round))
    found, nums = try_round(problem_keys, target, jnp.zeros((batch,), jnp.int32))
    rounds = jnp.ones((batch,), jnp.int32)
    chunk = max(1, batch // 16)

    def pending(state):
        found, _, rounds = state
        return ~found & (rounds < max_rounds)

    def retry(state):
        found, nums, rounds = state
        rows = jnp.nonzero(pending(state), size=chunk, fill_value=batch)[0]
        safe = jnp.minimum(rows, batch - 1)
        ok, drawn = try_round(problem_keys[safe], target[safe], rounds[safe])
        found = found.at[rows].set(ok, mode="drop")
        nums = nums.at[rows].set(drawn, mode="drop")
        rounds = rounds.at[rows].add(1, mode="drop")
        return found, nums, rounds

    found, nums, _ = jax.lax.while_loop(lambda s: jnp.any(pending(s)), retry, (found, nums, rounds))
    return Problems(nums=nums, target=target, index=indices_B.astype(jnp.int32)), found
