"""Plain-Python reference writer of Sudoku backtracking traces (spec: sudoku.md, "The solver that
writes a trace"), with the technique sets ``singles`` and ``full``. Standard library plus the Sudoku
tokenizer. The original's branch-cell order ("a sort whose order is hard to state") is not
reproduced; where a golden record happens to branch row-major or fewest-first its trace matches
byte for byte (``singles``: 2 of its 30 golden records with row-major, 4 with fewest; ``full``: 10 of
its 30 with row-major, 7 with fewest, 13 in all).

The state of a search node is the board and the candidate masks of its cells (bit ``v`` for value
``v``; 0 for a filled cell). The pencil marks of the puzzle are the values not yet in the cell's row,
column or box. A fill ``(r, c) = v`` writes the board, clears the cell's mask and strikes ``v`` from
the masks of its 20 peers; it is the only printed step. A child node after a guess starts from its
parent's board and masks (eliminations included) with the guessed value filled; a revert goes back
to the masks at the guess.

Rules (inferred from the golden records in ``tests/data/sudoku_examples.jsonl``):

* Naked-single sweep: cells 0..80 are visited in row-major order and a cell whose mask (as it is at
  that moment, earlier fills of the same sweep included) holds one value is filled at once. So
  simultaneous naked singles are filled row-major, and a cell made a single by a fill earlier in the
  sweep is filled in the same sweep (``(0, 4) = 2`` then ``(1, 3) = 9`` in the first golden record).
* ``singles``: naked-single sweeps repeat until one fills nothing.
* ``full``: a *pass* applies in this order: one naked-single sweep; hidden singles; naked pairs;
  naked triples; locked candidates; XY-wing; unique rectangle. The pass repeats only when its
  unique-rectangle step struck out a candidate (so deduction may stop with singles left; the golden
  records then guess cells with one candidate, e.g. ``guess: (8, 5) [4] = 4``).

  - Hidden singles: the 27 units in the order rows 0..8, columns 0..8, boxes 0..8; for each unit,
    from its masks as they are when the unit is reached, every value with exactly one place in the
    unit is filled there, cells in the unit's order (row-major within it). A cell that is the only
    place of two values is filled twice (a contradiction, written as the original does), in the
    order CPython iterates a small set of ints: value mod 8, then value (``(3, 7) = 9`` then
    ``(3, 7) = 7``).
  - Each elimination step is computed from the masks at its start and all its eliminations are
    applied together:
    naked pair: two cells of a unit whose masks are the same two values, and no third such cell:
    those values are struck from the unit's other cells;
    naked triple: a cell with three candidates S such that exactly three cells of the unit (it
    included) have nonempty masks within S: S is struck from the unit's other cells;
    locked candidates: a value whose places in a box (at least two) lie in one row or column is
    struck from the rest of that line (pointing), and a value whose places in a row or column (at
    least two) lie in one box is struck from the rest of the box (claiming);
    XY-wing: a pivot with candidates {x, y} and two cells {x, z} and {y, z} that see the pivot but
    not each other: z is struck from every cell that sees both;
    unique rectangle (type 1): four empty cells on two rows, two columns and two boxes, three with the
    same two candidates {a, b} and the fourth with a, b and more: a and b are struck from the fourth.

  With these rules 27 of the 30 golden ``full`` records are reproduced up to their first guess, and
  the first guess's candidate list matches in 24 of the 26 of them that guess (records 10 and 24 keep
  one candidate more). The other 3: records 22 and 29 are byte for byte what ``singles`` writes
  (fewest-first and row-major branching), and record 8 differs from its 13th line on.
* Contradiction check where deduction stops: the first empty cell in row-major order without
  candidates is the ``nocand`` cell (deduction goes on filling elsewhere after a cell dies, as the
  golden records do). A value is only written where it is a candidate, so no unit ever holds a
  repeated value and ``invalid`` never occurs. A value left without a place in a unit is not checked
  for: the unit can then never be completed, so a cell of it ends without candidates deeper down.
  ``full`` assumes a unique solution (unique rectangle).
* Branching: the branch cell is the first empty cell in row-major order (``branch="row-major"``)
  or the one with fewest candidates, ties row-major (``branch="fewest"``); its candidates are tried
  in ascending order. Per candidate: ``guess: (r, c) [c1, ...] = v``, ``(r, c) = v``, then recursion
  (deduce, then branch).
* Unwinding: when deduction below a guess fails, ``nocand: (cell)`` names the cell found without
  candidates. The guess level then prints ``nocand: (guessed cell)`` and
  ``revert: (guessed cell) [c1, ...] = none`` and tries the next candidate. When all candidates of
  a level fail, the failure reaches the guess above, which prints ``nocand: (its cell)`` and its
  ``revert`` line in turn — so one ``nocand`` line per guess level the contradiction passes.
* The shortcut (:func:`shortcut`) keeps the fill lines only and drops everything written between a
  ``guess`` and its matching ``revert``; it equals the ``shortcut`` field of all 60 golden records
  when computed from their ``trace``.
"""

from __future__ import annotations

import statistics
import sys
from itertools import combinations
from typing import Iterable

