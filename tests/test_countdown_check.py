"""The pure-Python trace checker: golden verdicts, hand-made cases, and fuzzing."""

from __future__ import annotations

import re

import pytest
from countdown_mutations import ROWS, mutated_traces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sos_jax.envs import countdown_check as cc
from sos_jax.envs.countdown_check import REASONS, TraceVerdict, check_trace, max_nodes


def reason_code(verdict: TraceVerdict) -> int:
    return REASONS.index(verdict.reason)


def ot_text(nums, target, ops, goal=None):
    """An optimal-path style text for ``ops`` (each "a<sym>b=c"), with its goal line."""
    lines = [f"Current State: {target}:{list(nums)}, Operations: []"]
    done = []
    for k, op in enumerate(ops):
        lines.append(f"Exploring Operation: {op}, Resulting Numbers: [0]")
        done.append(op)
        if k < len(ops) - 1:
            lines.append(f"Generated Node #{k + 2}: [0] from Operation: {op}")
            lines.append(f"Current State: {target}:[0], Operations: {done!r}")
    x = ops[-1].split("=")[1]
    lines.append(goal if goal is not None else f"{x},{target} equal: Goal Reached")
    return "\n".join(lines) + "\n"


def test_max_nodes():
    assert [max_nodes(n) for n in (2, 3, 4, 5)] == [4, 48, 1152, 46080]


@pytest.mark.parametrize("strip", [False, True])
def test_golden_traces(strip):
    for row in ROWS:
        text = row["trace"].strip() if strip else row["trace"]
        v = check_trace(text, row["nums"], row["target"])
        assert v.solved == row["solved"], row["id"]
        assert [v.lax_rating, v.lax_reason] == row["metric_fn"], row["id"]
        assert v.lax_solved == row["solved"]
        assert v.rating == (row["generator_rating"] if row["solved"] else 0.0)
        assert v.reason == ("solved" if row["solved"] else "no goal line")


def test_golden_optimal_paths():
    buggy = 0
    for row in ROWS:
        v = check_trace(row["optimal_path"], row["nums"], row["target"])
        assert [v.lax_rating, v.lax_reason] == row["optimal_path_metric_fn"], row["id"]
        # The original OT writer sometimes removes both copies of a repeated number and then
        # prints a premature goal line: both verdicts reject those, for different reasons.
        assert v.solved == v.lax_solved
        if not v.solved:
            buggy += 1
            assert len(set(row["nums"])) < len(row["nums"])
            assert v.reason == REASONS[4]
        else:
            assert v.rating == v.lax_rating == 1 - 4 / 1152
    assert buggy == 12


NUMS, TARGET = [1, 2, 3, 4], 24


def test_valid_solution():
    v = check_trace(ot_text(NUMS, TARGET, ["1*2=2", "2*3=6", "6*4=24"]), NUMS, TARGET)
    assert v.solved and v.lax_solved and v.reason == "solved" and v.lax_reason == "Valid path."
    assert v.rating == v.lax_rating == 1 - 4 / 1152


def test_reuse_fails_strict_passes_lax():
    v = check_trace(ot_text(NUMS, TARGET, ["3*4=12", "4-2=2", "12*2=24"]), NUMS, TARGET)
    assert not v.solved and v.reason == REASONS[6] and v.rating == 0.0
    assert v.lax_solved and v.lax_rating > 0


def test_leftover_fails_strict_passes_lax():
    v = check_trace(ot_text(NUMS, TARGET, ["2*3=6", "6*4=24"]), NUMS, TARGET)
    assert not v.solved and v.reason == REASONS[4]
    assert v.lax_solved


def test_wrong_arithmetic_fails_both():
    v = check_trace(ot_text(NUMS, TARGET, ["1*2=2", "2*3=7", "7*4=24"]), NUMS, TARGET)
    assert not v.solved and v.reason == REASONS[5]
    assert not v.lax_solved and v.lax_reason == "Invalid operation: 2*3=7"
    v = check_trace(ot_text([7, 2, 12], 15, ["7/2=3", "12+3=15"]), [7, 2, 12], 15)
    assert v.reason == REASONS[5] and v.lax_reason == "Invalid operation: 7/2=3"


