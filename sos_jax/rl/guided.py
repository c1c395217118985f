"""The trace editing of Guided-ReST (Moon, Park, Song 2025), host-side Python on text.

Between rollout rounds each unsolved trace is edited so that the model, continuing from the
edited prefix, is one step further along a known optimal solution (``spec/methods.md``, section
Guided-ReST). :func:`guide` makes the edit; :func:`guide_edit` says what it kept and what it added;
:func:`solved_depth` is the depth the edit starts from. The text format is ``spec/countdown.md``.

Optimal nodes
    ``solution`` is a list of operations such as :func:`~sos_jax.search.countdown_python.solve`
    returns (``"60-45=15"``). Node 0 is the root state; node ``d`` is the state after the first
    ``d`` operations, written as the generators write it: the operands (positions ``i < j``) are
    removed, the other numbers keep their order and the result is appended; the operation is
    printed as :func:`~sos_jax.search.countdown_python.combine` prints it for that pair, and the
    ``Operations`` list is the Python list of those strings. Node ``d``'s line is
    ``Current State: <target>:[<numbers>], Operations: [<ops>]``. An operation of ``solution``
    matches a pair when its symbol, its operands (as a multiset) and its result agree, so
    ``"3+5=8"`` also matches the pair (5, 3), printed ``"5+3=8"``. With repeated numbers several
    pairs can match and give different orders (``[3, 5, 3, 7]`` and ``3+7=10`` give
    ``[5, 3, 10]`` or ``[3, 5, 10]``): every such state is an optimal node of that depth (at most
    256 per depth; those whose later operations cannot be applied are dropped). Only states with at
    least two numbers are nodes, so depths run 0 .. ``len(solution) - 1``; the last operation
    leads to the goal line, never to a node. A ``solution`` that is not a valid solution of the
    problem, or a problem with fewer than two numbers, raises ValueError; any ``text`` is accepted.

Which text is read
    Only complete lines count (ended by ``"\\n"``; a cut last line is ignored, and so is the
    ``No solution found.`` marker, which has no newline). Reading stops before the first line that
    holds ``" equal: Goal Reached"``: the strict verifier judges only the first goal line, so in an
    unsolved trace that line is false and nothing after it could make the trace solved. These lines
    are the *working text*. If its first line is not the root line, no node is explored (the text
    is garbage; a root line further down does not count).

Explored nodes (:func:`solved_depth`)
    A node is explored when its line occurs in the working text as a complete line. The deepest
    explored node is ``X`` at depth ``d``, -1 when none is. When several optimal states of depth
    ``d`` are explored (repeated numbers), the one with case (a) available is taken, else the one
    whose line occurs first.

X's block (a rule chosen here; the paper's is informal)
    A line belongs to X when the nearest line above it that holds ``Current State: `` (anywhere in
    the line: the verifier reads the last such text before a goal line) is X's line. X's children
    are the ``Exploring Operation`` lines (any line with that prefix) that belong to X and lie after
    X's first line. In DFS text this collects X's children across all its re-entries (the
    backtracking reprints X's line before each next child, while its descendants' lines belong to
    their own states); in BFS text X's line appears once and its children follow it directly.
    X's id is read from the ``Moving to Node #<id>`` line just above X's first line (both
    generators print one there), else from the last ``Generated Node #<id>: <X's numbers> Operation:
    <X's last op>`` line above it; the root's id is ``0``; failing both, ``0,0,...,0`` (d + 1 zeros).

The edit (in this order)
    (c) No node explored: return the root line alone.
    (a) X's optimal child (depth ``d + 1 <= len(solution) - 1``) has a well-formed
        ``Generated Node #<id>: <target>:[<numbers>] Operation: <op>`` line belonging to X (it was
        generated but, X being deepest, never explored): return the working text followed by
        ``Moving to Node #<id>`` and the child's ``Current State`` line.
    (b) Otherwise, if X has children, pick one uniformly (``rng.randrange``), keep the working
        text before its ``Exploring Operation`` line (the siblings explored before it and, in DFS,
        their subtrees and X's re-entry) and append the optimal child's lines; if X has none, keep
        the working text through X's last line and append the same. The child's lines are
        ``Exploring Operation: <op>, Resulting Numbers: [<numbers>]`` and then, for the last
        operation, ``<target>,<target> equal: Goal Reached``; otherwise, in the DFS order,
        ``Generated Node #<X id>,<k>: <target>:[<numbers>] Operation: <op>``, ``Moving to Node
        #<X id>,<k>`` and the child's ``Current State`` line. ``k`` is the number of X's children
        before the replaced one (0 when none was replaced): the DFS id (k counts visited children),
        and the BFS id too, since a node's children are all leaves (no id) or all non-leaves. The
        move lines are what DFS prints right after ``Generated Node`` (BFS would print the other
        children first); they are appended so that every edit enters the optimal child, as the
        paper's "replace its lines with the optimal operation" reads for DFS.

So the result is always the input up to a line boundary plus new lines; it begins with the root
line and ends with ``"\\n"``; its :func:`solved_depth` is ``d + 1`` (0 after (c)), or it holds the
goal line and the strict verifier judges it solved. Repeated calls reach a solved trace from any
text within ``len(nums)`` calls. The grammar of the added lines is that of ``countdown_format``;
the kept lines are the model's and are not judged. Cost: linear in the text's length.
"""