from sos_jax.tokenizers.sudoku import encode, grid_values

__all__ = ["trace", "trace_lines", "shortcut", "stats", "BRANCH_ORDERS", "TECHNIQUES"]

BRANCH_ORDERS = ("row-major", "fewest")
TECHNIQUES = ("singles", "full")
TOKEN_BUDGET = 4096  # the largest budget at which the spec compares models


def _cell(k: int) -> str:
    return f"({k // 9}, {k % 9})"


_RCB = tuple((k // 9, 9 + k % 9, 18 + (k // 27) * 3 + (k % 9) // 3) for k in range(81))
_UNITS = tuple(tuple(k for k in range(81) if u in _RCB[k]) for u in range(27))  # rows, columns, boxes
_PEERS = tuple(frozenset(j for u in _RCB[k] for j in _UNITS[u]) - {k} for k in range(81))
_BITS = tuple(tuple(v for v in range(1, 10) if m >> v & 1) for m in range(1024))
_SET_ORDER = tuple(tuple(sorted(bits, key=lambda v: (v % 8, v))) for bits in _BITS)
_RECTANGLES = tuple(
    cells
    for r1, r2 in combinations(range(9), 2)
    for c1, c2 in combinations(range(9), 2)
    for cells in [(9 * r1 + c1, 9 * r1 + c2, 9 * r2 + c1, 9 * r2 + c2)]
    if len({_RCB[k][2] for k in cells}) == 2  # two rows, two columns, two boxes
)
_ALL = 0x3FE


def _masks(grid: list[int]) -> list[int]:
    """Pencil marks: the candidate mask of every empty cell from its row, column and box (0 if filled)."""
    used = [0] * 27
    for k, v in enumerate(grid):
        if v:
            for u in _RCB[k]:
                used[u] |= 1 << v
    return [0 if v else ~(used[r] | used[c] | used[b]) & _ALL for v, (r, c, b) in zip(grid, _RCB)]


def _fill(grid: list[int], masks: list[int], k: int, v: int, out: list[str]) -> None:
    grid[k] = v
    masks[k] = 0
    keep = ~(1 << v)
    for j in _PEERS[k]:
        masks[j] &= keep
    out.append(f"{_cell(k)} = {v}")


def _naked_sweep(grid: list[int], masks: list[int], out: list[str]) -> bool:
    """One row-major sweep filling naked singles on the live masks; whether it filled any."""
    filled = False
    for k in range(81):
        m = masks[k]
        if m and not m & (m - 1):
            _fill(grid, masks, k, m.bit_length() - 1, out)
            filled = True
    return filled


def _hidden_singles(grid: list[int], masks: list[int], out: list[str]) -> None:
    """Per unit in order, fill every value with one place in the unit (masks as the unit is reached)."""
    for unit in _UNITS:
        snap = [(k, masks[k]) for k in unit]
        once = twice = 0
        for _, m in snap:
            twice |= once & m
            once |= m
        only = once & ~twice
        for k, m in snap:
            for v in _SET_ORDER[m & only]:
                _fill(grid, masks, k, v, out)


# The elimination steps yield (cell, bits to strike), found on the masks as the step starts.


def _naked_pairs(masks: list[int]) -> Iterable[tuple[int, int]]:
    for unit in _UNITS:
        pairs = [masks[k] for k in unit if masks[k].bit_count() == 2]
        for p in {p for p in pairs if pairs.count(p) == 2}:
            yield from ((k, p) for k in unit if masks[k] != p)


def _naked_triples(masks: list[int]) -> Iterable[tuple[int, int]]:
    for unit in _UNITS:
        for s in {masks[k] for k in unit if masks[k].bit_count() == 3}:
            if sum(1 for k in unit if masks[k] and not masks[k] & ~s) == 3:
                yield from ((k, s) for k in unit if masks[k] & ~s)


def _locked_candidates(masks: list[int]) -> Iterable[tuple[int, int]]:
    for u, unit in enumerate(_UNITS):
        for v in range(1, 10):
            places = [k for k in unit if masks[k] >> v & 1]
            if len(places) >= 2:  # the other unit holding them all: a line for a box, the box for a line
                for w in set.intersection(*(set(_RCB[k]) for k in places)) - {u}:
                    yield from ((k, 1 << v) for k in _UNITS[w] if k not in unit)


def _xy_wings(masks: list[int]) -> Iterable[tuple[int, int]]:
    pairs = [k for k in range(81) if masks[k].bit_count() == 2]
    for p in pairs:
        wings = [a for a in pairs if a in _PEERS[p] and (masks[a] & masks[p]).bit_count() == 1]
        for a in wings:
            z = masks[a] & ~masks[p]
            want_b = masks[p] & ~masks[a] | z
            for b in wings:
                if masks[b] == want_b and b not in _PEERS[a]:
                    yield from ((k, z) for k in _PEERS[a] & _PEERS[b])


def _unique_rectangles(masks: list[int]) -> Iterable[tuple[int, int]]:
    for cells in _RECTANGLES:
        ms = [masks[k] for k in cells]
        if not all(ms):
            continue
        for i, k in enumerate(cells):
            rest = ms[:i] + ms[i + 1 :]
            p = rest[0]
            if p.bit_count() == 2 and rest.count(p) == 3 and ms[i] & p == p != ms[i]:
                yield k, p


def _strike(masks: list[int], eliminations: Iterable[tuple[int, int]]) -> bool:
    """Apply eliminations computed beforehand (``(cell, bits)``, listed before any is applied)."""
    changed = False
    for k, bits in list(eliminations):
        if masks[k] & bits:
            masks[k] &= ~bits
            changed = True
    return changed


def _deduce(grid: list[int], masks: list[int], techniques: str, out: list[str]) -> int | None:
    """Deduction in place (module docstring); then the first empty cell (row-major) without
    candidates, or None."""
    if techniques == "singles":
        while _naked_sweep(grid, masks, out):
            pass
    else:
        while True:
            _naked_sweep(grid, masks, out)
            _hidden_singles(grid, masks, out)
            for find in (_naked_pairs, _naked_triples, _locked_candidates, _xy_wings):
                _strike(masks, find(masks))
            if not _strike(masks, _unique_rectangles(masks)):
                break
    return next((k for k in range(81) if grid[k] == 0 and masks[k] == 0), None)


def _solve(grid: list[int], masks: list[int], branch: str, techniques: str, out: list[str]) -> int | None:
    """Deduce then branch. Returns None when solved; on failure, the cell deduction found without
    candidates (its ``nocand`` line is printed by the guess level above), or -1 when every
    candidate of this level's branch cell failed (its lines are already printed)."""
    bad = _deduce(grid, masks, techniques, out)
    if bad is not None:
        return bad
    empty = [k for k in range(81) if grid[k] == 0]
    if not empty:
        return None
    k = empty[0] if branch == "row-major" else min(empty, key=lambda e: (masks[e].bit_count(), e))
    cs = _BITS[masks[k]]
    cand_text = "[" + ", ".join(map(str, cs)) + "]"
    for v in cs:
        out.append(f"guess: {_cell(k)} {cand_text} = {v}")
        child, child_masks = list(grid), list(masks)
        _fill(child, child_masks, k, v, out)
        bad = _solve(child, child_masks, branch, techniques, out)
        if bad is None:
            grid[:] = child
            return None
        if bad >= 0:  # deduction failed right below this guess
            out.append(f"nocand: {_cell(bad)}")
        out.append(f"nocand: {_cell(k)}")
        out.append(f"revert: {_cell(k)} {cand_text} = none")
    return -1


def _check(branch: str, techniques: str) -> None:
    if branch not in BRANCH_ORDERS:
        raise ValueError(f"branch must be one of {BRANCH_ORDERS}, got {branch!r}")
    if techniques not in TECHNIQUES:
        raise ValueError(f"techniques must be one of {TECHNIQUES}, got {techniques!r}")


def trace_lines(puzzle81, branch: str = "fewest", techniques: str = "singles") -> list[str]:
    """The trace's lines without trailing spaces."""
    _check(branch, techniques)
    grid = grid_values(puzzle81)
    out: list[str] = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 1000))
    try:
        bad = _solve(grid, _masks(grid), branch, techniques, out)
    finally:
        sys.setrecursionlimit(limit)
    if bad is not None:
        raise ValueError("the puzzle has no solution")
    return out


