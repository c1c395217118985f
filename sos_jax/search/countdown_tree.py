"""Dense search trees for Countdown: every level of the tree as one static-shaped array.

At depth ``l`` every node holds ``n - l`` numbers, so a whole level has a static shape. A tree
is built level by level: each node's candidate children are generated in the reference order,
ranked by an exact heuristic (stable: ties keep generation order) and the first ``width`` are
kept, so a child's position in its level is its rank among its siblings. The DFS and the
best-first beam search both read their traces off such trees.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sos_jax.envs import countdown as env
from sos_jax.search.countdown_render import NodeTable

SUM, MULT = 0, 1  # heuristic ids


class Tree(NamedTuple):
    """All levels of a dense tree, concatenated in level order (root first).

    ``nodes`` holds numbers and path operations (``ids`` = rank among siblings at each level);
    ``exists`` [N] marks kept nodes whose ancestors are all kept; ``key_q, key_r`` [N] is the
    exact heuristic (compare lexicographically).
    """

    nodes: NodeTable
    exists: jax.Array
    key_q: jax.Array
    key_r: jax.Array


def heuristic_key(nums_KxM, target, heuristic, factors_F):
    """Exact heuristic of each state as a lexicographic (q, r) pair; ``heuristic`` is SUM or MULT."""
    sq, sr = env.sum_key(nums_KxM, target)
    mq, mr = env.mult_key(nums_KxM, factors_F)
    is_mult = heuristic == MULT
    return jnp.where(is_mult, mq, sq), jnp.where(is_mult, mr, sr)


def level_widths(num_count: int, width: int | None) -> list[int]:
    """Children kept per node at each depth 1..n-1 (all candidates when ``width`` is None)."""
    full = [4 * math.comb(m, 2) for m in range(num_count, 1, -1)]
    return [k if width is None else min(k, width) for k in full]


def build_tree(nums_N, target, heuristic, factors_F, keep_fn, width: int | None, sort_key_fn=None) -> Tree:
    """Dense tree of one problem.

    ``keep_fn(valid_K, rank_K, q_K, r_K) -> bool[K]`` decides which ranked candidates are kept
    (ranking puts invalid candidates last); ``width`` caps the children stored per node.
    ``sort_key_fn(valid_K, q_K, r_K) -> int32[K]``, when given, replaces the lexicographic ranking
    by a stable sort on one integer key (much faster), for rules whose kept candidates have
    small heuristic values.
    """
    n = nums_N.shape[0]
    d = n - 1
    widths = level_widths(n, width)

    def pad(a, size):
        return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, size - a.shape[-1])])

    level_nums = nums_N[None, :]
    level_exists = jnp.ones((1,), bool)
    level_ops = {k: jnp.zeros((1, 0), jnp.int32) for k in ("x", "op", "y", "value", "ids")}
    q0, r0 = heuristic_key(level_nums, target, heuristic, factors_F)
    parts = [(level_nums, level_exists, level_ops, q0, r0)]
    for depth, w in enumerate(widths, start=1):
        ch = jax.vmap(env.expand)(level_nums)  # [P, K, ...]
        q, r = heuristic_key(ch.nums, target, heuristic, factors_F)
        big = jnp.iinfo(jnp.int32).max
        if sort_key_fn is None:
            order = jnp.lexsort((r, jnp.where(ch.valid, q, big), ~ch.valid), axis=-1)[:, :w]
        else:
            order = jnp.argsort(sort_key_fn(ch.valid, q, r), axis=-1, stable=True)[:, :w]
        take = lambda a: jnp.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)), axis=1)
        ch = jax.tree.map(take, ch)
        q, r = take(q), take(r)
        rank = jnp.broadcast_to(jnp.arange(w, dtype=jnp.int32), q.shape)
        kept = keep_fn(ch.valid, rank, q, r) & level_exists[:, None]
        parents = level_nums.shape[0]
        step = {"x": ch.x, "op": ch.op, "y": ch.y, "value": ch.value, "ids": rank}  # appended to each path
        ops = {k: jnp.concatenate([jnp.broadcast_to(level_ops[k][:, None, :], (parents, w, depth - 1)), v[..., None]],
                                  axis=-1).reshape(parents * w, depth) for k, v in step.items()}
        level_nums = ch.nums.reshape(parents * w, n - depth)
        level_exists = kept.reshape(-1)
        level_ops = ops
        parts.append((level_nums, level_exists, ops, q.reshape(-1), r.reshape(-1)))

    nodes = NodeTable(
        nums=jnp.concatenate([pad(p[0], n) for p in parts]),
        count=jnp.concatenate([jnp.full((p[0].shape[0],), p[0].shape[1], jnp.int32) for p in parts]),
        depth=jnp.concatenate([jnp.full((p[0].shape[0],), i, jnp.int32) for i, p in enumerate(parts)]),
        **{k: jnp.concatenate([pad(p[2][k], d) for p in parts]) for k in ("x", "op", "y", "value", "ids")},
    )
    return Tree(
        nodes=nodes,
        exists=jnp.concatenate([p[1] for p in parts]),
        key_q=jnp.concatenate([p[3] for p in parts]),
        key_r=jnp.concatenate([p[4] for p in parts]),
    )


def tree_structure(widths: list[int]):
    """Static structure of a dense tree: level offsets, parent index and sibling rank per node."""
    sizes = [1]
    for w in widths:
        sizes.append(sizes[-1] * w)
    offsets = np.cumsum([0] + sizes)
    parent = np.full(offsets[-1], -1, dtype=np.int32)
    rank = np.zeros(offsets[-1], dtype=np.int32)
    for level, w in enumerate(widths, start=1):
        idx = np.arange(sizes[level])
        parent[offsets[level] + idx] = offsets[level - 1] + idx // w
        rank[offsets[level] + idx] = idx % w
    return offsets, parent, rank


def preorder(widths: list[int]) -> np.ndarray:
    """Node indices (level-order numbering) listed in depth-first pre-order."""
    offsets, _, _ = tree_structure(widths)
    out = []

    def visit(level, index):
        out.append(offsets[level] + index)
        if level < len(widths):
            for k in range(widths[level]):
                visit(level + 1, index * widths[level] + k)

    visit(0, 0)
    return np.asarray(out, dtype=np.int32)
