"""Judging a Sudoku answer from its text (spec: "Judging an answer").

The text's fill lines are replayed onto the puzzle in order, the last write to a cell winning; the
puzzle is solved when the resulting grid equals the solution. A fill line is a line (the text split
at ``\\n``) whose words are exactly ``(r, c) = v``: a cell with r, c in 0..8, ``=`` and one digit,
with any white space (other than a newline) around them, none needed. Every other line is ignored:
``guess: (r, c) [..] = v``, ``revert: .. = none``, ``nocand: ..``, the board's header, special words,
and malformed text. These are the lines whose words (``sos_jax.tokenizers.sudoku``) are exactly
``CELL = DIGIT``, so ``replay_text(decode(ids), ..)`` equals the token verdict of
``sos_jax.search.sudoku_verify.replay_tokens(ids, ..)`` for every id sequence.
"""

from __future__ import annotations

import re

from sos_jax.tokenizers.sudoku import grid_values

__all__ = ["fill_lines", "replay_text"]

_FILL_RE = re.compile(r"\s*\(([0-8]), ([0-8])\)\s*=\s*([0-9])\s*")


def fill_lines(text: str) -> list[tuple[int, int]]:
    """The fill lines of ``text`` in order, as (cell index 9 * r + c, value); never raises on a str."""
    fills = []
    for line in text.split("\n"):
        m = _FILL_RE.fullmatch(line)
        if m:
            fills.append((9 * int(m[1]) + int(m[2]), int(m[3])))
    return fills


def replay_text(text: str, puzzle81, solution81) -> bool:
    """Whether replaying the fill lines of ``text`` onto the puzzle gives the solution; False for any malformed text.

    ``puzzle81`` and ``solution81`` are 81-character strings (``.`` or ``0`` empty) or 81 ints (0 empty).
    """
    if not isinstance(text, str):
        return False
    grid = grid_values(puzzle81)
    for cell, value in fill_lines(text):
        grid[cell] = value
    return grid == grid_values(solution81)