from __future__ import annotations

import itertools
import random
import re
from functools import lru_cache
from typing import NamedTuple, Sequence

from sos_jax.search.countdown_python import combine

__all__ = ["GuideEdit", "guide", "guide_edit", "optimal_nodes", "solved_depth"]

_MAX_STATES_PER_DEPTH = 256
_GOAL_PHRASE = " equal: Goal Reached"
_STATE_HEAD = "Current State: "
_EXPLORE_HEAD = "Exploring Operation: "
_NUM = r"(?:0|[1-9][0-9]*)"
_ID = rf"{_NUM}(?:,{_NUM})*"
_MOVING_RE = re.compile(rf"Moving to Node #({_ID})")
_GENERATED_RE = re.compile(rf"Generated Node #({_ID}): (.*)")
_SOLUTION_OP_RE = re.compile(r"([0-9]+)([-+*/])([0-9]+)=([0-9]+)")


class GuideEdit(NamedTuple):
    """One edit: the result is ``text[:keep] + added``; ``case`` is ``"a"``, ``"b"`` or ``"c"``."""

    keep: int
    added: str
    case: str


class _Node(NamedTuple):
    nums: tuple[int, ...]
    ops: tuple[str, ...]
    parents: tuple[int, ...]  # indices in the previous depth's tuple; () for the root
    line: str  # the Current State line, without its newline


def _op_key(op: str) -> tuple[str, int, int, int]:
    m = _SOLUTION_OP_RE.fullmatch(op)
    if m is None:
        raise ValueError(f"guided: malformed operation {op!r} in the solution")
    a, b = int(m[1]), int(m[3])
    return m[2], min(a, b), max(a, b), int(m[4])


@lru_cache(maxsize=4096)
def _levels(nums: tuple[int, ...], target: int, solution: tuple[str, ...]) -> tuple[tuple[_Node, ...], ...]:
    if len(nums) < 2:
        raise ValueError(f"guided: a problem needs at least two numbers, got {list(nums)}")
    if len(solution) != len(nums) - 1:
        raise ValueError(f"guided: {len(nums)} numbers need {len(nums) - 1} operations, got {list(solution)}")
    root = _Node(nums, (), (), f"{_STATE_HEAD}{target}:{list(nums)}, Operations: []")
    levels = [(root,)]
    for op in solution:
        key = _op_key(op)
        index: dict[tuple[tuple[int, ...], tuple[str, ...]], int] = {}
        nxt: list[_Node] = []
        for p, node in enumerate(levels[-1]):
            cur = node.nums
            for i, j in itertools.combinations(range(len(cur)), 2):
                for value, printed in combine(cur[i], cur[j]):
                    if _op_key(printed) != key:
                        continue
                    child = cur[:i] + cur[i + 1 : j] + cur[j + 1 :] + (value,)
                    ops = node.ops + (printed,)
                    k = index.get((child, ops))
                    if k is not None:
                        if p not in nxt[k].parents:
                            nxt[k] = nxt[k]._replace(parents=nxt[k].parents + (p,))
                    elif len(nxt) < _MAX_STATES_PER_DEPTH:
                        index[child, ops] = len(nxt)
                        line = f"{_STATE_HEAD}{target}:{list(child)}, Operations: {list(ops)}"
                        nxt.append(_Node(child, ops, (p,), line))
        if not nxt:
            raise ValueError(f"guided: operation {op!r} of {list(solution)} cannot be applied to {list(nums)}")
        levels.append(tuple(nxt))
    # Keep only the states that lead to the target.
    finals = tuple(n for n in levels[-1] if n.nums == (target,))
    if not finals:
        raise ValueError(f"guided: {list(solution)} does not turn {list(nums)} into {target}")
    pruned = [finals]
    for depth in range(len(levels) - 2, -1, -1):
        alive = sorted({p for n in pruned[0] for p in n.parents})
        remap = {old: new for new, old in enumerate(alive)}
        pruned[0] = tuple(n._replace(parents=tuple(remap[p] for p in n.parents)) for n in pruned[0])
        pruned.insert(0, tuple(levels[depth][k] for k in alive))
    return tuple(pruned)


