"""Rendering Countdown search lines into token ids, data-parallel.

A search writes its trace as a list of *lines*, each a line kind and a reference to a node of a
node table (the node's numbers, the operations on its path and its id path). This module turns
lines into tokens without any sequential loop. Each line kind has a fixed template of pieces (a
literal token, a token read from a node field, or a number read from a node field, shown only
under a condition on the node's number count or depth). A trace's full token count comes from a
closed form of each line kind's length per node. Only the first lines, enough to fill the buffer,
are expanded into pieces; each output position finds its line by a run-length decode (a scatter
of line ends and a cumulative sum) and its piece by a binary search over the line's piece ends,
and numbers are spelled digit by digit. Rows are rendered in groups of similar length, each at
the narrowest buffer width that holds it. Decoded, the tokens are exactly the reference text, in
the tokenizer's greedy tokenization.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from sos_jax.tokenizers import countdown as tok

# Line kinds.
NONE, CURRENT_STATE, EXPLORE, GENERATED, LEAF, MOVE, NO_SOLUTION, OT_GENERATED = range(8)

# Piece types and conditions (a condition index selects a column of ``_conditions``).
_LIT, _FIELD_TOKEN, _FIELD_NUMBER = range(3)
_NEVER, _ALWAYS, _COUNT_GT, _DEPTH_GT, _DEPTH_EQ0, _GOAL, _NOT_GOAL = range(7)

_POW10 = np.array([10**k for k in range(10)], dtype=np.int64).astype(np.int32)
_OP_TOKENS = np.array(tok.OP_TOKENS, dtype=np.int32)
LINES_PER_TOKEN = 10  # buffer lines per token of max_len: real lines average about 12 tokens or more


@struct.dataclass
class NodeTable:
    """Search nodes of one problem: numbers, path operations and id path (static widths).

    ``nums`` [N, M] (first ``count`` valid), ``count`` [N], ``depth`` [N] (operations so far),
    ``x, op, y, value`` [N, D] the operations on the path (first ``depth`` valid), ``ids`` [N, D]
    the child counters of the id path ``0,k1,k2,...`` (first ``depth`` valid).
    """

    nums: jax.Array
    count: jax.Array
    depth: jax.Array
    x: jax.Array
    op: jax.Array
    y: jax.Array
    value: jax.Array
    ids: jax.Array


class _Layout:
    """Offsets of the fields in a line's field vector, for M numbers and D operations."""

    def __init__(self, m: int, d: int):
        self.target = 0
        self.nums = 1
        self.ops = 1 + m  # x, sym, y, value per operation
        self.ids = self.ops + 4 * d
        self.last = self.ids + d  # x, sym, y, value of the last operation
        self.zero = self.last + 4
        self.step = self.zero + 1  # depth + 1, the optimal-path node number
        self.width = self.step + 1


