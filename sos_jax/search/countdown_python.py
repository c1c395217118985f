"""Plain-Python reference implementation of the Countdown Stream-of-Search algorithms.

This module is the exact oracle for the on-device (JAX) trace writers and the CPU baseline of
the generation benchmark. It depends on the standard library only. Its output is byte-identical
to the original Stream-of-Search generator (see ``spec/countdown.md``), with one deliberate
difference: :func:`ot_trace` removes one occurrence of each operand, where the original removed
every copy of the operand's value.

Heuristic values are compared exactly. Internally both searches use an integer key per state:
for the sum heuristic ``sum(|n - target|) * (L // len(nums))`` where ``L = lcm(1..len(root))``
(that is, the mean scaled by ``L``), for the mult heuristic the heuristic itself. Comparing these
keys gives the same order and ties as comparing the original's float values (distinct means of
``n1`` and ``n2`` numbers differ by at least ``1/(n1*n2)``, far above rounding error, and equal
means give equal floats because IEEE division is correctly rounded).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
from fractions import Fraction
from functools import lru_cache
from typing import Callable, Mapping, Sequence

__all__ = [
    "combine",
    "sum_heuristic",
    "mult_heuristic",
    "dfs_trace",
    "bfs_trace",
    "ot_trace",
    "solve",
    "trace",
    "held_out_targets",
    "sample_problems",
    "sos_mix_traces",
]

_HEURISTIC_NAMES = {"sum": "sum", "sum_heuristic": "sum", "mult": "mult", "mult_heuristic": "mult"}


# --------------------------------------------------------------------------------------------
# Operations and heuristics
# --------------------------------------------------------------------------------------------


def combine(a: int, b: int) -> list[tuple[int, str]]:
    """Results and operation strings for ``a`` (earlier in the list) and ``b`` (later).

    Order: ``a+b``, ``a*b``, the non-negative difference written larger-first, then the exact
    division written larger-first, present only when the smaller is non-zero and divides the
    larger. When ``a == b`` the difference and division are written ``b-a`` and ``b/a``.
    """
    out = [(a + b, f"{a}+{b}={a + b}"), (a * b, f"{a}*{b}={a * b}")]
    if a <= b:
        out.append((b - a, f"{b}-{a}={b - a}"))
        if a != 0 and b % a == 0:
            out.append((b // a, f"{b}/{a}={b // a}"))
    else:
        out.append((a - b, f"{a}-{b}={a - b}"))
        if b != 0 and a % b == 0:
            out.append((a // b, f"{a}/{b}={a // b}"))
    return out


def sum_heuristic(nums: Sequence[int], target: int) -> Fraction:
    """Mean of ``|n - target|`` over ``nums``, as an exact :class:`~fractions.Fraction`."""
    return Fraction(sum(abs(n - target) for n in nums), len(nums))


@lru_cache(maxsize=1024)
def _factor_distances(target: int) -> tuple[int, ...]:
    """``d[n]`` = distance from ``n`` to the nearest factor ``f`` of target, ``2 <= f <= target``,
    for ``0 <= n <= target`` (above ``target`` the nearest factor is ``target`` itself)."""
    if target < 2:
        raise ValueError(f"mult heuristic needs target >= 2, got {target}")
    factors = [f for f in range(2, target + 1) if target % f == 0]
    return tuple(min(abs(n - f) for f in factors) for n in range(target + 1))


def mult_heuristic(nums: Sequence[int], target: int) -> int:
    """Sum over ``nums`` of the distance to the nearest factor ``f`` of ``target``, ``2 <= f <= target``.

    1 is not a factor here. Numbers are non-negative (the operations never make a negative one).
    Needs ``target >= 2``.
    """
    dist = _factor_distances(target)
    return sum(dist[n] if n <= target else n - target for n in nums)


def _heuristic_key(heuristic: str, target: int, max_len: int) -> tuple[Callable[[list[int]], int], int]:
    """An exact integer key for states of at most ``max_len`` numbers, and its scale.

    ``key(nums) == heuristic(nums, target) * scale`` exactly.
    """
    name = _HEURISTIC_NAMES.get(heuristic)
    if name is None:
        raise ValueError(f"heuristic must be 'sum' or 'mult', got {heuristic!r}")
    if name == "sum":
        scale = math.lcm(*range(1, max(max_len, 1) + 1))
        per_len = [0] + [scale // n for n in range(1, max(max_len, 1) + 1)]

        def key(nums: list[int]) -> int:
            return sum(abs(n - target) for n in nums) * per_len[len(nums)]

        return key, scale
    dist = _factor_distances(target)

    def key(nums: list[int]) -> int:
        return sum(dist[n] if n <= target else n - target for n in nums)

    return key, 1


def _children(nums: list[int], key: Callable[[list[int]], int]) -> list[tuple[int, list[int], str]]:
    """All children ``(key, numbers, operation)`` of a state, in generation order: pairs
    ``i < j`` in ``itertools.combinations`` order, operations in :func:`combine` order; the
    new list is the other numbers in order followed by the result."""
    out = []
    n = len(nums)
    for i, j in itertools.combinations(range(n), 2):
        rest = nums[:i] + nums[i + 1 : j] + nums[j + 1 :]
        for value, op in combine(nums[i], nums[j]):
            child = rest + [value]
            out.append((key(child), child, op))
    return out


def _first(item: tuple) -> int:
    return item[0]


# --------------------------------------------------------------------------------------------
# DFS
# --------------------------------------------------------------------------------------------


def dfs_trace(nums: Sequence[int], target: int, heuristic: str, threshold: int | None) -> str:
    """The depth-first SoS trace (``heuristic`` is ``"sum"`` or ``"mult"``).

    At each state: print it, generate all children, drop those whose heuristic exceeds
    ``threshold`` (``None`` keeps all), stable-sort the rest by heuristic and visit them in that
    order. A visited child gets the id ``<parent>,<k>`` with ``k`` counting the kept children
    already visited, leaves included. After every child but the last the parent is re-entered
    (``Moving to Node #<parent>`` and its ``Current State`` again). The search stops at the first
    leaf equal to the target; a failed search ends without a marker line.
    """
    root = [int(n) for n in nums]
    key, scale = _heuristic_key(heuristic, target, len(root))
    limit = None if threshold is None else threshold * scale
    out: list[str] = []
    append = out.append

    def visit(cur: list[int], ops: list[str], node_id: str) -> bool:
        state_line = f"Current State: {target}:{cur}, Operations: {ops}\n"
        append(state_line)
        kids = _children(cur, key)
        if limit is not None:
            kids = [c for c in kids if c[0] <= limit]
        kids.sort(key=_first)
        last = len(kids) - 1
        for k, (_, child, op) in enumerate(kids):
            append(f"Exploring Operation: {op}, Resulting Numbers: {child}\n")
            if len(child) == 1:
                if child[0] == target:
                    append(f"{child[0]},{target} equal: Goal Reached\n")
                    return True
                append(f"{child[0]},{target} unequal: No Solution\n")
            else:
                child_id = f"{node_id},{k}"
                append(f"Generated Node #{child_id}: {target}:{child} Operation: {op}\n")
                append(f"Moving to Node #{child_id}\n")
                if visit(child, ops + [op], child_id):
                    return True
            if k < last:
                append(f"Moving to Node #{node_id}\n")
                append(state_line)
        return False

    visit(root, [], "0")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# BFS (best-first beam search)
# --------------------------------------------------------------------------------------------


class _Node:
    """A BFS queue entry's node. Any two nodes compare as "not less", so a queue of
    ``(key, node)`` tuples orders ties exactly as the original's ``(h, node)`` tuples did."""

    __slots__ = ("nums", "ops", "id", "state_line")

    def __init__(self, nums: list[int], ops: list[str], node_id: str, state_line: str):
        self.nums = nums
        self.ops = ops
        self.id = node_id
        self.state_line = state_line

    def __lt__(self, other: "_Node") -> bool:
        return False


def bfs_trace(
    nums: Sequence[int],
    target: int,
    heuristic: str,
    beam: int,
    perms: Sequence[Sequence[int]] | None = None,
    rng: random.Random | None = None,
) -> tuple[str, list[list[int]]]:
    """The best-first beam search ("BFS") SoS trace, and the shuffle permutations used.

    One global ``heapq`` of ``(key, node)`` where nodes with equal keys compare equal. Each round
    pops ``min(beam, len(queue))`` nodes; each popped node prints its state, keeps the first
    ``beam`` children after a stable sort, shuffles them, prints them (leaves: equal/unequal,
    stopping on equality; others: ``Generated Node`` with the id ``<parent>,<k>``, ``k``
    advancing for non-leaves only, so leaves all get ``<parent>,0``), stable-sorts them again and
    pushes them all. ``Moving to Node`` lines go between popped nodes and after a round to the
    queue's head; an emptied queue ends with ``No solution found.``.

    Shuffles (one per popped node, empty child lists included) replay ``perms`` in call order
    (``perm[k]`` = index before shuffling of the element placed at position ``k``) or, when
    ``perms`` is None, are drawn with ``rng.shuffle`` (which consumes the same random numbers as
    the original's ``random.shuffle`` of the child list).
    """
    if perms is None and rng is None:
        raise ValueError("bfs_trace needs perms or rng")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    root = [int(n) for n in nums]
    key, _ = _heuristic_key(heuristic, target, len(root))
    used: list[list[int]] = []
    out: list[str] = []
    append = out.append
    heap: list[tuple[int, _Node]] = []
    heapq.heappush(heap, (key(root), _Node(root, [], "0", f"Current State: {target}:{root}, Operations: []\n")))
    while heap:
        popped = [heapq.heappop(heap)[1] for _ in range(min(beam, len(heap)))]
        for idx, node in enumerate(popped):
            append(node.state_line)
            kids = _children(node.nums, key)
            kids.sort(key=_first)
            del kids[beam:]
            if perms is not None:
                if len(used) >= len(perms):
                    raise ValueError(f"bfs_trace: ran out of shuffle permutations after {len(perms)}")
                perm = [int(p) for p in perms[len(used)]]
                if sorted(perm) != list(range(len(kids))):
                    raise ValueError(
                        f"bfs_trace: shuffle {len(used)} got {perm}, not a permutation of {len(kids)} children"
                    )
            else:
                perm = list(range(len(kids)))
                rng.shuffle(perm)
            used.append(perm)
            kids = [kids[p] for p in perm]
            pushed = []
            k = 0
            for h, child, op in kids:
                append(f"Exploring Operation: {op}, Resulting Numbers: {child}\n")
                child_id = f"{node.id},{k}"
                ops = node.ops + [op]
                if len(child) == 1:
                    if child[0] == target:
                        append(f"{child[0]},{target} equal: Goal Reached\n")
                        return "".join(out), used
                    append(f"{child[0]},{target} unequal: No Solution\n")
                else:
                    append(f"Generated Node #{child_id}: {target}:{child} Operation: {op}\n")
                    k += 1
                pushed.append((h, _Node(child, ops, child_id, f"Current State: {target}:{child}, Operations: {ops}\n")))
            pushed.sort(key=_first)
            for item in pushed:
                heapq.heappush(heap, item)
            if idx < len(popped) - 1:
                append(f"Moving to Node #{popped[idx + 1].id}\n")
        if heap:
            append(f"Moving to Node #{heap[0][1].id}\n")
    append("No solution found.")
    return "".join(out), used


# --------------------------------------------------------------------------------------------
# Optimal path, exhaustive solver, dispatch
# --------------------------------------------------------------------------------------------

_OP_RE = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")


def ot_trace(nums: Sequence[int], target: int, solution: Sequence[str]) -> str:
    """The optimal-path ("OT") text for ``solution``, a list of operations like ``'60-45=15'``.

    Same text as the original ``optimal_path`` except that each operation removes ONE occurrence
    (the first) of each operand, so a repeated number is not deleted twice. Raises ValueError
    when an operation is malformed or wrong, uses an unavailable number, or when the solution does
    not end with the single number ``target``.
    """
    cur = [int(n) for n in nums]
    out = [f"Current State: {target}:{cur}, Operations: []\n"]
    done: list[str] = []
    node_index = 1
    for op in solution:
        m = _OP_RE.fullmatch(op)
        if m is None:
            raise ValueError(f"ot_trace: malformed operation {op!r}")
        a, sym, b, claimed = int(m[1]), m[2], int(m[3]), int(m[4])
        if sym == "+":
            result = a + b
        elif sym == "-":
            result = a - b
        elif sym == "*":
            result = a * b
        else:
            result = a // b if b != 0 and a % b == 0 else None
        if result is None or result != claimed:
            raise ValueError(f"ot_trace: wrong operation {op!r}")
        try:
            cur.remove(a)
            cur.remove(b)
        except ValueError:
            raise ValueError(f"ot_trace: operation {op!r} uses a number not in {cur}") from None
        cur.append(result)
        out.append(f"Exploring Operation: {op}, Resulting Numbers: {cur}\n")
        if len(cur) == 1:
            out.append(f"{cur[0]},{target} equal: Goal Reached\n")
        else:
            node_index += 1
            out.append(f"Generated Node #{node_index}: {cur} from Operation: {op}\n")
            done.append(op)
            out.append(f"Current State: {target}:{cur}, Operations: {done}\n")
    if cur != [target]:
        raise ValueError(f"ot_trace: solution ends with {cur}, not [{target}]")
    return "".join(out)


def solve(nums: Sequence[int], target: int) -> list[str] | None:
    """The first solution of an exhaustive depth-first search, or None if there is none.

    Order (shared with the on-device solver): at each state, pairs ``(i, j)``, ``i < j``, in
    ``itertools.combinations`` order; for each pair the operations in :func:`combine` order; the
    child (other numbers in order, then the result) is searched completely before the next
    operation. A solution is a state with a single number equal to the target. No pruning.
    This is the original generator's ``CountDown.search``.
    """
    ops: list[str] = []

    def rec(cur: list[int]) -> bool:
        if len(cur) == 1:
            return cur[0] == target
        for i, j in itertools.combinations(range(len(cur)), 2):
            rest = cur[:i] + cur[i + 1 : j] + cur[j + 1 :]
            for value, op in combine(cur[i], cur[j]):
                ops.append(op)
                if rec(rest + [value]):
                    return True
                ops.pop()
        return False

    return ops if rec([int(n) for n in nums]) else None


def trace(record: Mapping) -> str:
    """The SoS trace for a record with fields ``nums``, ``target``, ``strategy`` (``'dfs'`` or
    ``'bfs'``), ``heuristic`` (``'sum_heuristic'``/``'mult_heuristic'``), ``beam_size`` and
    ``bfs_shuffle_perms`` (BFS), ``dfs_threshold`` (DFS)."""
    heuristic = record["heuristic"]
    if record["strategy"] == "dfs":
        return dfs_trace(record["nums"], record["target"], heuristic, record["dfs_threshold"])
    if record["strategy"] == "bfs":
        text, _ = bfs_trace(
            record["nums"], record["target"], heuristic, record["beam_size"], perms=record["bfs_shuffle_perms"]
        )
        return text
    raise ValueError(f"strategy must be 'dfs' or 'bfs', got {record['strategy']!r}")


# --------------------------------------------------------------------------------------------
# Problems, splits, the SoS mix
# --------------------------------------------------------------------------------------------


def held_out_targets(seed: int = 4, target_min: int = 10, target_max: int = 100, fraction: float = 0.1) -> list[int]:
    """The held-out ("unseen") targets of the original split, in shuffled order.

    ``targets = list(range(target_min, target_max + 1))``, shuffled with ``random.Random(seed)``;
    the first ``int(fraction * len(targets))`` are held out. Seed 4 gives
    {14, 39, 41, 57, 62, 81, 87, 89, 96}.
    """
    targets = list(range(target_min, target_max + 1))
    random.Random(seed).shuffle(targets)
    return targets[: int(fraction * len(targets))]


def sample_problems(
    n: int,
    seed: int,
    num_count: int = 4,
    num_min: int = 1,
    num_max: int = 99,
    targets: Sequence[int] | None = None,
    max_tries: int = 100_000,
) -> list[tuple[list[int], int]]:
    """``n`` solvable problems ``(nums, target)`` drawn with ``random.Random(seed)``.

    Per problem: ``target = rng.choice(targets)`` (default: 10..100), then
    ``nums = [rng.randint(num_min, num_max) for _ in range(num_count)]`` redrawn (target fixed)
    until :func:`solve` finds a solution. Raises ValueError after ``max_tries`` draws for one
    problem (some targets cannot be made from small ranges, e.g. 97 from three numbers in 1..9).
    """
    rng = random.Random(seed)
    pool = list(range(10, 101)) if targets is None else list(targets)
    if not pool:
        raise ValueError("sample_problems: empty target set")
    problems = []
    for _ in range(n):
        target = rng.choice(pool)
        for _ in range(max_tries):
            nums = [rng.randint(num_min, num_max) for _ in range(num_count)]
            if solve(nums, target) is not None:
                break
        else:
            raise ValueError(
                f"sample_problems: no solvable draw for target {target} with {num_count} numbers in "
                f"{num_min}..{num_max} after {max_tries} tries"
            )
        problems.append((nums, target))
    return problems


def sos_mix_traces(problems: Sequence[tuple[Sequence[int], int]], seed: int) -> list[str]:
    """SoS training-mix traces, one per problem, drawn with ``random.Random(seed)``.

    Per problem, in the original generator's draw order: heuristic = choice(sum, mult), then
    strategy = choice(dfs, bfs); DFS uses threshold = target; BFS draws beam = choice(1..5) and
    then its shuffles from the same generator.
    """
    rng = random.Random(seed)
    out = []
    for nums, target in problems:
        heuristic = rng.choice(("sum", "mult"))
        strategy = rng.choice(("dfs", "bfs"))
        if strategy == "dfs":
            out.append(dfs_trace(nums, target, heuristic, target))
        else:
            beam = rng.choice((1, 2, 3, 4, 5))
            out.append(bfs_trace(nums, target, heuristic, beam, rng=rng)[0])
    return out