def optimal_nodes(nums: Sequence[int], target: int, solution: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The ``Current State`` lines (without newline) of the optimal nodes, by depth
    ``0 .. len(solution) - 1`` (usually one per depth; more with repeated numbers)."""
    levels = _levels(tuple(int(n) for n in nums), int(target), tuple(solution))
    return tuple(tuple(n.line for n in level) for level in levels[:-1])


def _working_lines(text: str) -> tuple[list[str], list[int]]:
    """The complete lines before the first goal-phrase line, and their start offsets (plus the end)."""
    end = text.rfind("\n") + 1
    goal = text.find(_GOAL_PHRASE, 0, end)
    if goal >= 0:
        end = text.rfind("\n", 0, goal) + 1
    lines = text[:end].split("\n")
    lines.pop()  # the empty string after the last newline
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    return lines, starts


class _Explored(NamedTuple):
    depth: int
    index: int  # in levels[depth]
    first: int  # first line holding the node's line
    last: int  # last such line


def _explored(lines: list[str], levels) -> list[_Explored]:
    """The deepest explored optimal nodes (all of one depth), ordered by first occurrence."""
    if not lines or lines[0] != levels[0][0].line:
        return []
    where = {}
    for depth, level in enumerate(levels[:-1]):
        for index, node in enumerate(level):
            where.setdefault(node.line, (depth, index))
    seen: dict[tuple[int, int], list[int]] = {}
    for k, line in enumerate(lines):
        if line.startswith(_STATE_HEAD):
            hit = where.get(line)
            if hit is not None:
                if hit in seen:
                    seen[hit][1] = k
                else:
                    seen[hit] = [k, k]
    depth = max(d for d, _ in seen)
    found = [_Explored(d, i, first, last) for (d, i), (first, last) in seen.items() if d == depth]
    found.sort(key=lambda e: e.first)
    return found


def solved_depth(text: str, nums: Sequence[int], target: int, solution: Sequence[str]) -> int:
    """Depth of the deepest optimal node whose ``Current State`` line the text explored, -1 if none
    (the rules are in the module docstring)."""
    levels = _levels(tuple(int(n) for n in nums), int(target), tuple(solution))
    found = _explored(_working_lines(str(text))[0], levels)
    return found[0].depth if found else -1


def _node_id(lines: list[str], x: _Explored, node: _Node, target: int) -> str:
    if x.depth == 0:
        return "0"
    if x.first > 0:
        m = _MOVING_RE.fullmatch(lines[x.first - 1])
        if m:
            return m[1]
    want = f"{target}:{list(node.nums)} Operation: {node.ops[-1]}"
    for k in range(x.first - 1, -1, -1):
        m = _GENERATED_RE.fullmatch(lines[k])
        if m and m[2] == want:
            return m[1]
    return ",".join(["0"] * (x.depth + 1))


def _belonging(lines: list[str], x: _Explored, node_line: str) -> list[int]:
    """Lines after X's first line whose nearest line holding "Current State: " above is X's line."""
    out = []
    mine = True
    for k in range(x.first + 1, len(lines)):
        line = lines[k]
        if _STATE_HEAD in line:
            mine = line == node_line
        elif mine:
            out.append(k)
    return out


def guide_edit(
    text: str, nums: Sequence[int], target: int, solution: Sequence[str], rng: random.Random
) -> GuideEdit:
    """The Guided-ReST edit of ``text``: keep ``text[:keep]``, append ``added`` (module docstring)."""
    text = str(text)
    target = int(target)
    levels = _levels(tuple(int(n) for n in nums), target, tuple(solution))
    lines, starts = _working_lines(text)
    found = _explored(lines, levels)
    if not found:
        return GuideEdit(0, levels[0][0].line + "\n", "c")
    last_depth = len(levels) - 1  # the goal state's depth

    # (a) the optimal child was generated under X but never explored.
    if found[0].depth + 1 < last_depth:
        for x in found:
            node = levels[x.depth][x.index]
            kids = [c for c in levels[x.depth + 1] if x.index in c.parents]
            generated = {f"{target}:{list(c.nums)} Operation: {c.ops[-1]}": c for c in kids}
            for k in _belonging(lines, x, node.line):
                m = _GENERATED_RE.fullmatch(lines[k])
                if m and m[2] in generated:
                    child = generated[m[2]]
                    return GuideEdit(starts[-1], f"Moving to Node #{m[1]}\n{child.line}\n", "a")

    # (b) replace a random explored child of X (or add one) with the optimal child.
    x = found[0]
    node = levels[x.depth][x.index]
    child = next(c for c in levels[x.depth + 1] if x.index in c.parents)
    children = [k for k in _belonging(lines, x, node.line) if lines[k].startswith(_EXPLORE_HEAD)]
    if children:
        k = rng.randrange(len(children))
        keep = starts[children[k]]
    else:
        k = 0
        keep = starts[x.last + 1]
    op = child.ops[-1]
    added = f"{_EXPLORE_HEAD}{op}, Resulting Numbers: {list(child.nums)}\n"
    if x.depth + 1 == last_depth:
        added += f"{target},{target}{_GOAL_PHRASE}\n"
    else:
        cid = f"{_node_id(lines, x, node, target)},{k}"
        added += (
            f"Generated Node #{cid}: {target}:{list(child.nums)} Operation: {op}\n"
            f"Moving to Node #{cid}\n"
            f"{child.line}\n"
        )
    return GuideEdit(keep, added, "b")


def guide(text: str, nums: Sequence[int], target: int, solution: Sequence[str], rng: random.Random) -> str:
    """The Guided-ReST edit of an unsolved trace: a prefix of ``text`` up to a line boundary plus
    the lines that take it one optimal step further (module docstring)."""
    edit = guide_edit(text, nums, target, solution, rng)
    return str(text)[: edit.keep] + edit.added
