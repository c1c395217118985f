"""Plain-Python reference writer of Sudoku backtracking traces (spec: sudoku.md, "The solver that
writes a trace"), technique set ``singles`` only. Standard library plus the Sudoku tokenizer.
The original's branch-cell order ("a sort whose order is hard to state") is not reproduced;
where a golden record happens to branch row-major or fewest-first its trace matches byte for
byte (2 of the 30 golden ``singles`` records with row-major, 4 with fewest).

Rules (inferred from the golden ``singles`` records in ``tests/data/sudoku_examples.jsonl``):

* Deduction runs in row-major *sweeps on the live board*: cells 0..80 are visited in order and an
  empty cell whose candidates (from the board as it is at that moment, earlier fills of the same
  sweep included) are exactly one value is filled at once, printing ``(r, c) = v``. Sweeps repeat
  until one fills nothing. So simultaneous naked singles are filled row-major, and a cell made a
  single by a fill earlier in the sweep is filled in the same sweep (``(0, 4) = 2`` then
  ``(1, 3) = 9`` in the first golden record).
* Contradiction check only at that fixed point: the first empty cell in row-major order without
  candidates is the ``nocand`` cell (deduction does not stop at a dead cell; it goes on filling
  singles elsewhere, as the golden records do). A value is only written where it is a candidate
  on the live board, so no unit ever holds a repeated value: ``invalid`` never occurs with singles.
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
  ``guess`` and its matching ``revert``; it equals the ``shortcut`` field of all 30 golden
  ``singles`` records when computed from their ``trace``.
"""

from __future__ import annotations

import statistics
import sys
from typing import Iterable

from sos_jax.tokenizers.sudoku import encode, grid_values

__all__ = ["trace", "trace_lines", "shortcut", "stats", "BRANCH_ORDERS"]

BRANCH_ORDERS = ("row-major", "fewest")


def _cell(k: int) -> str:
    return f"({k // 9}, {k % 9})"


_RCB = tuple((k // 9, 9 + k % 9, 18 + (k // 27) * 3 + (k % 9) // 3) for k in range(81))
_BITS = tuple(tuple(v for v in range(1, 10) if m >> v & 1) for m in range(1024))


def _used(grid: list[int]) -> list[int]:
    """Bit masks (bit v for value v) of the 27 units: rows 0..8, columns 9..17, boxes 18..26."""
    used = [0] * 27
    for k, v in enumerate(grid):
        if v:
            for u in _RCB[k]:
                used[u] |= 1 << v
    return used


def _cands(grid: list[int], k: int, used: list[int] | None = None) -> list[int]:
    """Candidates of empty cell ``k``, ascending."""
    if used is None:
        used = _used(grid)
    r, c, b = _RCB[k]
    return list(_BITS[~(used[r] | used[c] | used[b]) & 0x3FE])


def _deduce(grid: list[int], out: list[str]) -> int | None:
    """Naked singles by row-major sweeps on the live board, in place, to a fixed point; then the
    first empty cell (row-major) without candidates, or None."""
    used = _used(grid)
    changed = True
    while changed:
        changed = False
        for k in range(81):
            if grid[k] == 0:
                r, c, b = _RCB[k]
                cs = _BITS[~(used[r] | used[c] | used[b]) & 0x3FE]
                if len(cs) == 1:
                    v = cs[0]
                    grid[k] = v
                    used[r] |= 1 << v
                    used[c] |= 1 << v
                    used[b] |= 1 << v
                    out.append(f"{_cell(k)} = {v}")
                    changed = True
    for k in range(81):
        if grid[k] == 0 and not _cands(grid, k, used):
            return k
    return None


def _solve(grid: list[int], branch: str, out: list[str]) -> int | None:
    """Deduce then branch. Returns None when solved; on failure, the cell deduction found without
    candidates (its ``nocand`` line is printed by the guess level above), or -1 when every
    candidate of this level's branch cell failed (its lines are already printed)."""
    bad = _deduce(grid, out)
    if bad is not None:
        return bad
    empty = [k for k in range(81) if grid[k] == 0]
    if not empty:
        return None
    used = _used(grid)
    if branch == "row-major":
        k = empty[0]
        cs = _cands(grid, k, used)
    elif branch == "fewest":
        k, cs = min(((e, _cands(grid, e, used)) for e in empty), key=lambda t: (len(t[1]), t[0]))
    else:
        raise ValueError(f"branch must be one of {BRANCH_ORDERS}, got {branch!r}")
    cand_text = "[" + ", ".join(map(str, cs)) + "]"
    for v in cs:
        out.append(f"guess: {_cell(k)} {cand_text} = {v}")
        out.append(f"{_cell(k)} = {v}")
        child = list(grid)
        child[k] = v
        bad = _solve(child, branch, out)
        if bad is None:
            grid[:] = child
            return None
        if bad >= 0:  # deduction failed right below this guess
            out.append(f"nocand: {_cell(bad)}")
        out.append(f"nocand: {_cell(k)}")
        out.append(f"revert: {_cell(k)} {cand_text} = none")
    return -1


def trace_lines(puzzle81, branch: str = "fewest") -> list[str]:
    """The trace's lines without trailing spaces."""
    if branch not in BRANCH_ORDERS:
        raise ValueError(f"branch must be one of {BRANCH_ORDERS}, got {branch!r}")
    grid = grid_values(puzzle81)
    out: list[str] = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 1000))
    try:
        bad = _solve(grid, branch, out)
    finally:
        sys.setrecursionlimit(limit)
    if bad is not None:
        raise ValueError("the puzzle has no solution")
    return out


def _join(lines: list[str]) -> str:
    # canonical spacing of the records: one trailing space on every line but the last
    return "".join(line + " \n" for line in lines[:-1]) + (lines[-1] if lines else "")


def trace(puzzle81, branch: str = "fewest") -> str:
    """Trace text of ``puzzle81`` (81-char string or 81 ints, 0/'.' empty) as in the records' ``trace``."""
    return _join(trace_lines(puzzle81, branch))


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


def stats(puzzles: Iterable, branch: str = "fewest") -> dict:
    """Median tokens per trace (``len(encode(trace))``) and share of puzzles needing a revert."""
    tokens, reverts = [], []
    for p in puzzles:
        lines = trace_lines(p, branch)
        tokens.append(len(encode(_join(lines))))
        reverts.append(any(line.startswith("revert") for line in lines))
    n = len(tokens)
    return {
        "branch": branch,
        "n": n,
        "median_tokens": statistics.median(tokens) if n else 0,
        "revert_share": sum(reverts) / n if n else 0.0,
    }