def test_final_result_not_target():
    v = check_trace(ot_text(NUMS, TARGET, ["1*2=2", "2*3=6", "6+4=10"]), NUMS, TARGET)
    assert v.reason == REASONS[7]
    assert v.lax_reason == "Invalid path: Final operation does not result in target."


def test_goal_line_must_match():
    ops = ["1*2=2", "2*3=6", "6*4=24"]
    v = check_trace(ot_text(NUMS, TARGET, ops, goal="23,24 equal: Goal Reached"), NUMS, TARGET)
    assert v.reason == REASONS[8] and v.lax_solved  # the original never reads the goal line's numbers
    v = check_trace(ot_text(NUMS, TARGET, ops, goal="024,24 equal: Goal Reached"), NUMS, TARGET)
    assert v.reason == REASONS[8]


def test_leading_zeros_fail_strict():
    text = ot_text(NUMS, TARGET, ["1*2=2", "2*3=6", "6*4=024"], goal="24,24 equal: Goal Reached")
    v = check_trace(text, NUMS, TARGET)
    assert v.reason == REASONS[3] and v.lax_solved  # int("024") == 24 for the original


def test_first_goal_line_decides():
    good = ot_text(NUMS, TARGET, ["1*2=2", "2*3=6", "6*4=24"])
    bad = ot_text(NUMS, TARGET, ["1*2=2", "2*3=6", "6*4=25"], goal="25,24 equal: Goal Reached")
    assert not check_trace(bad + good, NUMS, TARGET).solved
    assert check_trace(good + bad, NUMS, TARGET).solved
    # "Goal Reached" without the "<x>,<t>" prefix is not a goal line.
    v = check_trace("24 equal: Goal Reached\n" + good, NUMS, TARGET)
    assert v.solved and v.lax_solved


def test_two_numbers():
    # The original splits an empty Operations list into one empty operation and rejects it.
    v = check_trace(ot_text([4, 6], 24, ["4*6=24"]), [4, 6], 24)
    assert v.solved and v.rating == 1 - 2 / 4
    assert v.lax_reason == "Could not split operation into lhs, rhs"


def test_rating_counts_every_exploring_operation():
    text = ot_text(NUMS, TARGET, ["1*2=2", "2*3=6", "6*4=24"]) + "Exploring Operation junk\n"
    assert check_trace(text, NUMS, TARGET).rating == 1 - 5 / 1152


@pytest.mark.parametrize(
    "text, lax_reason",
    [
        ("", "No goal reached statement found."),
        ("24,24 equal: Goal Reached", "No operations found leading to the goal."),
        (
            "Exploring Operation: 6*4=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached",
            "Invalid path: No current state found before the goal.",
        ),
        (
            "Current State: 24:[1, 2, 3, 4], Operations: ['1*2=2', '2*3=6']\n"
            "Exploring Operation: 6*4=25, Resulting Numbers: [24]\n24,24 equal: Goal Reached",
            "Invalid path: Final operation does not result in target.",
        ),
        (
            "Current State: 24:[1, 2, 3, 4], Operations: ['01*2=2', '2*3=6']\n"
            "Exploring Operation: 6*4=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached",
            "Error in evaluating operation 01*2=2: leading zeros in decimal integer literals are not "
            "permitted; use an 0o prefix for octal integers (<string>, line 1)",
        ),
        (
            "Current State: 24:[1, 2, 3, 4], Operations: ['1*2=2', '2*9=18']\n"
            "Exploring Operation: 6*4=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached",
            "Invalid operation: 2*9=18, number 9 not available in [1, 2, 3, 4, 2]",
        ),
        (
            "Current State: 24:[1, 2, 3, 4], Operations: ['1*2=2=2']\n"
            "Exploring Operation: 6*4=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached<|endoftext|>",
            "Could not split operation into lhs, rhs",
        ),
        (
            "Current State: 24:[1, 2, 3, 4], Operations: ['2/0=2']\n"
            "Exploring Operation: 6*4=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached",
            "Error in evaluating operation 2/0=2: division by zero",
        ),
    ],
)
def test_lax_messages(text, lax_reason):
    v = check_trace(text, NUMS, TARGET)
    assert v.lax_reason == lax_reason
    assert not v.solved


