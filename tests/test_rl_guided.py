"""Guided-ReST trace editing (sos_jax.rl.guided) on golden traces, hand-made cases and any text."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sos_jax.envs.countdown_check import check_trace
from sos_jax.eval.countdown_format import malformed
from sos_jax.rl.guided import guide, guide_edit, optimal_nodes, solved_depth
from sos_jax.search import countdown_python as cp

GOLDEN = [json.loads(line) for line in (Path(__file__).parent / "data" / "countdown_examples.jsonl").open()]
SOLUTIONS = {r["problem_id"]: cp.solve(r["nums"], r["target"]) for r in GOLDEN}
PROBLEMS = (
    [(r["nums"], r["target"]) for r in GOLDEN if r["id"] % 12 == 0]
    + cp.sample_problems(6, seed=1, num_count=2)
    + cp.sample_problems(6, seed=2, num_count=3, num_max=30)
    + cp.sample_problems(6, seed=3, num_count=5, num_max=20)
)


def _ids(records):
    return [f"id{r['id']}-{r['strategy']}-{r['heuristic']}-b{r['beam_size']}" for r in records]


def _root(nums, target):
    return f"Current State: {target}:{list(nums)}, Operations: []\n"


def _solve_by_guiding(text, nums, target, solution, rng):
    """Guide until the strict verifier accepts; returns the text and the number of calls."""
    calls = 0
    while not check_trace(text, nums, target).solved:
        text = guide(text, nums, target, solution, rng)
        calls += 1
        assert calls <= len(nums), f"not solved after {calls} guided steps:\n{text}"
    return text, calls


def _check_edit(text, nums, target, solution, seed, grammar=True):
    """The contract of one edit of ``text`` (see the module docstring of sos_jax.rl.guided)."""
    before = solved_depth(text, nums, target, solution)
    edit = guide_edit(text, nums, target, solution, random.Random(seed))
    out = guide(text, nums, target, solution, random.Random(seed))
    root = _root(nums, target)
    assert out == text[: edit.keep] + edit.added
    assert out.startswith(root) and out.endswith("\n")
    assert edit.keep == 0 or (edit.keep <= len(text) and text[edit.keep - 1] == "\n")
    assert edit.added.endswith("\n") and edit.added.count("\n") >= 1
    assert not malformed(edit.added)
    if grammar:
        assert not malformed(out, cut=True)
    if edit.case == "c":
        assert before == -1 and out == root
        assert solved_depth(out, nums, target, solution) == 0
    else:
        assert before >= 0
        if edit.added.endswith(" equal: Goal Reached\n"):
            assert edit.case == "b" and before == len(solution) - 1
            verdict = check_trace(out, nums, target)
            assert verdict.solved and verdict.lax_solved, verdict
        else:
            assert solved_depth(out, nums, target, solution) == before + 1
            assert not check_trace(out, nums, target).solved
        if edit.case == "a":
            assert edit.keep == text.rfind("\n") + 1 or " equal: Goal Reached" in text
    done, _ = _solve_by_guiding(out, nums, target, solution, random.Random(seed + 1))
    if grammar:
        assert not malformed(done)
    return edit


def _cuts(text, rng):
    """Cut points: the first k lines, some line boundaries, some mid-line points, the whole text."""
    bounds = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    points = set(bounds[:6]) | {len(text)}
    points |= set(rng.sample(bounds, min(12, len(bounds))))
    points |= {rng.randrange(len(text) + 1) for _ in range(8)}
    return sorted(points)


@pytest.mark.parametrize("record", GOLDEN, ids=_ids(GOLDEN))
def test_golden_cuts(record):
    nums, target, text = record["nums"], record["target"], record["trace"]
    solution = SOLUTIONS[record["problem_id"]]
    rng = random.Random(record["id"])
    cases = set()
    for cut in _cuts(text, rng):
        cases.add(_check_edit(text[:cut], nums, target, solution, seed=cut).case)
    assert "b" in cases


def test_golden_cases_all_occur():
    """Across golden cuts every case occurs, (a) included (BFS leaves generated nodes unexplored);
    each (a) edit meets the full contract."""
    seen = {}
    for record in GOLDEN:
        nums, target, text = record["nums"], record["target"], record["trace"]
        solution = SOLUTIONS[record["problem_id"]]
        for cut in [0] + [i + 1 for i, c in enumerate(text) if c == "\n"][:40]:
            case = guide_edit(text[:cut], nums, target, solution, random.Random(0)).case
            seen[case] = seen.get(case, 0) + 1
            if case == "a":
                _check_edit(text[:cut], nums, target, solution, seed=cut)
    assert set(seen) == {"a", "b", "c"} and seen["a"] >= 20, seen


@pytest.mark.parametrize("nums,target", PROBLEMS)
def test_from_root_and_from_garbage(nums, target):
    solution = cp.solve(nums, target)
    root = _root(nums, target)
    done, calls = _solve_by_guiding(root, nums, target, solution, random.Random(0))
    assert calls == len(nums) - 1
    assert done.startswith(root) and not malformed(done)
    assert done.count("Exploring Operation") == len(nums) - 1
    for garbage in ["", "hello", "hello\nworld\n", "Current State: 1:[1], Operations: []\n", root[:-1], "\n" + root]:
        edit = _check_edit(garbage, nums, target, solution, seed=3, grammar=False)
        assert edit.case == "c"
        _, calls = _solve_by_guiding(garbage, nums, target, solution, random.Random(0))
        assert calls == len(nums)


# A three-number problem: [2, 3, 4] -> 20 by 2+3=5, 4*5=20.
NUMS, TARGET = [2, 3, 4], 20
SOLUTION = ["2+3=5", "4*5=20"]
ROOT = "Current State: 20:[2, 3, 4], Operations: []\n"
NODE1 = "Current State: 20:[4, 5], Operations: ['2+3=5']\n"


class _Pick(random.Random):
    """A Random whose randrange always answers ``pick``."""

    def __init__(self, pick):
        super().__init__(0)
        self.pick = pick

    def randrange(self, *args, **kwargs):
        return self.pick


def test_solution_is_solves_and_nodes():
    assert cp.solve(NUMS, TARGET) == SOLUTION
    assert optimal_nodes(NUMS, TARGET, SOLUTION) == ((ROOT[:-1],), (NODE1[:-1],))


def test_case_a_generated_not_explored():
    text = (
        ROOT
        + "Exploring Operation: 2*3=6, Resulting Numbers: [4, 6]\n"
        "Generated Node #0,0: 20:[4, 6] Operation: 2*3=6\n"
        "Exploring Operation: 2+3=5, Resulting Numbers: [4, 5]\n"
        "Generated Node #0,1: 20:[4, 5] Operation: 2+3=5\n"
        "Moving to Node #0,0\n"
        "Current State: 20:[4, 6], Operations: ['2*3=6']\n"
        "Exploring Operation: 4+6=10, Resulting Numbers: [10]\n"
        "10,20 unequal: No Solution\n"
        "Exploring Operation: 4*6=2"
    )
    expected = (
        ROOT
        + "Exploring Operation: 2*3=6, Resulting Numbers: [4, 6]\n"
        "Generated Node #0,0: 20:[4, 6] Operation: 2*3=6\n"
        "Exploring Operation: 2+3=5, Resulting Numbers: [4, 5]\n"
        "Generated Node #0,1: 20:[4, 5] Operation: 2+3=5\n"
        "Moving to Node #0,0\n"
        "Current State: 20:[4, 6], Operations: ['2*3=6']\n"
        "Exploring Operation: 4+6=10, Resulting Numbers: [10]\n"
        "10,20 unequal: No Solution\n"
        "Moving to Node #0,1\n"
        "Current State: 20:[4, 5], Operations: ['2+3=5']\n"
    )
    assert solved_depth(text, NUMS, TARGET, SOLUTION) == 0
    assert guide_edit(text, NUMS, TARGET, SOLUTION, random.Random(0)).case == "a"
    assert guide(text, NUMS, TARGET, SOLUTION, random.Random(0)) == expected
    # Node 1 has no explored child: its goal step is appended.
    assert guide(expected, NUMS, TARGET, SOLUTION, random.Random(0)) == expected + (
        "Exploring Operation: 4*5=20, Resulting Numbers: [20]\n20,20 equal: Goal Reached\n"
    )
    goal = "Exploring Operation: 4*5=20, Resulting Numbers: [20]\n20,20 equal: Goal Reached\n"
    assert check_trace(expected + goal, NUMS, TARGET).solved


# A DFS-style trace that explored two wrong children of the root.
DFS_TEXT = (
    ROOT
    + "Exploring Operation: 3+4=7, Resulting Numbers: [2, 7]\n"
    "Generated Node #0,0: 20:[2, 7] Operation: 3+4=7\n"
    "Moving to Node #0,0\n"
    "Current State: 20:[2, 7], Operations: ['3+4=7']\n"
    "Exploring Operation: 2+7=9, Resulting Numbers: [9]\n"
    "9,20 unequal: No Solution\n"
    "Moving to Node #0\n"
    + ROOT
    + "Exploring Operation: 2*4=8, Resulting Numbers: [3, 8]\n"
    "Generated Node #0,1: 20:[3, 8] Operation: 2*4=8\n"
    "Moving to Node #0,1\n"
    "Current State: 20:[3, 8], Operations: ['2*4=8']\n"
    "Exploring Operation: 3+8=11, Resulting Numbers: [11]\n"
    "11,20 unequal: No Sol"
)
DFS_EXPECTED = [
    ROOT
    + "Exploring Operation: 2+3=5, Resulting Numbers: [4, 5]\n"
    "Generated Node #0,0: 20:[4, 5] Operation: 2+3=5\n"
    "Moving to Node #0,0\n"
    "Current State: 20:[4, 5], Operations: ['2+3=5']\n",
    ROOT
    + "Exploring Operation: 3+4=7, Resulting Numbers: [2, 7]\n"
    "Generated Node #0,0: 20:[2, 7] Operation: 3+4=7\n"
    "Moving to Node #0,0\n"
    "Current State: 20:[2, 7], Operations: ['3+4=7']\n"
    "Exploring Operation: 2+7=9, Resulting Numbers: [9]\n"
    "9,20 unequal: No Solution\n"
    "Moving to Node #0\n"
    + ROOT
    + "Exploring Operation: 2+3=5, Resulting Numbers: [4, 5]\n"
    "Generated Node #0,1: 20:[4, 5] Operation: 2+3=5\n"
    "Moving to Node #0,1\n"
    "Current State: 20:[4, 5], Operations: ['2+3=5']\n",
]


def test_case_b_replaces_an_explored_child():
    assert solved_depth(DFS_TEXT, NUMS, TARGET, SOLUTION) == 0
    for pick, expected in enumerate(DFS_EXPECTED):
        edit = guide_edit(DFS_TEXT, NUMS, TARGET, SOLUTION, _Pick(pick))
        assert edit.case == "b"
        assert guide(DFS_TEXT, NUMS, TARGET, SOLUTION, _Pick(pick)) == expected
    outs = {guide(DFS_TEXT, NUMS, TARGET, SOLUTION, random.Random(seed)) for seed in range(30)}
    assert outs == set(DFS_EXPECTED)


def test_case_b_last_step_and_no_children():
    text = (
        ROOT
        + "Exploring Operation: 2+3=5, Resulting Numbers: [4, 5]\n"
        "Generated Node #0,0: 20:[4, 5] Operation: 2+3=5\n"
        "Moving to Node #0,0\n"
        + NODE1
        + "Exploring Operation: 4+5=9, Resulting Numbers: [9]\n"
        "9,20 unequal: No Solution\n"
        "Moving to Node #0,0\n"
        + NODE1
        + "Exploring Operation: 5-4=1, Resulting Numbers: [1]\n"
        "1,20 unequal: No Solution\n"
    )
    goal = "Exploring Operation: 4*5=20, Resulting Numbers: [20]\n20,20 equal: Goal Reached\n"
    head = (
        ROOT
        + "Exploring Operation: 2+3=5, Resulting Numbers: [4, 5]\n"
        "Generated Node #0,0: 20:[4, 5] Operation: 2+3=5\n"
        "Moving to Node #0,0\n"
        + NODE1
    )
    assert guide(text, NUMS, TARGET, SOLUTION, _Pick(0)) == head + goal
    assert guide(text, NUMS, TARGET, SOLUTION, _Pick(1)) == (
        head
        + "Exploring Operation: 4+5=9, Resulting Numbers: [9]\n9,20 unequal: No Solution\nMoving to Node #0,0\n"
        + NODE1
        + goal
    )
    # No explored child: the step follows the deepest node's (last) line; what follows is dropped.
    assert guide(head + "garbage\n", NUMS, TARGET, SOLUTION, _Pick(0)) == head + goal
    assert guide(ROOT + "Moving to", NUMS, TARGET, SOLUTION, _Pick(0)) == DFS_EXPECTED[0]
    # A line holding "Current State: " ends X's block even mid-line (the verifier reads the last one).
    odd = head + "Exploring Operation: 4+5=9, Resulting Numbers: [9]\nx Current State: 20:[9]\n"
    odd += "Exploring Operation: 5-4=1, Resulting Numbers: [1]\n"
    assert guide(odd, NUMS, TARGET, SOLUTION, _Pick(0)) == head + goal
    assert {guide(odd, NUMS, TARGET, SOLUTION, random.Random(seed)) for seed in range(10)} == {head + goal}
    # A false goal line ends what is read.
    false_goal = ROOT + "Exploring Operation: 2*3=6, Resulting Numbers: [4, 6]\n6,20 equal: Goal Reached\n" + NODE1
    assert solved_depth(false_goal, NUMS, TARGET, SOLUTION) == 0
    assert guide(false_goal, NUMS, TARGET, SOLUTION, _Pick(0)) == DFS_EXPECTED[0]


def test_nested_ids_and_bfs_leaf_states():
    nums, target = [45, 3, 60, 46], 51
    solution = cp.solve(nums, target)
    assert solution == ["60-45=15", "15/3=5", "46+5=51"]
    text = (
        "Current State: 51:[45, 3, 60, 46], Operations: []\n"
        "Exploring Operation: 60-45=15, Resulting Numbers: [3, 46, 15]\n"
        "Generated Node #0,3: 51:[3, 46, 15] Operation: 60-45=15\n"
        "Moving to Node #0,3\n"
        "Current State: 51:[3, 46, 15], Operations: ['60-45=15']\n"
        "Exploring Operation: 3+46=49, Resulting Numbers: [15, 49]\n"
        "Generated Node #0,3,0: 51:[15, 49] Operation: 3+46=49\n"
        "Moving to Node #0,3,0\n"
        "Current State: 51:[15, 49], Operations: ['60-45=15', '3+46=49']\n"
    )
    assert solved_depth(text, nums, target, solution) == 1
    assert guide(text, nums, target, solution, _Pick(0)) == text[: text.index("Exploring Operation: 3+46")] + (
        "Exploring Operation: 15/3=5, Resulting Numbers: [46, 5]\n"
        "Generated Node #0,3,0: 51:[46, 5] Operation: 15/3=5\n"
        "Moving to Node #0,3,0\n"
        "Current State: 51:[46, 5], Operations: ['60-45=15', '15/3=5']\n"
    )
    # Without the Moving line above node 1, its id comes from its Generated Node line; without
    # that either, it is 0,0 (one zero per depth, plus the root's).
    no_move = text.replace("Moving to Node #0,3\n", "")
    assert guide(no_move, nums, target, solution, _Pick(0)).endswith(
        "Generated Node #0,3,0: 51:[46, 5] Operation: 15/3=5\nMoving to Node #0,3,0\n"
        "Current State: 51:[46, 5], Operations: ['60-45=15', '15/3=5']\n"
    )
    no_id = no_move.replace("Generated Node #0,3: 51:[3, 46, 15] Operation: 60-45=15\n", "")
    assert guide(no_id, nums, target, solution, _Pick(0)).endswith(
        "Generated Node #0,0,0: 51:[46, 5] Operation: 15/3=5\nMoving to Node #0,0,0\n"
        "Current State: 51:[46, 5], Operations: ['60-45=15', '15/3=5']\n"
    )
    # A popped BFS leaf is printed as a state; it is not a node, and the goal follows node 2.
    node2 = "Current State: 51:[46, 5], Operations: ['60-45=15', '15/3=5']\n"
    leaf = "Current State: 51:[51], Operations: ['60-45=15', '15/3=5', '46+5=51']\n"
    assert solved_depth(text + node2 + leaf, nums, target, solution) == 2
    assert guide(text + node2 + leaf, nums, target, solution, _Pick(0)) == (
        text + node2 + "Exploring Operation: 46+5=51, Resulting Numbers: [51]\n51,51 equal: Goal Reached\n"
    )


def test_repeated_numbers():
    nums, target, solution = [3, 5, 3, 2], 22, ["3+2=5", "5*5=25", "25-3=22"]
    nodes = optimal_nodes(nums, target, solution)
    assert nodes[1] == (
        "Current State: 22:[5, 3, 5], Operations: ['3+2=5']",
        "Current State: 22:[3, 5, 5], Operations: ['3+2=5']",
    )
    assert nodes[2] == ("Current State: 22:[3, 25], Operations: ['3+2=5', '5*5=25']",)
    text = _root(nums, target) + nodes[1][1] + "\n"
    assert solved_depth(text, nums, target, solution) == 1
    out, calls = _solve_by_guiding(text, nums, target, solution, random.Random(0))
    assert calls == 2 and not malformed(out)
    # Commuted operands match the pair that prints them the other way round.
    assert optimal_nodes(nums, target, ["2+3=5", "5*5=25", "25-3=22"]) == nodes


def test_invalid_solution_raises():
    for bad in [["2+3=6", "4*5=20"], ["2+3=5"], ["2+3=5", "4+5=9"], ["2+3=5", "4*5=20", "1+1=2"], ["x"]]:
        with pytest.raises(ValueError):
            guide(ROOT, NUMS, TARGET, bad, random.Random(0))
    with pytest.raises(ValueError):
        solved_depth("", [5], 5, [])


_TRICKY = [
    "junk Current State: 1:[2], Operations: []\n",
    "1,2 equal: Goal Reached\n",
    "Moving to Node #0,1\n",
    "Exploring Operation: 1+1=2, Resulting Numbers: [2]\n",
    "No solution found.",
    "\n",
]


def _problem_lines(nums, target):
    """Lines this problem's traces are made of: a DFS trace (cut to 60 lines), the optimal nodes and
    their Generated Node lines, and some odd ones."""
    solution = cp.solve(nums, target)
    dfs = cp.dfs_trace(nums, target, "sum", target).split("\n")[:60]
    nodes = optimal_nodes(nums, target, solution)
    generated = [
        f"Generated Node #0,{k}: {line[len('Current State: '):].split(', Operations')[0]} Operation: {op}"
        for k, (level, op) in enumerate(zip(nodes[1:], solution))
        for line in level
    ]
    return [line + "\n" for line in dfs + [n for level in nodes for n in level] + generated] + _TRICKY


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PROBLEMS), st.data(), st.integers(0, 2**32))
def test_any_text(problem, data, seed):
    nums, target = problem
    solution = cp.solve(nums, target)
    root = _root(nums, target)
    path, _ = _solve_by_guiding(root, nums, target, solution, random.Random(0))
    path_lines = [line + "\n" for line in path.split("\n")[1:-2]]  # neither the root nor the goal
    pieces = st.one_of(
        st.sampled_from(_problem_lines(nums, target)), st.sampled_from(path_lines), st.text(max_size=20)
    )
    text = data.draw(
        st.one_of(
            st.text(),
            st.text().map(lambda s: root + s),
            st.lists(pieces, max_size=40).map(lambda ls: root + "".join(ls)),
            st.lists(pieces, max_size=40).map("".join),
            st.lists(st.sampled_from(path_lines), max_size=12).map(lambda ls: root + "".join(ls)),
        )
    )
    depth = solved_depth(text, nums, target, solution)
    assert -1 <= depth <= len(solution) - 1
    edit = guide_edit(text, nums, target, solution, random.Random(seed))
    event(f"case {edit.case}, depth {depth}")
    out = text[: edit.keep] + edit.added
    assert out == guide(text, nums, target, solution, random.Random(seed))
    assert out.startswith(root) and out.endswith("\n")
    assert edit.keep == 0 or text[edit.keep - 1] == "\n"
    assert (edit.case == "c") == (depth == -1)
    if edit.case != "c" and not edit.added.endswith(" equal: Goal Reached\n"):
        assert solved_depth(out, nums, target, solution) == depth + 1
    _solve_by_guiding(out, nums, target, solution, random.Random(seed))
