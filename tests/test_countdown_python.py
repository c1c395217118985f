"""The plain-Python Countdown oracle against the original generator's golden traces."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from sos_jax.search import countdown_python as cp

GOLDEN = [json.loads(line) for line in (Path(__file__).parent / "data" / "countdown_examples.jsonl").open()]
BFS_GOLDEN = [r for r in GOLDEN if r["strategy"] == "bfs"]
PROBLEMS = {r["problem_id"]: (r["nums"], r["target"], r["solution"]) for r in GOLDEN}

_OP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")


def _ids(records):
    return [f"id{r['id']}-{r['strategy']}-{r['heuristic']}-b{r['beam_size']}" for r in records]


def _check_solution(nums, target, ops):
    """Independent strict verifier: every operation right, operands available (each used once),
    all numbers used, final value the target. Returns the list of states after each operation."""
    pool = Counter(nums)
    states = []
    for op in ops:
        m = _OP.fullmatch(op)
        assert m, op
        a, sym, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        expected = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b and a % b == 0 else None}[sym]
        assert expected == c and c >= 0, op
        pool[a] -= 1
        pool[b] -= 1
        assert pool[a] >= 0 and pool[b] >= 0, f"{op}: operand not available"
        pool[c] += 1
        states.append(+pool)
    assert +pool == Counter([target]), f"ends with {+pool}, not [{target}]"
    return states


def _ot_differs_by_value(nums, solution):
    """True when the original's by-value removal gives a different list than removing one
    occurrence, at some step of ``solution`` (the original's duplicate bug)."""
    ours, orig = list(nums), list(nums)
    for op in solution:
        a, _, b, c = _OP.fullmatch(op).groups()
        a, b, c = int(a), int(b), int(c)
        ours.remove(a)
        ours.remove(b)
        ours.append(c)
        orig = [n for n in orig if n != a and n != b] + [c]
        if ours != orig:
            return True
    return False


# ------------------------------------------------------------------------------------ traces


@pytest.mark.parametrize("record", GOLDEN, ids=_ids(GOLDEN))
def test_trace_matches_golden(record):
    assert cp.trace(record) == record["trace"]


@pytest.mark.parametrize("record", BFS_GOLDEN, ids=_ids(BFS_GOLDEN))
def test_bfs_replay_uses_every_perm_and_rng_reproduces(record):
    args = (record["nums"], record["target"], record["heuristic"], record["beam_size"])
    text, used = cp.bfs_trace(*args, perms=record["bfs_shuffle_perms"])
    assert text == record["trace"]
    assert used == record["bfs_shuffle_perms"]
    # The original seeded Python's random with bfs_seed before each BFS: drawing from a
    # Random(bfs_seed) must give the same shuffles.
    text2, drawn = cp.bfs_trace(*args, rng=random.Random(record["bfs_seed"]))
    assert drawn == record["bfs_shuffle_perms"]
    assert text2 == record["trace"]


def test_bfs_rejects_wrong_perms():
    r = next(r for r in BFS_GOLDEN if r["beam_size"] == 3)
    args = (r["nums"], r["target"], r["heuristic"], 3)
    with pytest.raises(ValueError):
        cp.bfs_trace(*args, perms=r["bfs_shuffle_perms"][:1])
    with pytest.raises(ValueError):
        cp.bfs_trace(*args, perms=[[0, 0, 1]] + r["bfs_shuffle_perms"][1:])
    with pytest.raises(ValueError):
        cp.bfs_trace(*args)


def test_dfs_threshold_prunes():
    full = cp.dfs_trace([45, 3, 60, 46], 51, "sum", None)
    pruned = cp.dfs_trace([45, 3, 60, 46], 51, "sum", 51)
    assert full != pruned
    assert full.count("Exploring Operation") > pruned.count("Exploring Operation")


def test_unsolvable_traces_end_as_specified():
    dfs = cp.dfs_trace([1, 1, 1, 1], 10, "sum", 10)
    assert "Goal Reached" not in dfs and not dfs.endswith("No solution found.") and dfs.endswith("\n")
    bfs, _ = cp.bfs_trace([1, 1, 1, 1], 10, "mult", 2, rng=random.Random(0))
    assert bfs.endswith("\nNo solution found.") and "Goal Reached" not in bfs


# ------------------------------------------------------------------------- small functions


def test_combine_order_and_text():
    assert cp.combine(3, 12) == [(15, "3+12=15"), (36, "3*12=36"), (9, "12-3=9"), (4, "12/3=4")]
    assert cp.combine(12, 5) == [(17, "12+5=17"), (60, "12*5=60"), (7, "12-5=7")]
    assert cp.combine(7, 7) == [(14, "7+7=14"), (49, "7*7=49"), (0, "7-7=0"), (1, "7/7=1")]
    assert cp.combine(0, 5) == [(5, "0+5=5"), (0, "0*5=0"), (5, "5-0=5")]
    assert cp.combine(5, 0) == [(5, "5+0=5"), (0, "5*0=0"), (5, "5-0=5")]


def test_heuristics_exact():
    assert cp.sum_heuristic([45, 3, 60, 46], 51) == 17
    assert cp.sum_heuristic([48, 14], 51) == Fraction(40, 2)
    assert cp.sum_heuristic([60, 46, 48], 51) == Fraction(17, 3)
    # factors of 51 in 2..51: 3, 17, 51
    assert cp.mult_heuristic([45], 51) == 6
    assert cp.mult_heuristic([1, 10, 17, 200], 51) == 2 + 7 + 0 + 149
    # factors of 24 in 2..24: 2, 3, 4, 6, 8, 12, 24 (1 is not one)
    assert cp.mult_heuristic([0, 1, 10, 18, 30], 24) == 2 + 1 + 2 + 6 + 6


# ----------------------------------------------------------------------------- optimal path


@pytest.mark.parametrize("record", GOLDEN, ids=_ids(GOLDEN))
def test_ot_trace(record):
    nums, target, solution = record["nums"], record["target"], record["solution"]
    ours = cp.ot_trace(nums, target, solution)
    if not _ot_differs_by_value(nums, solution):
        assert ours == record["optimal_path"]
        return
    # The original deleted every copy of a repeated operand: its text is wrong; ours must be a
    # valid solution, written line by line.
    assert ours != record["optimal_path"]
    states = _check_solution(nums, target, solution)
    lines = ours.splitlines()
    assert lines[0] == f"Current State: {target}:{nums}, Operations: []"
    explored = [re.fullmatch(r"Exploring Operation: (.*), Resulting Numbers: \[(.*)\]", ln) for ln in lines]
    explored = [m for m in explored if m]
    assert [m[1] for m in explored] == solution
    for m, state in zip(explored, states):
        assert Counter(int(x) for x in m[2].split(", ")) == state
    assert lines[-1] == f"{target},{target} equal: Goal Reached"
    assert sum("Goal Reached" in ln for ln in lines) == 1


def test_ot_golden_has_both_cases():
    buggy = {pid for pid, (nums, _, sol) in PROBLEMS.items() if _ot_differs_by_value(nums, sol)}
    assert 0 < len(buggy) < len(PROBLEMS)


def test_ot_trace_rejects_invalid_solutions():
    with pytest.raises(ValueError):
        cp.ot_trace([1, 2, 3], 6, ["1+2=3", "3*3=9"])  # wrong final value
    with pytest.raises(ValueError):
        cp.ot_trace([1, 2, 3], 9, ["1+2=3", "3+3=6", "6+3=9"])  # reuses a 3
    with pytest.raises(ValueError):
        cp.ot_trace([1, 2, 3], 6, ["1+2=4", "4+2=6"])  # wrong arithmetic


# ------------------------------------------------------------------------- solver and splits


@pytest.mark.parametrize("pid", sorted(PROBLEMS))
def test_solve_golden_problems(pid):
    nums, target, _ = PROBLEMS[pid]
    solution = cp.solve(nums, target)
    assert solution is not None
    _check_solution(nums, target, solution)


def test_solve_unsolvable():
    # The largest value four ones can make is 4.
    assert cp.solve([1, 1, 1, 1], 10) is None
    assert cp.solve([2, 3], 7) is None
    assert cp.solve([1, 1, 1, 1], 4) == ["1+1=2", "1+1=2", "2+2=4"]


def test_held_out_targets():
    assert cp.held_out_targets(4) == [81, 96, 89, 39, 41, 62, 57, 14, 87]
    assert set(cp.held_out_targets()) == {14, 39, 41, 57, 62, 81, 87, 89, 96}
    assert len(cp.held_out_targets(0, 10, 100, 0.2)) == 18
    assert cp.held_out_targets(5) != cp.held_out_targets(4)
    seen_in_split = {r["target"]: r["target_seen_in_seed4_split"] for r in GOLDEN}
    held = set(cp.held_out_targets(4))
    assert all(seen == (t not in held) for t, seen in seen_in_split.items())


def test_sample_problems():
    targets = [14, 39, 41]
    problems = cp.sample_problems(12, seed=3, num_count=4, targets=targets)
    assert len(problems) == 12
    for nums, target in problems:
        assert target in targets
        assert len(nums) == 4 and all(1 <= n <= 99 for n in nums)
        _check_solution(nums, target, cp.solve(nums, target))
    assert cp.sample_problems(12, seed=3, targets=targets) == problems
    assert cp.sample_problems(12, seed=4, targets=targets) != problems
    small = cp.sample_problems(5, seed=0, num_count=3, num_min=1, num_max=9, targets=range(10, 31))
    for nums, target in small:
        assert len(nums) == 3 and all(1 <= n <= 9 for n in nums) and 10 <= target <= 30
        assert cp.solve(nums, target) is not None
    # 97 is prime and above 9 * 9 + 9: three numbers in 1..9 cannot make it.
    with pytest.raises(ValueError, match="no solvable draw"):
        cp.sample_problems(1, seed=0, num_count=3, num_min=1, num_max=9, targets=[97], max_tries=200)


def test_sos_mix_traces():
    problems = cp.sample_problems(40, seed=1)
    traces = cp.sos_mix_traces(problems, seed=7)
    assert traces == cp.sos_mix_traces(problems, seed=7)
    assert len(traces) == 40
    n_dfs = 0
    for (nums, target), text in zip(problems, traces):
        assert text.startswith(f"Current State: {target}:{nums}, Operations: []\n")
        if text in (cp.dfs_trace(nums, target, h, target) for h in ("sum", "mult")):
            n_dfs += 1
    assert 5 <= n_dfs <= 35
