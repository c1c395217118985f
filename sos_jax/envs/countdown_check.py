"""Judging a Countdown Stream-of-Search trace, in pure Python.

``check_trace`` gives two verdicts on one text:

* strict (sos_jax's own): the FIRST goal line ``<x>,<t> equal: Goal Reached`` is judged by the
  operations of the last ``Current State`` line before it plus the op of the last
  ``Exploring Operation`` line before it. They must form a full solution: every op is
  ``a<sym>b=c`` over canonical non-negative integers of at most 9 digits, arithmetically right,
  each operand available (an input or an earlier result, each used once), exactly
  ``len(nums) - 1`` ops (so every input is used and one number is left), the last result equals
  the target, and the goal line reads ``<last result>,<target>``. Both lines must be well formed:

      Current State: <digits>:[<digits, commas, spaces>], Operations: [<'op', 'op', ...>]\\n
      Exploring Operation: <op>, Resulting Numbers: [<digits, commas, spaces>]\\n

* lax: the original Stream-of-Search ``metric_fn``, message for message. It never removes used
  numbers, so reusing an operand or leaving numbers over still passes, and it ignores the goal
  line's numbers. Two deliberate differences: the problem comes from the ``nums`` and ``target``
  arguments rather than from the text's first line, and operations are evaluated by a small safe
  evaluator (numbers, ``+ - * / // % **``, parentheses) instead of ``eval``; cases the original
  would crash on get a message instead. Its regexes are matched by hand, with the same results,
  in linear time (they backtrack quadratically on long lines and digit runs).

The rating of a solved trace (either verdict) is ``max(0, 1 - (E + 1) / D)`` where ``E`` counts
the occurrences of ``"Exploring Operation"`` in the whole text and ``D = max_nodes(len(nums))``.
The JAX verifier in ``sos_jax.search.countdown_verify`` implements the strict verdict on token
ids and returns the reason codes below.
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import operator
import re

__all__ = [
    "ARITHMETIC",
    "GOAL_MISMATCH",
    "LAX_VALID",
    "NO_EXPLORE",
    "NO_GOAL",
    "NO_STATE",
    "NOT_TARGET",
    "OP_COUNT",
    "REASONS",
    "SOLVED",
    "UNAVAILABLE",
    "TraceVerdict",
    "check_trace",
    "lax_verdict",
    "max_nodes",
    "strict_verdict",
]

# Strict reason codes, in the order they are checked; REASONS[code] is the verdict's ``reason``.
SOLVED = 0
NO_GOAL = 1
NO_STATE = 2
NO_EXPLORE = 3
OP_COUNT = 4
ARITHMETIC = 5
UNAVAILABLE = 6
NOT_TARGET = 7
GOAL_MISMATCH = 8
REASONS = (
    "solved",
    "no goal line",
    "no well-formed Current State line before the goal",
    "no well-formed Exploring Operation line before the goal",
    "wrong number of operations (need one fewer than the inputs)",
    "arithmetic error",
    "operand not available (reused or never made)",
    "final result is not the target",
    "goal line does not read <final result>,<target>",
)

LAX_VALID = "Valid path."

_NUM = r"(?:0|[1-9][0-9]{0,8})"
_OP = rf"({_NUM})([-+*/])({_NUM})=({_NUM})"
_OP_RE = re.compile(_OP)
_OP_NC = rf"{_NUM}[-+*/]{_NUM}={_NUM}"
_STATE_RE = re.compile(
    rf"Current State: [0-9]+:\[[0-9, ]*\], Operations: \[((?:'{_OP_NC}'(?:, '{_OP_NC}')*)?)\]\n"
)
_EXPLORE_RE = re.compile(rf"Exploring Operation: {_OP}, Resulting Numbers: \[[0-9, ]*\]\n")
_CANONICAL_NUM = re.compile(_NUM)

_LAX_DIGITS_RE = re.compile(r"\d+")

# The original's other patterns, matched by hand in linear time (the regexes backtrack
# quadratically on long lines and digit runs). ``\d`` there is ``str.isdecimal``.
#   goal:    \d+,\d+ equal: Goal Reached                                      (first match)
#   explore: Exploring Operation: (.*?=\d+), Resulting Numbers: \[(.*?)\]     (last match, group 1)
#   state:   Current State: \d+:\[.*?\], Operations: \[(.*?)\]              (last match, group 1)
_GOAL_PHRASE = " equal: Goal Reached"
_EXPLORE_HEAD = "Exploring Operation: "
_RESULTING = ", Resulting Numbers: ["
_STATE_HEAD = "Current State: "
_OPS_OPEN = "], Operations: ["


def _is_ascii_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _run_start(text: str, end: int, is_digit) -> int:
    """Start of the run of digits that ends just before ``end``."""
    i = end
    while i > 0 and is_digit(text[i - 1]):
        i -= 1
    return i


def _first_goal(text: str, is_digit) -> tuple[int, str, str] | None:
    """(start, x, t) of the leftmost match of ``(digits),(digits) equal: Goal Reached``, or None."""
    q = text.find(_GOAL_PHRASE)
    while q >= 0:
        t0 = _run_start(text, q, is_digit)
        if t0 < q and t0 >= 2 and text[t0 - 1] == ",":
            x0 = _run_start(text, t0 - 1, is_digit)
            if x0 < t0 - 1:
                return x0, text[x0 : t0 - 1], text[t0:q]
        q = text.find(_GOAL_PHRASE, q + 1)
    return None


def _occurrences(line: str, sub: str) -> list[int]:
    found, k = [], line.find(sub)
    while k >= 0:
        found.append(k)
        k = line.find(sub, k + 1)
    return found


def _lax_last_explore(text: str) -> str | None:
    """Group 1 of the original's last Exploring Operation match in ``text``, or None."""
    last = None
    for line in text.split("\n"):  # no match spans a newline
        if _EXPLORE_HEAD not in line:
            continue
        # Where group 1 can end: before ", Resulting Numbers: [" that follows "=<digits>" and has a
        # "]" after it; ``eqs`` holds the positions of those "=" (increasing).
        close = line.rfind("]")
        ends, eqs = [], []
        for k in _occurrences(line, _RESULTING):
            d = _run_start(line, k, str.isdecimal)
            if 0 < d < k and line[d - 1] == "=" and close >= k + len(_RESULTING):
                ends.append(k)
                eqs.append(d - 1)
        s = line.find(_EXPLORE_HEAD)
        while s >= 0:
            i = bisect.bisect_left(eqs, s + len(_EXPLORE_HEAD))
            if i == len(eqs):
                break  # neither this start nor any later one can match
            last = line[s + len(_EXPLORE_HEAD) : ends[i]]
            s = line.find(_EXPLORE_HEAD, line.index("]", ends[i] + len(_RESULTING)) + 1)
    return last


