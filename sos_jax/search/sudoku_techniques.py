"""Sudoku deduction on device, one event at a time, for the trace writer (``sos_jax.search.sudoku``).

``deduce(board_81, mask_81, cursor, techniques, planned, eliminated_81, struck)`` finds the next event of
deduction on a board and its candidate masks (bit ``v - 1`` for value ``v``; 0 for a filled cell):
a fill, a silent change of the masks, or the end of deduction. It mirrors the rules of the
plain-Python reference ``sos_jax.search.sudoku_python`` (read its docstring); ``Cursor`` holds
where deduction stands. With ``full`` the caller first computes ``planned = pass_fill(...)``, the
next fill of the pass if any, and runs the elimination step (``eliminate``, by far the costliest)
only where ``planned.wants_elimination``; both are passed in, so neither is computed twice.

* ``singles``: naked singles by row-major sweeps on the live board: the next fill is the first
  naked single at or after the sweep's cell, or, when there is none, the first of a new sweep from
  cell 0. Deduction ends when no naked single is left.
* ``full``: passes of one naked-single sweep, then hidden singles unit by unit (each unit's fills
  from its masks as the unit is reached: the cursor keeps the unit and its pending fills), then the
  eliminations (naked pair, naked triple, locked candidates, XY-wing, unique rectangle type 1), all
  in the one event that follows the last fill of the pass, each step from the masks the step
  before left. A new pass starts only when the unique-rectangle step struck a candidate; otherwise
  deduction ends with the masks the eliminations left.

Every step works on the whole board at once from fixed tables (units, peers, rectangles, the
common peers of two cells), so it jits, vmaps and runs on any backend.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sos_jax.envs import sudoku as env

__all__ = ["TECHNIQUES", "Cursor", "Deduction", "PassFill", "deduce", "eliminate", "first", "pass_fill", "start"]

TECHNIQUES = ("singles", "full")
SWEEP, HIDDEN = 0, 1  # phases of a ``full`` pass
# The order in which the original fills a cell that is the only place of several values: the
# iteration order of a small Python set of ints (value mod 8, then value), as bit indices.
_FILL_ORDER = sorted(range(1, 10), key=lambda v: (v % 8, v))
FILL_PRIORITY_9 = np.array([_FILL_ORDER.index(v) for v in range(1, 10)], np.int32)

UNIT_CELLS = env.UNIT_CELLS  # [27, 9]
UNIT_MEMBERS_27x81 = np.zeros((27, 81), bool)
UNIT_MEMBERS_27x81[np.arange(27)[:, None], UNIT_CELLS] = True
CELL_UNITS_81x3 = np.array([np.flatnonzero(UNIT_MEMBERS_27x81[:, k]) for k in range(81)], np.int32)  # row, col, box
PEERS_81x81 = np.zeros((81, 81), bool)
PEERS_81x81[np.arange(81)[:, None], env.CELL_PEERS] = True


def _by_cell(groups_GxK) -> np.ndarray:
    """For each cell, the flat indices ``g * K + i`` of the entries ``groups[g, i]`` naming it,
    padded with ``G * K`` (an entry past the end) to the same count: a gather table that turns
    per-entry results into per-cell ones without a scatter."""
    flat = groups_GxK.reshape(-1)
    rows = [np.flatnonzero(flat == k) for k in range(81)]
    width = max(len(r) for r in rows)
    return np.array([np.pad(r, (0, width - len(r)), constant_values=flat.size) for r in rows], np.int32)


def _xy_tables():
    """Cell pairs (a < b) that do not see each other, and the (up to 6) cells that see both, 81 as padding."""
    pairs, common = [], []
    for a, b in itertools.combinations(range(81), 2):
        if not PEERS_81x81[a, b]:
            both = np.flatnonzero(PEERS_81x81[a] & PEERS_81x81[b])
            pairs.append((a, b))
            common.append(np.pad(both, (0, 6 - both.size), constant_values=81))
    return np.array(pairs, np.int32), np.array(common, np.int32)


def _segment_tables():
    """The 54 box-line segments (three cells a box shares with a row or column), their box and line
    units, and per cell the 4 segments on its lines outside its box (pointing) and the 4 segments
    of its box off its lines (claiming)."""
    segments, boxes, lines = [], [], []
    for box in range(18, 27):
        for line in range(18):
            cells = np.flatnonzero(UNIT_MEMBERS_27x81[box] & UNIT_MEMBERS_27x81[line])
            if cells.size:
                segments.append(cells)
                boxes.append(box)
                lines.append(line)
    segments, boxes, lines = np.array(segments, np.int32), np.array(boxes, np.int32), np.array(lines, np.int32)
    pointing = [[s for s in range(54) if lines[s] in CELL_UNITS_81x3[k, :2] and boxes[s] != CELL_UNITS_81x3[k, 2]]
                for k in range(81)]
    claiming = [[s for s in range(54) if boxes[s] == CELL_UNITS_81x3[k, 2] and k not in segments[s]] for k in range(81)]
    return segments, boxes, lines, np.array(pointing, np.int32), np.array(claiming, np.int32)


XY_PAIRS_Px2, XY_COMMON_Px6 = _xy_tables()
XY_BY_CELL = _by_cell(XY_COMMON_Px6)
SEGMENTS_54x3, SEGMENT_BOX_54, SEGMENT_LINE_54, POINTING_81x4, CLAIMING_81x4 = _segment_tables()
# Unique rectangles: four cells on two rows, two columns and two boxes.
RECTANGLES_Rx4 = np.array([
    cells for r1, r2 in itertools.combinations(range(9), 2) for c1, c2 in itertools.combinations(range(9), 2)
    for cells in [(9 * r1 + c1, 9 * r1 + c2, 9 * r2 + c1, 9 * r2 + c2)]
    if len({CELL_UNITS_81x3[k, 2] for k in cells}) == 2], np.int32)
RECTANGLES_BY_CELL = _by_cell(RECTANGLES_Rx4)


class Cursor(NamedTuple):
    """Where deduction stands: the sweep's next cell, and for ``full`` the phase of the pass, the
    unit of the hidden singles and that unit's pending fills (bits per slot)."""

    sweep: jax.Array
    phase: jax.Array
    unit: jax.Array
    pending_9: jax.Array