def _join(lines: list[str]) -> str:
    # canonical spacing of the records: one trailing space on every line but the last
    return "".join(line + " \n" for line in lines[:-1]) + (lines[-1] if lines else "")


def trace(puzzle81, branch: str = "fewest", techniques: str = "singles") -> str:
    """Trace text of ``puzzle81`` (81-char string or 81 ints, 0/'.' empty) as in the records' ``trace``."""
    return _join(trace_lines(puzzle81, branch, techniques))


def shortcut(trace_text: str) -> str:
    """The trace's fill lines with every failed branch removed, in trace order (spec point 4)."""
    out: list[str] = []
    marks: list[int] = []
    for line in trace_text.split("\n"):
        line = line.strip()
        if line.startswith("guess"):
            marks.append(len(out))
        elif line.startswith("revert"):
            del out[marks.pop():]
        elif line and not line.startswith(("nocand", "invalid")):
            out.append(line)
    return _join(out)


def stats(puzzles: Iterable, branch: str = "fewest", techniques: str = "singles") -> dict:
    """Median tokens per trace (``len(encode(trace))``), share of traces within 4096 tokens, and
    share of puzzles needing a revert."""
    tokens, reverts = [], []
    for p in puzzles:
        lines = trace_lines(p, branch, techniques)
        tokens.append(len(encode(_join(lines))))
        reverts.append(any(line.startswith("revert") for line in lines))
    n = len(tokens)
    return {
        "branch": branch,
        "techniques": techniques,
        "n": n,
        "median_tokens": statistics.median(tokens) if n else 0,
        "within_budget_share": sum(t <= TOKEN_BUDGET for t in tokens) / n if n else 0.0,
        "revert_share": sum(reverts) / n if n else 0.0,
    }