def _lax_last_state(text: str) -> str | None:
    """Group 1 (the operations) of the original's last Current State match in ``text``, or None."""
    last = None
    for line in text.split("\n"):
        if _STATE_HEAD not in line:
            continue
        close = line.rfind("]")
        opens = [k for k in _occurrences(line, _OPS_OPEN) if close >= k + len(_OPS_OPEN)]
        s = line.find(_STATE_HEAD)
        while s >= 0:
            head = s + len(_STATE_HEAD)
            d = head
            while d < len(line) and line[d].isdecimal():
                d += 1
            i = bisect.bisect_left(opens, d + 2)
            if d == head or not line.startswith(":[", d) or i == len(opens):
                s = line.find(_STATE_HEAD, s + 1)
                continue
            end = line.index("]", opens[i] + len(_OPS_OPEN))
            last = line[opens[i] + len(_OPS_OPEN) : end]
            s = line.find(_STATE_HEAD, end + 1)
    return last


@dataclasses.dataclass(frozen=True)
class TraceVerdict:
    """Strict and lax verdicts on one trace; ``reason`` is ``REASONS[code]``, ``lax_reason`` the original's message."""

    solved: bool
    reason: str
    rating: float
    lax_solved: bool
    lax_rating: float
    lax_reason: str


def max_nodes(n: int) -> int:
    """Size of the full search tree for ``n`` numbers: product over m = n..2 of 4 * C(m, 2)."""
    d = 1
    for m in range(2, n + 1):
        d *= 2 * m * (m - 1)
    return d


def _rating(text: str, n: int) -> float:
    # Past 30 numbers the tree is so large that the rating rounds to 1 anyway.
    return max(0.0, 1.0 - (text.count("Exploring Operation") + 1) / max_nodes(min(n, 30)))


def _arith_ok(a: int, sym: str, b: int, c: int) -> bool:
    if sym == "+":
        return a + b == c
    if sym == "*":
        return a * b == c
    if sym == "-":
        return a - b == c
    return b != 0 and a == b * c