class Deduction(NamedTuple):
    """The next deduction event: a fill of ``cell`` with the value of the one-bit mask ``bit``
    (``fill``), or else the masks ``mask_81`` after silent eliminations, with ``stopped`` when
    deduction has ended (then the board is checked, and branched on); ``cursor`` is where
    deduction goes on after this event."""

    fill: jax.Array
    cell: jax.Array
    bit: jax.Array
    mask_81: jax.Array
    stopped: jax.Array
    cursor: Cursor


def start() -> Cursor:
    """The cursor of a new deduction (the root, or right after a guess)."""
    return Cursor(sweep=jnp.int32(0), phase=jnp.int32(SWEEP), unit=jnp.int32(0), pending_9=jnp.zeros((9,), jnp.int32))


def first(flags, start=0):
    """First index >= ``start`` where the 1-D ``flags`` hold (int32), and whether there is one."""
    hit = flags & (jnp.arange(flags.shape[0]) >= start)
    return jnp.argmax(hit).astype(jnp.int32), jnp.any(hit)


def _bits_9(mask):
    """[..., 9] booleans of the values in a mask (index v - 1)."""
    return (jnp.right_shift(mask[..., None], jnp.arange(9)) & 1) == 1


def _pack(bits_9):
    return jnp.sum(jnp.where(bits_9, jnp.left_shift(1, jnp.arange(9)), 0), axis=-1)


def _or(x, axis):
    return jnp.bitwise_or.reduce(x, axis=axis)


def _unit_strikes_to_cells(strike_27x9):
    """Per-cell masks from per-(unit, slot) masks: OR over the cell's three units."""
    return _or(strike_27x9.reshape(-1)[env.UNIT_SLOTS], axis=-1)


def _naked_pairs(mask_81):
    m = mask_81[jnp.asarray(UNIT_CELLS)]  # [27, 9]
    two = jax.lax.population_count(m) == 2
    same = (m[:, :, None] == m[:, None, :]) & two[:, :, None]
    pair = two & (jnp.sum(same, axis=-1) == 2)
    strike = _or(jnp.where(pair[:, :, None] & (m[:, None, :] != m[:, :, None]), m[:, :, None], 0), axis=1)
    return mask_81 & ~_unit_strikes_to_cells(strike)


