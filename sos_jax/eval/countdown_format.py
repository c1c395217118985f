"""The line grammar of Countdown trace text (``spec/countdown.md``): which kind each line is, and
whether a decoded model output holds any line outside the grammar.

Both the search traces (DFS / BFS) and the optimal-path ("OT") text are covered. The check is
purely syntactic: numbers are non-negative integers without leading zeros, written with ASCII
digits; arithmetic, ids and the order of lines are not judged (the verifier does that).
"""

from __future__ import annotations

import re

_NUM = r"(?:0|[1-9][0-9]*)"
_NUMS = rf"\[{_NUM}(?:, {_NUM})*\]"
_OP = rf"{_NUM}[-+*/]{_NUM}={_NUM}"
_OPS = rf"\[(?:'{_OP}'(?:, '{_OP}')*)?\]"
_ID = rf"{_NUM}(?:,{_NUM})*"
_PATTERNS = {
    "state": rf"Current State: {_NUM}:{_NUMS}, Operations: {_OPS}",
    "explore": rf"Exploring Operation: {_OP}, Resulting Numbers: {_NUMS}",
    "generated": rf"Generated Node #{_ID}: {_NUM}:{_NUMS} Operation: {_OP}",
    "generated_ot": rf"Generated Node #{_NUM}: {_NUMS} from Operation: {_OP}",
    "moving": rf"Moving to Node #{_ID}",
    "goal": rf"{_NUM},{_NUM} equal: Goal Reached",
    "unequal": rf"{_NUM},{_NUM} unequal: No Solution",
    "no_solution": r"No solution found\.",
}
LINE_KINDS = tuple(_PATTERNS)  # ("state", "explore", ..., "no_solution")
_LINE_RE = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in _PATTERNS.items()))
_NO_SOLUTION = "No solution found."


def line_kind(line: str) -> str | None:
    """The kind (one of ``LINE_KINDS``) of one line given without its newline, or None when the
    line matches no kind."""
    m = _LINE_RE.fullmatch(line)
    return m.lastgroup if m else None


def malformed(text: str, cut: bool = False) -> bool:
    """True when some line of ``text`` (split on "\\n"; a final newline ends the last line rather
    than starting another) has no kind, or when no line is left to judge.

    With ``cut`` (generation stopped at a token limit) an unterminated last line is not judged, as
    it was cut mid-line; ``No solution found.``, which the format writes without a newline, is
    judged all the same. So an empty text is malformed, and so is a cut one that never finished its
    first line (a long run of text without a newline is not let through)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    elif cut and lines[-1] != _NO_SOLUTION:
        lines.pop()
    return not lines or any(_LINE_RE.fullmatch(line) is None for line in lines)