def _templates(m: int, d: int) -> tuple[np.ndarray, _Layout]:
    """Piece tables [n_kinds, P, 4] = (type, literal, field, condition column of ``_conditions``)."""
    lay = _Layout(m, d)

    def lit(token, cond=_ALWAYS, arg=0):
        return (_LIT, token, 0, cond, arg)

    def num(field, cond=_ALWAYS, arg=0):
        return (_FIELD_NUMBER, 0, field, cond, arg)

    def field_token(field, cond=_ALWAYS, arg=0):
        return (_FIELD_TOKEN, 0, field, cond, arg)

    def numbers():
        out = []
        for i in range(m):
            if i:
                out.append(lit(tok.COMMA_SPACE, _COUNT_GT, i))
            out.append(num(lay.nums + i, _COUNT_GT, i))
        return out

    def last_op():
        return [num(lay.last), field_token(lay.last + 1), num(lay.last + 2), lit(tok.EQUALS), num(lay.last + 3)]

    def node_id():
        out = [num(lay.zero)]
        for i in range(d):
            out += [lit(tok.COMMA, _DEPTH_GT, i), num(lay.ids + i, _DEPTH_GT, i)]
        return out

    ops = []
    for i in range(d):
        base = lay.ops + 4 * i
        ops += [
            lit(tok.QUOTE if i == 0 else tok.QUOTE_SEP, _DEPTH_GT, i),
            num(base, _DEPTH_GT, i),
            field_token(base + 1, _DEPTH_GT, i),
            num(base + 2, _DEPTH_GT, i),
            lit(tok.EQUALS, _DEPTH_GT, i),
            num(base + 3, _DEPTH_GT, i),
        ]
    kinds = {
        NONE: [],
        CURRENT_STATE: [lit(tok.CURRENT_STATE), num(lay.target), lit(tok.COLON_BRACKET), *numbers(),
                        lit(tok.OPERATIONS_OPEN), *ops, lit(tok.QUOTE_CLOSE, _DEPTH_GT, 0),
                        lit(tok.BRACKET_CLOSE, _DEPTH_EQ0)],
        EXPLORE: [lit(tok.EXPLORING), *last_op(), lit(tok.RESULTING), *numbers(), lit(tok.BRACKET_CLOSE)],
        GENERATED: [lit(tok.GENERATED), *node_id(), lit(tok.COLON_SPACE), num(lay.target), lit(tok.COLON_BRACKET),
                    *numbers(), lit(tok.NODE_OPERATION), *last_op(), lit(tok.NEWLINE)],
        LEAF: [num(lay.nums), lit(tok.COMMA), num(lay.target), lit(tok.GOAL, _GOAL), lit(tok.NO_GOAL, _NOT_GOAL)],
        MOVE: [lit(tok.MOVING), *node_id(), lit(tok.NEWLINE)],
        NO_SOLUTION: [lit(tok.NO_SOLUTION)],
        OT_GENERATED: [lit(tok.GENERATED), num(lay.step), lit(tok.COLON_SPACE_BRACKET), *numbers(),
                       lit(tok.FROM_OPERATION), *last_op(), lit(tok.NEWLINE)],
    }
    width = max(len(v) for v in kinds.values())
    table = np.zeros((len(kinds), width, 4), dtype=np.int32)  # (_LIT, PAD, 0, never) padding
    for kind, pieces in kinds.items():
        for j, (ptype, literal, field, cond, arg) in enumerate(pieces):
            table[kind, j] = (ptype, literal, field, _condition_index(cond, arg, m, d))
    return table, lay


def _condition_index(cond: int, arg: int, m: int, d: int) -> int:
    """Column of ``_conditions`` that holds condition ``cond`` with argument ``arg``."""
    return {
        _NEVER: 0,
        _ALWAYS: 1,
        _COUNT_GT: 2 + arg,
        _DEPTH_GT: 2 + m + arg,
        _DEPTH_EQ0: 2 + m + d,
        _GOAL: 3 + m + d,
        _NOT_GOAL: 4 + m + d,
    }[cond]


def _conditions(nodes: NodeTable, target) -> jax.Array:
    """Boolean condition table [N, 5 + M + D] of every node (columns as ``_condition_index``)."""
    m, d = nodes.nums.shape[-1], nodes.ids.shape[-1]
    goal = nodes.nums[:, 0] == target
    ones = jnp.ones_like(goal)
    return jnp.concatenate(
        [(~ones)[:, None], ones[:, None], nodes.count[:, None] > jnp.arange(m), nodes.depth[:, None] > jnp.arange(d),
         (nodes.depth == 0)[:, None], goal[:, None], (~goal)[:, None]], axis=1)


def _node_fields(nodes: NodeTable, target, lay: _Layout) -> jax.Array:
    """Field vectors [N, width] of every node, laid out as ``_Layout`` says."""
    n_nodes = nodes.nums.shape[0]
    sym = jnp.asarray(_OP_TOKENS)[nodes.op]
    ops = jnp.stack([nodes.x, sym, nodes.y, nodes.value], axis=-1).reshape(n_nodes, -1)
    last = jnp.maximum(nodes.depth - 1, 0)[:, None]
    last_op = jnp.concatenate([jnp.take_along_axis(a, last, axis=1) for a in (nodes.x, sym, nodes.y, nodes.value)],
                              axis=1)
    fields = jnp.concatenate(
        [jnp.broadcast_to(target, (n_nodes, 1)), nodes.nums, ops, nodes.ids, last_op,
         jnp.zeros((n_nodes, 1), jnp.int32), (nodes.depth + 1)[:, None]], axis=1)
    assert fields.shape[1] == lay.width
    return fields


def _num_digits(v: jax.Array) -> jax.Array:
    return 1 + jnp.sum(v[..., None] >= jnp.asarray(_POW10[1:]), axis=-1)


