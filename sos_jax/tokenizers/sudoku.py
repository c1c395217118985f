"""Fixed word-level vocabulary of the Sudoku traces (the original work's tokenizer, same ids).

A text is read as words: a newline is the word ``n``, a cell ``(r, c)`` is one word (id and word
``23 + 9r + c``), ``[ ] : , =`` are words of their own wherever they stand, and the rest is split
on white space. Ids (109 in all, fixed so that models trained elsewhere interoperate):
``0``..``9`` are 0..9, ``guess revert nocand invalid original solving = [ ] none n : ,`` are
10..22, the cells are 23..103, and ``START END MASK SOL_S SOL_E`` are 104..108 (MASK pads).

``decode`` writes the canonical spacing of the original records, so ``decode(encode(x)) == x``
for every board, trace and direct solution, and for a whole training sequence
(``sequence_text``). Within a line, words are joined by one space, except that ``:``, ``,`` and
``]`` follow the word before them and the word after ``[`` follows it::

    guess: (0, 1) [2, 5, 8] = 2
    revert: (0, 2) [3, 6] = none

Before each newline a line gets trailing spaces by where it stands:

* a line holding ``original`` (``original: ``, or ``START original: `` in a sequence): one space;
* the clue lines after it, up to the line starting with ``solving``: two spaces (``(0, 3) = 7  ``);
* the ``solving`` line, an empty line, and a line of only ``START END MASK SOL_S SOL_E``: none;
* every other (trace) line: one space (``(4, 7) = 9 ``, ``nocand: (8, 5) ``), except a line
  followed by a line starting with ``SOL_E``, which gets none.

The last line of a text has no newline and no trailing space: a board ends with ``solving`` and a
trace with its last fill line. A training sequence is ``START <board>\\nSOL_S\\n<trace>\\nSOL_E END``,
in words ``START original : n <clue lines> solving n SOL_S n <trace> n SOL_E END``.

``encode`` reads any spacing (runs of white space other than newlines just separate words), and
``encode(decode(ids)) == ids`` for every id sequence. Text spells cells ``(r, c)`` and newlines as
line breaks; the words ``n`` and ``23``..``103`` of the word form are unknown in text.
"""

from __future__ import annotations

import re

import numpy as np

DIGITS = tuple(str(d) for d in range(10))
KEYWORDS = ("guess", "revert", "nocand", "invalid", "original", "solving", "=", "[", "]", "none", "n", ":", ",")
CELL0 = 23  # cell (r, c) is word and id CELL0 + 9 * r + c
CELLS = tuple(str(CELL0 + k) for k in range(81))
SPECIALS = ("START", "END", "MASK", "SOL_S", "SOL_E")

VOCAB: tuple[str, ...] = DIGITS + KEYWORDS + CELLS + SPECIALS
VOCAB_SIZE = len(VOCAB)
TOKEN_ID = {word: i for i, word in enumerate(VOCAB)}
assert VOCAB_SIZE == 109 and len(TOKEN_ID) == VOCAB_SIZE, "the Sudoku vocabulary must have 109 distinct words"

GUESS, REVERT, NOCAND, INVALID, ORIGINAL, SOLVING = (TOKEN_ID[w] for w in KEYWORDS[:6])
EQUALS, OPEN, CLOSE, NONE, NEWLINE, COLON, COMMA = (TOKEN_ID[w] for w in KEYWORDS[6:])
START, END, MASK, SOL_S, SOL_E = (TOKEN_ID[w] for w in SPECIALS)

# Text spellings of the words: a cell as "(r, c)", a newline as "\n", every other word as itself.
_CELL_TEXT = tuple(f"({k // 9}, {k % 9})" for k in range(81))
_TEXT = DIGITS + KEYWORDS[:10] + ("\n",) + KEYWORDS[11:] + _CELL_TEXT + SPECIALS
_TEXT_ID = {w: i for i, w in enumerate(_TEXT)}
_WORD_RE = re.compile(r"\n|\(\d, \d\)|[\[\]:,=]|[^\s\[\]:,=]+")
_NO_SPACE_BEFORE = frozenset((COLON, COMMA, CLOSE))
_SPECIAL_IDS = frozenset((START, END, MASK, SOL_S, SOL_E))


