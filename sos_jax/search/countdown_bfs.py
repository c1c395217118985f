"""Best-first beam search ("BFS") traces with Python ``heapq`` semantics, on device.

The nodes a beam search can ever push form a dense tree of branching ``beam`` (each node's
children are its ``beam`` best candidates, whatever the shuffles), so the tree is built up front
and only the priority queue is simulated step by step. The queue reproduces ``heapq.heappush``
and ``heapq.heappop`` exactly on ``(h, node)`` pairs whose nodes compare equal: ties follow
heapq's sift order and the push order, which the shuffles influence. Shuffle ``r`` belongs to the
``r``-th popped node (empty child lists included), so a recorded list of permutations replays a
trace exactly; otherwise the permutations come from a JAX PRNG key.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sos_jax.search import countdown_render as render
from sos_jax.search import countdown_tree as tree_lib

MAX_BEAM = 5


class _Structure(NamedTuple):
    """Static layout of the dense beam tree (level-order node numbering, root 0)."""

    size: int  # nodes
    children: np.ndarray  # [size, MAX_BEAM] child node per slot, -1 where none
    parent: np.ndarray  # [size] parent node (0 for the root)
    slot: np.ndarray  # [size] slot of the node among its parent's children
    is_leaf: np.ndarray  # [size] bool: the node holds one number
    ancestors: np.ndarray  # [size, num_count - 1] ancestor at depth l + 1 (0 past the node's depth)


def _structure(num_count: int) -> _Structure:
    widths = tree_lib.level_widths(num_count, MAX_BEAM)
    offsets, parent, slot = tree_lib.tree_structure(widths)
    size = int(offsets[-1])
    children = np.full((size, MAX_BEAM), -1, dtype=np.int32)
    children[parent[1:], slot[1:]] = np.arange(1, size)
    ancestors = np.zeros((size, num_count - 1), dtype=np.int32)
    for node in range(1, size):
        chain = [node]
        while parent[chain[-1]] > 0:
            chain.append(parent[chain[-1]])
        ancestors[node, : len(chain)] = chain[::-1]
    return _Structure(size=size, children=children, parent=np.maximum(parent, 0), slot=slot,
                      is_leaf=np.arange(size) >= offsets[num_count - 1], ancestors=ancestors)


def positions_from_perms(perms: list[list[int]], pops: int) -> np.ndarray:
    """Print position of each child slot per pop, [pops, MAX_BEAM], from ``random.shuffle``-style perms.

    ``perm[k]`` is the slot placed at position k; unused entries are 0.
    """
    if len(perms) > pops:
        raise ValueError(f"{len(perms)} shuffle permutations given, but a search makes at most {pops}")
    out = np.zeros((pops, MAX_BEAM), dtype=np.int32)
    for r, perm in enumerate(perms):
        if sorted(perm) != list(range(len(perm))) or len(perm) > MAX_BEAM:
            raise ValueError(f"shuffle permutation {r} is not a permutation of 0..{len(perm) - 1}: {perm}")
        for k, slot in enumerate(perm):
            out[r, slot] = k
    return out


def random_positions(key, pops: int) -> jax.Array:
    """Uniform random print orders, [pops, MAX_BEAM]: entries < nc give a permutation of any prefix nc."""
    u = jax.random.uniform(key, (pops, MAX_BEAM))
    return jnp.sum(u[:, None, :] < u[:, :, None], axis=-1).astype(jnp.int32)


def _prefix_positions(pos_K, count):
    """Restricts a print order over MAX_BEAM slots to the first ``count`` slots (still 0..count-1)."""
    slots = jnp.arange(MAX_BEAM)
    valid = slots < count
    return jnp.sum(valid[None, :] & (pos_K[None, :] < pos_K[:, None]), axis=-1).astype(jnp.int32)


def _less(q1, r1, q2, r2):
    return (q1 < q2) | ((q1 == q2) & (r1 < r2))


class _Heap:
    """``heapq`` on arrays: items are node ids keyed by (q, r); equal keys are never ``<``."""

    def __init__(self, capacity: int, key_q, key_r):
        self.steps = max(1, math.ceil(math.log2(capacity + 1)))
        self.key_q, self.key_r = key_q, key_r

    def _lt(self, a, b):
        return _less(self.key_q[a], self.key_r[a], self.key_q[b], self.key_r[b])

    def _siftdown(self, heap, startpos, pos, item):
        def body(_, carry):
            heap, pos, moving = carry
            parentpos = (pos - 1) >> 1
            parent = heap[jnp.maximum(parentpos, 0)]
            move = moving & (pos > startpos) & self._lt(item, parent)
            heap = heap.at[pos].set(jnp.where(move, parent, heap[pos]))
            return heap, jnp.where(move, parentpos, pos), move

        heap, pos, _ = jax.lax.fori_loop(0, self.steps, body, (heap, pos, jnp.bool_(True)))
        return heap.at[pos].set(item)

    def push(self, heap, size, item, enabled):
        """heapq.heappush where ``enabled``; returns (heap, size)."""
        new = self._siftdown(heap.at[size].set(item), 0, size, item)
        return jnp.where(enabled, new, heap), size + enabled.astype(size.dtype)

    def pop(self, heap, size, enabled):
        """heapq.heappop where ``enabled`` and ``size > 0``; returns (heap, size, item)."""
        last = heap[jnp.maximum(size - 1, 0)]
        end = size - 1
        top = heap[0]

        def body(_, carry):
            heap, pos = carry
            child = 2 * pos + 1
            right = child + 1
            go = child < end
            use_right = (right < end) & ~self._lt(heap[jnp.minimum(child, end)], heap[jnp.minimum(right, end)])
            child = jnp.where(use_right, right, child)
            heap = heap.at[pos].set(jnp.where(go, heap[jnp.minimum(child, end)], heap[pos]))
            return heap, jnp.where(go, child, pos)

        sifted, pos = jax.lax.fori_loop(0, self.steps, body, (heap, jnp.int32(0)))
        sifted = self._siftdown(sifted, 0, pos, last)
        active = enabled & (size > 0)
        new_heap = jnp.where(active & (end > 0), sifted, heap)
        item = jnp.where(end > 0, top, last)
        return new_heap, size - active.astype(size.dtype), item


def bfs_lines(nums_N, target, heuristic, beam, factors_F, positions_RxK):
    """Line slots of one beam-search trace, one row per pop: ``(kind_RxW, node_RxW, nodes, solved)``.

    ``positions_RxK[r, j]`` is the print position of child slot ``j`` of the ``r``-th popped node
    (see ``positions_from_perms`` and ``random_positions``); ``beam`` is 1..MAX_BEAM.
    """
    n = nums_N.shape[0]
    layout = _structure(n)
    size_nodes = layout.size

    def keep(valid, rank, q, r):
        return valid & (rank < beam)

    tree = tree_lib.build_tree(nums_N, target, heuristic, factors_F, keep, MAX_BEAM)
    children = jnp.asarray(layout.children)
    child_exists = (children >= 0) & tree.exists[jnp.maximum(children, 0)]
    n_children = jnp.sum(child_exists, axis=1)
    leaf = jnp.asarray(layout.is_leaf)
    goal = leaf & (tree.nodes.nums[:, 0] == target)
    heap_ops = _Heap(size_nodes, tree.key_q, tree.key_r)

    def round_body(state):
        heap, size, popped, moves, n_pop, done, goal_pop, goal_pos = state
        count = jnp.minimum(beam, size)
        for i in range(MAX_BEAM):
            heap, size, item = heap_ops.pop(heap, size, i < count)
            popped = popped.at[n_pop + i].set(jnp.where(i < count, item, popped[n_pop + i]))
        for i in range(MAX_BEAM):
            r = n_pop + i
            node = popped[r]
            active = (i < count) & ~done
            slots = children[node]
            exists = child_exists[node]
            pos = _prefix_positions(positions_RxK[r], n_children[node])
            is_goal = exists & goal[jnp.maximum(slots, 0)]
            found = active & jnp.any(is_goal)
            goal_pop = jnp.where(found, r, goal_pop)
            goal_pos = jnp.where(found, jnp.min(jnp.where(is_goal, pos, MAX_BEAM)), goal_pos)
            done = done | found
            push = active & ~found
            q = tree.key_q[jnp.maximum(slots, 0)]
            rr = tree.key_r[jnp.maximum(slots, 0)]
            before = (_less(q[None, :], rr[None, :], q[:, None], rr[:, None])
                      | ((q[None, :] == q[:, None]) & (rr[None, :] == rr[:, None]) & (pos[None, :] < pos[:, None])))
            push_rank = jnp.sum(before & exists[None, :], axis=1)
            for k in range(MAX_BEAM):
                slot = jnp.argmax(exists & (push_rank == k))
                heap, size = heap_ops.push(heap, size, slots[slot], push & (k < n_children[node]))
            # The last pop of a round moves to the queue's head, after all the round's pushes.
            nxt = jnp.where(i + 1 < count, popped[jnp.minimum(r + 1, popped.shape[0] - 1)],
                            jnp.where(size > 0, heap[0], -1))
            moves = moves.at[r].set(jnp.where(active, nxt, moves[r]))
        n_pop = n_pop + count
        done = done | (size == 0)
        return heap, size, popped, moves, n_pop, done, goal_pop, goal_pos

    zeros = jnp.zeros((size_nodes,), jnp.int32)
    init = (zeros, jnp.int32(1), zeros, jnp.full((size_nodes,), -1, jnp.int32), jnp.int32(0),
            jnp.bool_(False), jnp.int32(size_nodes), jnp.int32(0))
    heap, size, popped, moves, n_pop, done, goal_pop, goal_pos = jax.lax.while_loop(
        lambda s: ~s[5], round_body, init
    )
    solved = goal_pop < size_nodes
    n_print = jnp.where(solved, goal_pop + 1, n_pop)

    # Node ids: the print position among the parent's children, 0 for leaves.
    pops = jnp.arange(size_nodes)
    pop_of = jnp.full((size_nodes,), size_nodes - 1, jnp.int32).at[jnp.where(pops < n_pop, popped, size_nodes)].set(
        pops, mode="drop")
    parent = jnp.asarray(layout.parent)
    prefix = jax.vmap(_prefix_positions)(positions_RxK[pop_of[parent]], n_children[parent])
    print_pos = jnp.take_along_axis(prefix, jnp.asarray(layout.slot)[:, None], axis=1)[:, 0]
    own_k = jnp.where(leaf, 0, print_pos)
    ids = jnp.where(jnp.arange(n - 1)[None, :] < tree.nodes.depth[:, None], own_k[jnp.asarray(layout.ancestors)], 0)
    nodes = tree.nodes.replace(ids=ids)

    # Line slots per pop: state, (explore, verdict) per print position, move.
    node_r = popped
    pos_r = jax.vmap(_prefix_positions)(positions_RxK[:size_nodes], n_children[node_r])
    exists_r = child_exists[node_r]
    at_pos = jnp.argmax((pos_r[:, None, :] == jnp.arange(MAX_BEAM)[None, :, None]) & exists_r[:, None, :], axis=2)
    child_at = jnp.take_along_axis(children[node_r], at_pos, axis=1)
    printed = pops < n_print
    k = jnp.arange(MAX_BEAM)[None, :]
    show = printed[:, None] & (k < n_children[node_r][:, None]) & (
        (pops[:, None] < goal_pop) | (k <= goal_pos))
    child_leaf = leaf[jnp.maximum(child_at, 0)]
    explore = jnp.where(show, render.EXPLORE, render.NONE)
    verdict = jnp.where(show, jnp.where(child_leaf, render.LEAF, render.GENERATED), render.NONE)
    last_line = jnp.where(
        printed & ~(solved & (pops == goal_pop)),
        jnp.where(moves >= 0, render.MOVE, render.NO_SOLUTION),
        render.NONE,
    )
    kinds = jnp.concatenate(
        [jnp.where(printed, render.CURRENT_STATE, render.NONE)[:, None],
         jnp.stack([explore, verdict], axis=2).reshape(size_nodes, -1),
         last_line[:, None]], axis=1)
    refs = jnp.concatenate(
        [node_r[:, None], jnp.repeat(child_at, 2, axis=1), jnp.maximum(moves, 0)[:, None]], axis=1)
    return kinds, refs, nodes, solved


def max_pops(num_count: int) -> int:
    """Most nodes a beam search pops for ``num_count`` numbers: the size of its dense tree."""
    return _structure(num_count).size
