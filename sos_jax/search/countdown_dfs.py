"""Depth-first search traces, read off a dense tree with no sequential loop.

The DFS visits kept children in heuristic order, so its trace is the tree's pre-order walk.
Every node contributes a fixed group of up to six lines: the backtracking lines to its parent
when it is not the first child (``Moving to Node #parent``, the parent's state), then its
``Exploring Operation`` line, then either its leaf verdict or ``Generated Node``, ``Moving to
Node`` and its own state. The trace ends after the first goal leaf in pre-order.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from sos_jax.envs.countdown import HEURISTIC_LCM
from sos_jax.search import countdown_render as render
from sos_jax.search import countdown_tree as tree_lib


def _dfs_keep(threshold):
    def keep(valid, rank, q, r):
        del rank
        return valid & ((q < threshold) | ((q == threshold) & (r == 0)))

    return keep


def _dfs_sort_key(threshold):
    """One int32 key ordering kept children by exact heuristic (kept ones have q <= threshold)."""
    keep = _dfs_keep(threshold)

    def key(valid, q, r):
        return jnp.where(keep(valid, None, q, r), q * HEURISTIC_LCM + r, jnp.iinfo(jnp.int32).max)

    return key


def dfs_lines(nums_N, target, heuristic, threshold, factors_F):
    """Line slots of one DFS trace, six per node in pre-order: ``(kind_Gx6, node_Gx6, nodes, solved)``."""
    n = nums_N.shape[0]
    widths = tree_lib.level_widths(n, None)
    tree = tree_lib.build_tree(nums_N, target, heuristic, factors_F, _dfs_keep(threshold), None,
                                _dfs_sort_key(threshold))
    offsets, parent_np, rank_np = tree_lib.tree_structure(widths)
    order = jnp.asarray(tree_lib.preorder(widths))
    parent = jnp.asarray(np.maximum(parent_np, 0))[order]
    rank = jnp.asarray(rank_np)[order]
    exists = tree.exists[order]
    leaf = jnp.asarray(order >= offsets[n - 1])
    is_root = jnp.arange(order.shape[0]) == 0
    goal = exists & leaf & (tree.nodes.nums[order, 0] == target)
    solved = jnp.any(goal)
    goal_at = jnp.where(solved, jnp.argmax(goal), order.shape[0])
    position = jnp.arange(order.shape[0])
    before_goal = position < goal_at
    at_goal = position == goal_at

    child = exists & ~is_root
    backtrack = child & (rank > 0) & (before_goal | at_goal)
    inner = child & ~leaf & before_goal
    kinds = jnp.stack(
        [
            jnp.where(backtrack, render.MOVE, render.NONE),
            jnp.where(backtrack, render.CURRENT_STATE, render.NONE),
            jnp.where(child & (before_goal | at_goal), render.EXPLORE, render.NONE),
            jnp.where(child & leaf & (before_goal | at_goal), render.LEAF,
                      jnp.where(inner, render.GENERATED, render.NONE)),
            jnp.where(inner, render.MOVE, render.NONE),
            jnp.where(inner | is_root, render.CURRENT_STATE, render.NONE),
        ],
        axis=1,
    )
    node_refs = jnp.stack([parent, parent, order, order, order, order], axis=1)
    return kinds, node_refs, tree.nodes, solved