def test_hostile_numbers_and_characters():
    big = "9" * 5000
    for text in [
        f"Current State: 24:[1], Operations: ['{big}*2=2']\nExploring Operation: 6*4=24, Resulting Numbers: [24]\n"
        "24,24 equal: Goal Reached",
        f"Current State: 24:[1], Operations: ['1*2=2']\nExploring Operation: 6*4={big}, Resulting Numbers: [24]\n"
        "24,24 equal: Goal Reached",
        "Current State: 24:[1], Operations: ['9**9**9**9=1']\nExploring Operation: 6*4=24, Resulting Numbers: []\n"
        "24,24 equal: Goal Reached",
        "Current State: 24:[1], Operations: ['٣+1=4', '(((1)))=1', '__import__(1)=1']\n"
        "Exploring Operation: 6*4=24, Resulting Numbers: []\n٢٤,24 equal: Goal Reached",
        "Current State: 24:[1234567890], Operations: ['1234567890+1=1234567891']\n"
        "Exploring Operation: 1234567891-1234567867=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached",
    ]:
        v = check_trace(text, [1, 1234567890, 1234567867], TARGET)
        assert isinstance(v, TraceVerdict) and not v.solved


def check_consistent(v: TraceVerdict):
    assert isinstance(v, TraceVerdict)
    assert v.reason in REASONS and v.solved == (v.reason == "solved")
    assert v.lax_solved == (v.lax_reason == "Valid path.")
    assert 0.0 <= v.rating <= 1.0 and 0.0 <= v.lax_rating <= 1.0
    assert v.solved or v.rating == 0.0
    assert v.lax_solved or v.lax_rating == 0.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(), st.lists(st.integers(-(10**12), 10**12), max_size=7), st.integers(-(10**12), 10**12))
def test_arbitrary_text_never_raises(text, nums, target):
    check_consistent(check_trace(text, nums, target))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_traces())
def test_mutated_traces_never_raise(case):
    text, nums, target = case
    v = check_trace(text, nums, target)
    check_consistent(v)
    if "Goal Reached" not in text:
        assert not v.solved and not v.lax_solved


# The original's regexes, which countdown_check matches by hand in linear time.
ORIGINAL_GOAL = re.compile(r"\d+,\d+ equal: Goal Reached")
STRICT_GOAL = re.compile(r"([0-9]+),([0-9]+) equal: Goal Reached")
ORIGINAL_EXPLORE = re.compile(r"Exploring Operation: (.*?=\d+), Resulting Numbers: \[(.*?)\]")
ORIGINAL_STATE = re.compile(r"Current State: \d+:\[.*?\], Operations: \[(.*?)\]")
FRAGMENTS = [
    "Exploring Operation: ", ", Resulting Numbers: [", "Current State: ", "], Operations: [",
    " equal: Goal Reached", ":[", "]", "[", "=", ",", "1", "23", "\u0663", "\n", "x", "'", " ",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_hand_matchers_equal_the_original_regexes(text):
    m, goal = ORIGINAL_GOAL.search(text), cc._first_goal(text, str.isdecimal)
    assert (goal and goal[0]) == (m and m.start())
    m, goal = STRICT_GOAL.search(text), cc._first_goal(text, cc._is_ascii_digit)
    assert goal == (m and (m.start(), *m.groups()))
    found = ORIGINAL_EXPLORE.findall(text)
    assert cc._lax_last_explore(text) == (found[-1][0] if found else None)
    found = ORIGINAL_STATE.findall(text)
    assert cc._lax_last_state(text) == (found[-1] if found else None)


def test_long_lines_are_fast():
    # The original's regexes take seconds to minutes on these; the hand matchers are linear.
    for text in [
        "1" * 200_000 + " x",
        "Exploring Operation: " * 20_000 + "1,1 equal: Goal Reached",
        "Exploring Operation: 1+1=2, Resulting Numbers: [2]\n"
        + "Current State: 1:[" * 20_000
        + "\n1,1 equal: Goal Reached",
    ]:
        check_consistent(check_trace(text, [1, 2], 2))