def cell_id(r: int, c: int) -> int:
    """Id of the cell word ``(r, c)``, 0 <= r, c <= 8."""
    if not (0 <= r <= 8 and 0 <= c <= 8):
        raise ValueError(f"cell ({r}, {c}) is outside the 9x9 board")
    return CELL0 + 9 * r + c


def encode(text: str) -> list[int]:
    """Word ids of ``text``; raises ValueError naming the first word outside the vocabulary."""
    ids = []
    for word in _WORD_RE.findall(text):
        i = _TEXT_ID.get(word)
        if i is None:
            raise ValueError(f"unknown word {word!r} in Sudoku text (cells are written '(r, c)' with r, c in 0..8)")
        ids.append(i)
    return ids


def _line_text(line: list[int]) -> str:
    parts = []
    for k, i in enumerate(line):
        if k and i not in _NO_SPACE_BEFORE and line[k - 1] != OPEN:
            parts.append(" ")
        parts.append(_TEXT[i])
    return "".join(parts)


def decode(ids) -> str:
    """Text of a sequence of word ids, in the canonical spacing of the records (see the module docstring)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    bad = (ids < 0) | (ids >= VOCAB_SIZE)
    if bad.any():
        raise ValueError(f"token id {int(ids[bad][0])} is outside the Sudoku vocabulary (size {VOCAB_SIZE})")
    lines: list[list[int]] = [[]]
    for i in ids.tolist():
        if i == NEWLINE:
            lines.append([])
        else:
            lines[-1].append(i)
    out, in_board = [], False
    for k, line in enumerate(lines):
        text = _line_text(line)
        if k + 1 < len(lines):
            if ORIGINAL in line:
                in_board, pad = True, " "
            elif line[:1] == [SOLVING]:
                in_board, pad = False, ""
            elif _SPECIAL_IDS.issuperset(line):  # also an empty line
                pad = ""
            elif in_board:
                pad = "  "
            else:
                pad = "" if lines[k + 1][:1] == [SOL_E] else " "
            text += pad + "\n"
        out.append(text)
    return "".join(out)


def grid_values(puzzle81) -> list[int]:
    """The 81 values (0 empty) of a puzzle string (``.`` or ``0`` empty) or of 81 ints in 0..9."""
    if isinstance(puzzle81, str):
        if len(puzzle81) != 81 or any(ch not in ".0123456789" for ch in puzzle81):
            raise ValueError(f"a puzzle string has 81 characters from '.0123456789', got {puzzle81!r}")
        return [0 if ch == "." else int(ch) for ch in puzzle81]
    values = np.asarray(puzzle81).reshape(-1)
    if values.shape != (81,) or ((values < 0) | (values > 9)).any():
        raise ValueError(f"a puzzle has 81 values in 0..9 (0 empty), got {values.tolist()}")
    return [int(v) for v in values]


def puzzle_board_text(puzzle81) -> str:
    """The record's board text of a puzzle: ``original:``, a line per clue in row-major order, ``solving``."""
    clues = "".join(f"({k // 9}, {k % 9}) = {v}  \n" for k, v in enumerate(grid_values(puzzle81)) if v)
    return f"original: \n{clues}solving"


def sequence_text(board_text: str, trace_text: str) -> str:
    """The text of a training sequence: ``START <board>\\nSOL_S\\n<trace>\\nSOL_E END``."""
    return f"START {board_text}\nSOL_S\n{trace_text}\nSOL_E END"


def sequence(board_text: str, trace_text: str) -> list[int]:
    """Ids of a training sequence, ``START original : n <clue lines> solving n SOL_S n <trace> n SOL_E END``."""
    return encode(sequence_text(board_text, trace_text))