def _naked_triples(mask_81):
    m = mask_81[jnp.asarray(UNIT_CELLS)]
    inside = (m[:, None, :] != 0) & ((m[:, None, :] & ~m[:, :, None]) == 0)  # [unit, i, j]: m_j within m_i
    triple = (jax.lax.population_count(m) == 3) & (jnp.sum(inside, axis=-1) == 3)
    outside = (m[:, None, :] & ~m[:, :, None]) != 0
    strike = _or(jnp.where(triple[:, :, None] & outside, m[:, :, None], 0), axis=1)
    return mask_81 & ~_unit_strikes_to_cells(strike)


def _locked_candidates(mask_81):
    """Pointing and claiming, by box-line segments: a value whose places in a box (at least two) all
    lie in one segment leaves the rest of the segment's line, and one whose places in a line all
    lie in one segment leaves the rest of the segment's box."""
    has_81x9 = _bits_9(mask_81).astype(jnp.int32)
    unit_count_27x9 = jnp.sum(has_81x9[jnp.asarray(UNIT_CELLS)], axis=1)
    segment_count_54x9 = jnp.sum(has_81x9[jnp.asarray(SEGMENTS_54x3)], axis=1)
    locked = segment_count_54x9 >= 2
    pointing_54x9 = locked & (segment_count_54x9 == unit_count_27x9[jnp.asarray(SEGMENT_BOX_54)])
    claiming_54x9 = locked & (segment_count_54x9 == unit_count_27x9[jnp.asarray(SEGMENT_LINE_54)])
    strike_81x9 = (jnp.any(pointing_54x9[jnp.asarray(POINTING_81x4)], axis=1)
                   | jnp.any(claiming_54x9[jnp.asarray(CLAIMING_81x4)], axis=1))
    return mask_81 & ~_pack(strike_81x9)


def _xy_wings(mask_81):
    a, b = mask_81[jnp.asarray(XY_PAIRS_Px2[:, 0])], mask_81[jnp.asarray(XY_PAIRS_Px2[:, 1])]
    z = a & b
    ends = (jax.lax.population_count(a) == 2) & (jax.lax.population_count(b) == 2) & (a != b) & (
        jax.lax.population_count(z) == 1)
    pivot_mask = (a | b) & ~z
    common = jnp.asarray(XY_COMMON_Px6)
    padded = jnp.concatenate([mask_81, jnp.zeros((1,), mask_81.dtype)])
    wing = ends & jnp.any(padded[common] == pivot_mask[:, None], axis=-1)
    # z leaves every cell that sees both ends: per cell, OR over the pairs whose common cells name it.
    strike_P6 = jnp.concatenate([jnp.repeat(jnp.where(wing, z, 0), 6), jnp.zeros((1,), z.dtype)])
    return mask_81 & ~_or(strike_P6[jnp.asarray(XY_BY_CELL)], axis=-1)


def _unique_rectangles(mask_81):
    m = mask_81[jnp.asarray(RECTANGLES_Rx4)]  # [R, 4]
    others = jnp.stack([jnp.delete(m, i, axis=1, assume_unique_indices=True) for i in range(4)], axis=1)  # [R, 4, 3]
    pair = others[..., 0]
    hit = (jnp.all(m != 0, axis=1)[:, None] & (jax.lax.population_count(pair) == 2)
           & jnp.all(others == pair[..., None], axis=-1) & ((m & pair) == pair) & (m != pair))
    strike_R4 = jnp.concatenate([jnp.where(hit, pair, 0).reshape(-1), jnp.zeros((1,), pair.dtype)])
    return mask_81 & ~_or(strike_R4[jnp.asarray(RECTANGLES_BY_CELL)], axis=-1), jnp.any(hit)


def eliminate(mask_81):
    """The elimination steps of a ``full`` pass, in order; also whether unique rectangles struck."""
    for step in (_naked_pairs, _naked_triples, _locked_candidates, _xy_wings):
        mask_81 = step(mask_81)
    return _unique_rectangles(mask_81)


def _hidden_pending(mask_81):
    """[27, 9]: per unit and slot, the values with one place in the unit that lie there."""
    m = mask_81[jnp.asarray(UNIT_CELLS)]
    once = jnp.sum(_bits_9(m), axis=1) == 1  # [unit, value]
    return m & _pack(once)[:, None]