def kind_lengths(nodes: NodeTable, target) -> jax.Array:
    """Token length [N, n_kinds] of each line kind printed for each node, in closed form.

    It equals the sum of the template's piece lengths (tests/test_countdown_render.py pins this),
    at a fraction of the cost, since every node of a dense search tree needs it.
    """
    nd = _num_digits
    slots_m = jnp.arange(nodes.nums.shape[-1])
    slots_d = jnp.arange(nodes.ids.shape[-1])
    on_path = slots_d[None, :] < nodes.depth[:, None]
    nums_len = jnp.sum(jnp.where(slots_m[None, :] < nodes.count[:, None], nd(nodes.nums) + 1, 0), axis=1) - 1
    op_digits = nd(nodes.x) + nd(nodes.y) + nd(nodes.value)
    ops_len = jnp.sum(jnp.where(on_path, op_digits + 3, 0), axis=1)
    last = jnp.maximum(nodes.depth - 1, 0)[:, None]
    last_len = jnp.take_along_axis(op_digits, last, axis=1)[:, 0] + 2
    id_len = 1 + jnp.sum(jnp.where(on_path, nd(nodes.ids) + 1, 0), axis=1)
    t_len = nd(target)
    zero = jnp.zeros_like(nums_len)
    by_kind = {
        NONE: zero,
        CURRENT_STATE: 4 + t_len + nums_len + ops_len,
        EXPLORE: 3 + last_len + nums_len,
        GENERATED: 5 + id_len + t_len + nums_len + last_len,
        LEAF: 2 + nd(nodes.nums[:, 0]) + t_len,
        MOVE: 2 + id_len,
        NO_SOLUTION: zero + 1,
        OT_GENERATED: 4 + nd(nodes.depth + 1) + nums_len + last_len,
    }
    return jnp.stack([by_kind[k] for k in range(len(by_kind))], axis=1)


def _first_above(ends_LxP, line, offset):
    """For each query, the first piece ``j`` of row ``line`` with ``ends_LxP[line, j] > offset`` (binary search)."""
    n_pieces = ends_LxP.shape[1]
    lo = jnp.zeros_like(offset)  # invariant: the answer is in [lo, lo + span]
    span = 1 << max(0, (n_pieces - 1).bit_length())
    while span > 1:
        span //= 2
        probe = jnp.minimum(lo + span - 1, n_pieces - 1)
        lo = jnp.where(ends_LxP[line, probe] <= offset, probe + 1, lo)
    return jnp.minimum(lo, n_pieces - 1)


def _first_lines(kind_GxW, node_GxW, capacity: int):
    """The first ``capacity`` non-``NONE`` slots of a grouped slot list, in order (two-level search)."""
    groups, width = kind_GxW.shape
    present = kind_GxW != NONE
    group_end = jnp.cumsum(jnp.sum(present, axis=1))
    rank = jnp.arange(capacity)
    group = jnp.minimum(jnp.searchsorted(group_end, rank, side="right"), groups - 1)
    within = rank - (group_end[group] - jnp.sum(present, axis=1)[group])  # rank among the group's lines
    row_rank = jnp.cumsum(present, axis=1) - 1  # [G, W]
    col = jnp.argmax(present[group] & (row_rank[group] == within[:, None]), axis=1)
    valid = rank < group_end[-1]
    return jnp.where(valid, kind_GxW[group, col], NONE), node_GxW[group, col]


def trace_length(kind_GxW: jax.Array, node_GxW: jax.Array, nodes: NodeTable, target: jax.Array) -> jax.Array:
    """Token count of a whole trace given as line slots (no rendering)."""
    return jnp.sum(kind_lengths(nodes, target)[node_GxW, kind_GxW])


