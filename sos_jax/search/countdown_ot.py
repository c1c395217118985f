"""Optimal-path ("OT") text of a known solution, on device.

Each step removes one occurrence (the first) of each operand, as ``list.remove`` does, and
appends the result; the lines are the root state, then per step ``Exploring Operation`` and
either ``Generated Node #k`` with the new state or, at the last step, the goal verdict.
"""

from __future__ import annotations

import jax.numpy as jnp

from sos_jax.search import countdown_render as render


def _remove_first(nums_M, count, v):
    slots = jnp.arange(nums_M.shape[0])
    hit = (nums_M == v) & (slots < count)
    idx = jnp.where(jnp.any(hit), jnp.argmax(hit), count)
    shifted = jnp.concatenate([nums_M[1:], nums_M[:1]])
    return jnp.where(slots < idx, nums_M, shifted), count - jnp.any(hit).astype(count.dtype)


def ot_lines(nums_N, x_D, op_D, y_D, value_D):
    """Line slots of one OT text, as a single group: ``(kind_1xS, node_1xS, nodes, valid)``.

    ``valid`` is false when an operand is missing from the current numbers (the text is then
    not a solution and should not be used).
    """
    n = nums_N.shape[0]
    d = n - 1
    states, counts = [nums_N], [jnp.int32(n)]
    valid = jnp.bool_(True)
    for step in range(d):
        cur, count = states[-1], counts[-1]
        cur, c1 = _remove_first(cur, count, x_D[step])
        cur, c2 = _remove_first(cur, c1, y_D[step])
        valid = valid & (c2 == count - 2)
        cur = jnp.where(jnp.arange(n) == c2, value_D[step], cur)
        states.append(jnp.where(jnp.arange(n) < c2 + 1, cur, 0))
        counts.append(c2 + 1)
    steps = jnp.arange(n)
    path = lambda a: jnp.where(steps[:, None] > jnp.arange(d)[None, :], a[None, :], 0)
    nodes = render.NodeTable(
        nums=jnp.stack(states),
        count=jnp.stack(counts),
        depth=steps.astype(jnp.int32),
        x=path(x_D), op=path(op_D), y=path(y_D), value=path(value_D),
        ids=jnp.zeros((n, d), jnp.int32),
    )
    kinds, refs = [render.CURRENT_STATE], [0]
    for step in range(1, n):
        if step < d:
            kinds += [render.EXPLORE, render.OT_GENERATED, render.CURRENT_STATE]
            refs += [step] * 3
        else:
            kinds += [render.EXPLORE, render.LEAF]
            refs += [step] * 2
    return jnp.asarray([kinds], jnp.int32), jnp.asarray([refs], jnp.int32), nodes, valid