def _singles(board_81, mask_81, cursor: Cursor) -> Deduction:
    single_81 = (board_81 == 0) & (jax.lax.population_count(mask_81) == 1)
    after, any_after = first(single_81, cursor.sweep)
    cell = jnp.where(any_after, after, first(single_81)[0])
    fill = jnp.any(single_81)
    return Deduction(fill=fill, cell=cell, bit=mask_81[cell], mask_81=mask_81, stopped=~fill,
                     cursor=cursor._replace(sweep=cell + 1))


class PassFill(NamedTuple):
    """The next fill of a ``full`` pass, if any: from the sweep, or a hidden single."""

    sweep: jax.Array  # a naked single of the sweep
    hidden: jax.Array  # a hidden single (when no sweep fill)
    cell: jax.Array
    bit: jax.Array
    cursor: Cursor  # where the pass stands after it

    @property
    def wants_elimination(self) -> jax.Array:
        """No fill is left in the pass: the next event is its elimination step."""
        return ~self.sweep & ~self.hidden


def pass_fill(board_81, mask_81, cursor: Cursor) -> PassFill:
    """The next fill of a ``full`` pass from ``cursor``, if any (see ``PassFill``)."""
    single_81 = (board_81 == 0) & (jax.lax.population_count(mask_81) == 1)
    sweep_cell, sweep_fill = first(single_81, cursor.sweep)
    sweep_fill = sweep_fill & (cursor.phase == SWEEP)
    # Hidden singles: the current unit's pending fills, or the next unit that has any.
    in_unit = (cursor.phase == HIDDEN) & jnp.any(cursor.pending_9 != 0)
    pending_27x9 = _hidden_pending(mask_81)
    next_unit, found_unit = first(jnp.any(pending_27x9 != 0, axis=1),
                                  jnp.where(cursor.phase == SWEEP, 0, cursor.unit + 1))
    unit = jnp.where(in_unit, cursor.unit, next_unit)
    pending_9 = jnp.where(in_unit, cursor.pending_9, pending_27x9[next_unit])
    hidden_fill = ~sweep_fill & (in_unit | found_unit)
    slot = first(pending_9 != 0)[0]
    value = jnp.argmin(jnp.where(_bits_9(pending_9[slot]), jnp.asarray(FILL_PRIORITY_9), 99))
    hidden_bit = jnp.left_shift(1, value).astype(jnp.int32)
    return PassFill(
        sweep=sweep_fill, hidden=hidden_fill,
        cell=jnp.where(sweep_fill, sweep_cell, jnp.asarray(UNIT_CELLS)[unit, slot]),
        bit=jnp.where(sweep_fill, mask_81[sweep_cell], hidden_bit),
        cursor=Cursor(sweep=jnp.where(sweep_fill, sweep_cell + 1, 0),
                      phase=jnp.where(sweep_fill, SWEEP, HIDDEN).astype(jnp.int32), unit=unit,
                      pending_9=jnp.where(hidden_fill, pending_9.at[slot].set(pending_9[slot] & ~hidden_bit), 0)))


def deduce(board_81, mask_81, cursor: Cursor, techniques: str, planned, eliminated_81, struck) -> Deduction:
    """The next deduction event on ``board_81`` / ``mask_81`` from ``cursor`` (module docstring).

    With ``full``, ``planned`` must be ``pass_fill(board_81, mask_81, cursor)`` and, where
    ``planned.wants_elimination`` (the event is then the elimination step), ``eliminated_81, struck``
    must be ``eliminate(mask_81)``; elsewhere they are not read. With ``singles`` none of the three
    is read (pass None).
    """
    if techniques not in TECHNIQUES:
        raise ValueError(f"techniques must be one of {TECHNIQUES}, got {techniques!r}")
    if techniques == "singles":
        return _singles(board_81, mask_81, cursor)
    found = planned
    fill = found.sweep | found.hidden
    # No fill left in the pass: eliminations, then a new pass if unique rectangles struck, else the end.
    cursor = jax.tree.map(lambda x, y: jnp.where(fill, x, y), found.cursor, start())
    return Deduction(fill=fill, cell=found.cell, bit=found.bit, mask_81=jnp.where(fill, mask_81, eliminated_81),
                     stopped=~fill & ~struck, cursor=cursor)