def render_lines(kind_GxW: jax.Array, node_GxW: jax.Array, nodes: NodeTable, target: jax.Array, max_len: int):
    """Tokens of one trace given as groups of line slots (kind, node) in order; ``NONE`` slots are skipped.

    Returns ``(tokens [max_len] int32 padded with PAD, length)``: the first ``length`` tokens of
    the trace. Only the first ``max_len // LINES_PER_TOKEN + 2`` lines are expanded; a trace with
    more lines than that within ``max_len`` tokens (lines average far more tokens) ends its buffer
    early, at a line boundary; compare ``length`` with ``trace_length`` to tell a prefix.
    """
    m, d = nodes.nums.shape[-1], nodes.ids.shape[-1]
    table_np, layout = _templates(m, d)
    table = jnp.asarray(table_np)
    n_pieces = table.shape[1]

    capacity = min(kind_GxW.size, max_len // LINES_PER_TOKEN + 2)
    kind_L, node_L = _first_lines(kind_GxW, node_GxW, capacity)

    line_nodes = jax.tree.map(lambda a: a[node_L], nodes)  # fields of the expanded lines' nodes only
    fields = _node_fields(line_nodes, target, layout)
    conds = _conditions(line_nodes, target)
    pieces = table[kind_L]  # [L, P, 4]
    ptype, plit, pfield, pcond = (pieces[..., i] for i in range(4))
    pval = jnp.take_along_axis(fields, pfield, axis=1)
    present = jnp.take_along_axis(conds, pcond, axis=1)
    is_num = ptype == _FIELD_NUMBER
    plen = jnp.where(present, jnp.where(is_num, _num_digits(pval), 1), 0)  # [L, P]
    # One word per piece: a literal's token id, or -(value + 1) for a number.
    word = jnp.where(is_num, -pval - 1, jnp.where(ptype == _LIT, plit, pval))
    upper = jnp.triu(jnp.ones((n_pieces, n_pieces), jnp.float32))
    piece_end = jnp.dot(plen.astype(jnp.float32), upper).astype(jnp.int32)  # within-line running sums
    line_end = jnp.cumsum(piece_end[:, -1])
    line_start = line_end - piece_end[:, -1]
    written = jnp.minimum(line_end[-1], max_len)

    # Run-length decode: the line of position p is the number of lines that end at or before p.
    pos = jnp.arange(max_len, dtype=jnp.int32)
    marks = jnp.zeros((max_len + 1,), jnp.int32).at[jnp.minimum(line_end, max_len)].add(1)
    line = jnp.minimum(jnp.cumsum(marks)[:max_len], capacity - 1)
    offset = pos - line_start[line]
    piece = _first_above(piece_end, line, offset)
    w = word[line, piece]
    exponent = jnp.clip(piece_end[line, piece] - 1 - offset, 0, 9)  # digits left of this one's right end
    digit = ((-w - 1) // jnp.asarray(_POW10)[exponent]) % 10
    out = jnp.where(w < 0, tok.DIGIT0 + digit, w)
    out = jnp.where(pos < written, out, tok.PAD).astype(jnp.int32)
    return out, written


def render_batch(kind_BxGxW, node_BxGxW, nodes: NodeTable, target_B, max_len: int, min_width: int = 512,
                 chunks: int = 8):
    """Renders a batch of traces into ``[B, max_len]``; returns ``(tokens, length, total)``.

    Rows are sorted by the tokens they need and rendered in ``chunks`` equal groups; each group
    uses the narrowest buffer width (max_len, max_len/2, ... down to ``min_width``) that holds
    its longest row, so short traces do not pay for the full buffer. Results do not depend on this.
    """
    batch = target_B.shape[0]
    total = jax.vmap(trace_length)(kind_BxGxW, node_BxGxW, nodes, target_B)
    need = jnp.minimum(total, max_len)
    widths = sorted({max_len} | {max_len >> k for k in range(1, max_len.bit_length()) if max_len >> k >= min_width})
    chunks = max(1, min(chunks, batch))
    size = -(-batch // chunks)
    order = jnp.argsort(need)
    padded = jnp.concatenate([order, jnp.full((chunks * size - batch,), order[-1])])

    def render_chunk(rows):
        args = jax.tree.map(lambda a: a[rows], (kind_BxGxW, node_BxGxW, nodes, target_B))

        def at_width(width):
            def run(args):
                tokens, written = jax.vmap(lambda k, n, nd, t: render_lines(k, n, nd, t, width))(*args)
                return jnp.pad(tokens, ((0, 0), (0, max_len - width)), constant_values=tok.PAD), written
            return run

        branch = jnp.searchsorted(jnp.asarray(widths), jnp.max(need[rows]))
        return jax.lax.switch(branch, [at_width(w) for w in widths], args)

    tokens, written = jax.lax.map(render_chunk, padded.reshape(chunks, size))
    inverse = jnp.argsort(order)
    tokens = tokens.reshape(chunks * size, max_len)[:batch][inverse]
    written = written.reshape(-1)[:batch][inverse]
    return tokens, written, total
