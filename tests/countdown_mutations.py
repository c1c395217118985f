"""Shared test helpers: the golden Countdown rows and a strategy that mutates their traces."""

from __future__ import annotations

import json
import pathlib

from hypothesis import strategies as st

ROWS = [
    json.loads(line)
    for line in (pathlib.Path(__file__).parent / "data" / "countdown_examples.jsonl").read_text().splitlines()
]
OPERATORS = "+-*/"
KINDS = ["delete", "duplicate", "swap", "digit", "operator", "truncate", "goal", "splice"]
DIGITS = ["", "0", "1", "3", "7", "99", "1234567890"]


@st.composite
def mutated_traces(draw):
    """(text, nums, target): a window of golden lines around a goal line, mutated a few times.

    A golden trace or optimal path is cut to at most 8 lines before its goal line (a random line
    when it has none) and 1-4 lines from it on, then mutated 0-4 times: lines deleted, duplicated,
    swapped, truncated, spliced in from another trace, a digit or operator replaced, or a
    "No Solution" line turned into a goal line. The text is stripped half the time.
    """
    row = draw(st.sampled_from(ROWS))
    lines = draw(st.sampled_from([row["trace"], row["optimal_path"]])).splitlines(keepends=True)
    goal = next((i for i, line in enumerate(lines) if "Goal Reached" in line), None)
    if goal is None:
        goal = draw(st.integers(0, len(lines) - 1))
    lines = lines[max(0, goal - draw(st.integers(0, 8))) : goal + draw(st.integers(1, 4))]
    for _ in range(draw(st.integers(0, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        kind = draw(st.sampled_from(KINDS))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], line
        elif kind == "digit" and any(c.isdigit() for c in line):
            j = draw(st.sampled_from([j for j, c in enumerate(line) if c.isdigit()]))
            lines[i] = line[:j] + draw(st.sampled_from(DIGITS)) + line[j + 1 :]
        elif kind == "operator" and any(c in OPERATORS for c in line):
            j = draw(st.sampled_from([j for j, c in enumerate(line) if c in OPERATORS]))
            lines[i] = line[:j] + draw(st.sampled_from(OPERATORS)) + line[j + 1 :]
        elif kind == "truncate":
            lines[i] = line[: draw(st.integers(0, len(line)))]
            del lines[i + 1 :]
        elif kind == "goal" and "unequal: No Solution" in line:
            x = draw(st.sampled_from([line.split(",")[0], str(row["target"])]))
            lines[i] = f"{x},{row['target']} equal: Goal Reached\n"
        elif kind == "splice":
            lines.insert(i, draw(st.sampled_from(draw(st.sampled_from(ROWS))["trace"].splitlines(keepends=True))))
    text = "".join(lines)
    return (text.strip() if draw(st.booleans()) else text), row["nums"], row["target"]