def strict_verdict(text: str, nums: list[int], target: int) -> int:
    """Strict reason code of ``text`` for the problem (``nums``, ``target``); ``SOLVED`` (0) when solved."""
    goal = _first_goal(text, _is_ascii_digit)
    if goal is None:
        return NO_GOAL
    start, x, t = goal
    s = text.rfind("Current State: ", 0, start)
    state = _STATE_RE.match(text, s) if s >= 0 else None
    if state is None:
        return NO_STATE
    e = text.rfind("Exploring Operation: ", 0, start)
    explore = _EXPLORE_RE.match(text, e) if e >= 0 else None
    if explore is None:
        return NO_EXPLORE
    ops = _OP_RE.findall(state.group(1)) + [explore.groups()]
    if len(ops) != len(nums) - 1:
        return OP_COUNT
    pool = list(nums)
    for a, sym, b, c in ops:
        a, b, c = int(a), int(b), int(c)
        if not _arith_ok(a, sym, b, c):
            return ARITHMETIC
        for operand in (a, b):
            if operand not in pool:
                return UNAVAILABLE
            pool.remove(operand)
        pool.append(c)
    result = int(ops[-1][3])
    if result != target:
        return NOT_TARGET
    canonical = _CANONICAL_NUM.fullmatch(x) and _CANONICAL_NUM.fullmatch(t)
    if not canonical or int(x) != result or int(t) != target:
        return GOAL_MISMATCH
    return SOLVED


# A safe stand-in for the original's ``eval`` of an operation's left-hand side.
_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_MAX_POW_BITS = 1 << 16


def _eval_node(node):
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _eval_node(node.operand)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right > 0 and right * left.bit_length() > _MAX_POW_BITS:
                raise OverflowError("power result too large")
        return _BINOPS[type(node.op)](left, right)
    raise ValueError("unsupported expression")


def _safe_eval(expr: str):
    # eval() strips leading spaces and tabs and names its source "<string>".
    return _eval_node(ast.parse(expr.lstrip(" \t"), filename="<string>", mode="eval"))


def lax_verdict(text: str, nums: list[int], target: int) -> str:
    """The original Stream-of-Search verifier's message for ``text`` (``"Valid path."`` when it passes)."""
    path = text.replace("<|endoftext|>", "")
    goal = _first_goal(path, str.isdecimal)
    if goal is None:
        return "No goal reached statement found."
    before = path[: goal[0]]
    final_operation = _lax_last_explore(before)
    if final_operation is None:
        return "No operations found leading to the goal."
    try:
        predicted = int(final_operation.split("=")[1])
    except (ValueError, IndexError):
        return "Couldnt parse last op"
    if predicted != target:
        return "Invalid path: Final operation does not result in target."
    state_ops = _lax_last_state(before)
    if state_ops is None:
        return "Invalid path: No current state found before the goal."
    operations = [op.replace("'", "") for op in state_ops.split(", ")] + [final_operation]
    available = list(nums)
    for operation in operations:
        parts = operation.split("=")
        if len(parts) != 2:
            return "Could not split operation into lhs, rhs"
        left, right = parts
        try:
            if _safe_eval(left) != int(right):
                return f"Invalid operation: {operation}"
        except Exception as e:  # the original reported every evaluation error this way
            return f"Error in evaluating operation {operation}: {e}"
        for n in _LAX_DIGITS_RE.findall(left):
            try:
                if int(n) not in available:
                    return f"Invalid operation: {operation}, number {n} not available in {available}"
            except ValueError as e:
                return f"Error in evaluating operation {operation}: {e}"
        # The original meant to remove the used numbers here, but compared ints with strings.
        available.append(int(right))
    return LAX_VALID


def check_trace(text: str, nums: list[int], target: int) -> TraceVerdict:
    """Strict and lax verdicts on a trace ``text`` for the problem ``nums`` -> ``target``; never raises on any text."""
    text = text if isinstance(text, str) else str(text)
    nums = [int(n) for n in nums]
    target = int(target)
    code = strict_verdict(text, nums, target)
    lax_reason = lax_verdict(text, nums, target)
    solved = code == SOLVED
    lax_solved = lax_reason == LAX_VALID
    return TraceVerdict(
        solved=solved,
        reason=REASONS[code],
        rating=_rating(text, len(nums)) if solved else 0.0,
        lax_solved=lax_solved,
        lax_rating=_rating(text, len(nums)) if lax_solved else 0.0,
        lax_reason=lax_reason,
    )
