"""Host-side evaluation: pass@k against brute force, summaries of hand-made grids, the Countdown
line grammar on golden traces and their mutations, and the text report and plots."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from countdown_mutations import ROWS
from hypothesis import given, settings
from hypothesis import strategies as st

from sos_jax.eval.countdown_format import LINE_KINDS, line_kind, malformed
from sos_jax.eval.metrics import DEFAULT_KS, summarize
from sos_jax.eval.passk import pass_at_k, pass_at_k_curve
from sos_jax.eval.report import format_report, plot_budgets, plot_pass_at_k

GOLDEN = [row[field] for row in ROWS for field in ("trace", "optimal_path")]


# pass@k


def test_pass_at_k_matches_brute_force():
    for n in range(1, 9):
        for k in range(1, n + 1):
            expected = []
            for c in range(n + 1):
                subsets = list(itertools.combinations(range(n), k))
                # samples 0..c-1 are the correct ones
                expected.append(sum(min(subset) < c for subset in subsets) / len(subsets))
            got = pass_at_k(n, np.arange(n + 1), k)
            assert got.dtype == np.float64 and got.shape == (n + 1,)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, err_msg=f"n={n} k={k}")


def test_pass_at_k_curve_hand_example():
    correct = np.array([[True, False, False], [True, True, True], [False, False, False]])
    curve = pass_at_k_curve(correct, (1, 2, 5))
    assert list(curve) == [1, 2]  # k=5 > N is dropped
    assert curve[1] == pytest.approx((1 / 3 + 1 + 0) / 3, abs=1e-12)
    assert curve[2] == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-12)  # 1 - C(2,2)/C(3,2) = 2/3
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k_curve(correct, (0, 1))


@pytest.mark.parametrize("n, c, k", [(4, [1], 0), (4, [1], 5), (4, [-1], 1), (4, [5], 1), (4, [1.5], 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, np.array(c), k)


@pytest.mark.parametrize("grid", [np.zeros((0, 4), bool), np.zeros((3, 0), bool), np.zeros(4, bool)])
def test_pass_at_k_curve_rejects_empty_or_flat_grids(grid):
    with pytest.raises(ValueError, match="pass_at_k_curve"):
        pass_at_k_curve(grid, DEFAULT_KS)


# summarize


def hand_grids():
    return dict(
        solved_PxN=np.array([[1, 0, 0, 1], [0, 0, 0, 0]], bool),
        lax_solved_PxN=np.array([[1, 1, 0, 1], [0, 0, 1, 0]], bool),
        tokens_PxN=np.array([[10, 20, 30, 40], [50, 60, 70, 80]]),
        malformed_PxN=np.array([[0, 0, 1, 0], [0, 0, 0, 0]], bool),
        cut_PxN=np.array([[0, 0, 0, 0], [0, 1, 1, 0]], bool),
    )


def test_summarize_hand_grid():
    summary = summarize(**hand_grids(), budgets=(16, 40, 100))
    assert json.loads(json.dumps(summary)) == summary
    assert summary.keys() == {"problems", "samples_per_problem", "accuracy", "lax_accuracy", "pass_at_k",
                              "accuracy_at_budget", "mean_tokens", "mean_tokens_solved", "malformed", "cut"}
    assert summary["problems"] == 2 and summary["samples_per_problem"] == 4
    assert summary["accuracy"] == 0.25 and summary["lax_accuracy"] == 0.5
    assert summary["pass_at_k"].keys() == {"1", "2", "4"}
    # problem 0 has 2 of 4 correct, problem 1 none: pass@2 = (1 - C(2,2)/C(4,2)) / 2 = (5/6) / 2
    assert summary["pass_at_k"]["1"] == pytest.approx(0.25, abs=1e-12)
    assert summary["pass_at_k"]["2"] == pytest.approx(5 / 12, abs=1e-12)
    assert summary["pass_at_k"]["4"] == pytest.approx(0.5, abs=1e-12)
    assert summary["accuracy_at_budget"] == {"16": 0.125, "40": 0.25, "100": 0.25}
    assert summary["mean_tokens"] == 45.0 and summary["mean_tokens_solved"] == 25.0
    assert summary["malformed"] == 0.125 and summary["cut"] == 0.25


def test_summarize_nothing_solved_and_bad_shapes():
    grids = hand_grids()
    grids["solved_PxN"] = np.zeros((2, 4), bool)
    summary = summarize(**grids, budgets=(), ks=(1, 8))
    assert summary["mean_tokens_solved"] is None
    assert summary["pass_at_k"] == {"1": 0.0} and summary["accuracy_at_budget"] == {}
    json.dumps(summary)
    grids["cut_PxN"] = np.zeros((2, 3), bool)
    with pytest.raises(ValueError, match="cut_PxN"):
        summarize(**grids, budgets=(16,))


# line grammar


def test_every_golden_line_has_a_kind():
    seen = set()
    for text in GOLDEN:
        assert not malformed(text) and not malformed(text, cut=True)
        for line in text.splitlines():
            kind = line_kind(line)
            assert kind is not None, line
            seen.add(kind)
    assert seen == set(LINE_KINDS)


@pytest.mark.parametrize("line, kind", [
    ("Current State: 45:[98, 38, 74, 17], Operations: []", "state"),
    ("Current State: 45:[38, 17, 24], Operations: ['98-74=24']", "state"),
    ("Current State: 45:[0], Operations: ['98-74=24', '24/24=1', '1-1=0']", "state"),
    ("Exploring Operation: 98-74=24, Resulting Numbers: [38, 17, 24]", "explore"),
    ("Generated Node #0,0: 45:[38, 17, 24] Operation: 98-74=24", "generated"),
    ("Generated Node #2: [38, 17, 24] from Operation: 98-74=24", "generated_ot"),
    ("Moving to Node #0,10,3", "moving"),
    ("Moving to Node #0", "moving"),
    ("3,45 unequal: No Solution", "unequal"),
    ("45,45 equal: Goal Reached", "goal"),
    ("No solution found.", "no_solution"),
    ("Current State: 45:[], Operations: []", None),  # no numbers
    ("Current State: 45:[98,38], Operations: []", None),  # no space after the comma
    ("Current State: 45:[098, 38], Operations: []", None),  # leading zero
    ("Current State: 45:[38, 24], Operations: ['98%74=24']", None),  # unknown operator
    ("Current State: 45:[38, 24], Operations: [\"98-74=24\"]", None),  # double quotes
    ("Exploring Operation: 98-74=-24, Resulting Numbers: [38]", None),  # negative number
    ("Exploring Operation: 98-74=24, Resulting Numbers: [38] ", None),  # trailing space
    ("Generated Node #0,: 45:[38] Operation: 98-74=24", None),
    ("Moving to Node #", None),
    ("45,45 equal: Goal Reached\n", None),  # a line is given without its newline
    ("Exploring Operation: 98-74=٢٤, Resulting Numbers: [38]", None),  # non-ASCII digits
    ("", None),
])
def test_line_kind_examples(line, kind):
    assert line_kind(line) == kind


def mutations(line: str):
    """A digit turned into a letter, a bracket dropped, a keyword misspelled (each when possible)."""
    if any(ch.isdigit() for ch in line):
        j = next(j for j, ch in enumerate(line) if ch.isdigit())
        yield line[:j] + "x" + line[j + 1:]
    for bracket in "[]":
        if bracket in line:
            yield line.replace(bracket, "", 1)
    for keyword in ("Current", "Operations", "Exploring", "Resulting", "Generated", "from", "Moving",
                    "equal", "Goal", "Reached", "No", "Solution", "found"):
        if keyword in line:
            yield line.replace(keyword, keyword[0] + keyword[2:], 1)


def test_mutated_golden_lines_are_malformed():
    for text in GOLDEN:
        lines = text.split("\n")
        for i, line in enumerate(lines):
            variants = list(mutations(line))
            assert line == "" or variants
            for variant in variants:
                assert line_kind(variant) is None, variant
            if variants and i in (0, len(lines) // 2, len(lines) - 2):  # whole texts, a few lines each
                for variant in variants:
                    mutated = "\n".join(lines[:i] + [variant] + lines[i + 1:])
                    assert malformed(mutated) and malformed(mutated, cut=i < len(lines) - 1)


def test_malformed_edge_cases():
    assert malformed("") and malformed("", cut=True)
    assert malformed("\n")  # one empty line
    assert malformed("Moving to Node #0\n\nMoving to Node #0\n")  # a blank line inside
    assert not malformed("Moving to Node #0")  # a complete last line needs no newline
    assert not malformed("No solution found.", cut=True)
    partial = "Moving to Node #0\nCurrent State: 45:[98, 3"
    assert malformed(partial) and not malformed(partial, cut=True)
    assert malformed("Current State: 45:[98, 3", cut=True)  # nothing complete to judge
    assert malformed("Moving to Node #0\r\n")


def test_cut_golden_prefixes_are_not_malformed():
    rng = np.random.default_rng(0)
    for text in GOLDEN:
        first_line_end = text.index("\n") + 1
        for end in rng.integers(first_line_end, len(text) + 1, size=5):
            assert not malformed(text[:end], cut=True), text[:end][-100:]


@settings(max_examples=200, deadline=None)
@given(st.text(), st.booleans())
def test_format_checks_never_raise(text, cut):
    assert line_kind(text) in LINE_KINDS + (None,)
    assert isinstance(malformed(text, cut=cut), bool)


GOLDEN_LINES = sorted({line for text in GOLDEN[:20] for line in text.splitlines()})
NEAR_LINES = st.sampled_from(GOLDEN_LINES) | st.text(alphabet="0123456789,:[]' #.-+*/=CurentSaOpxlog", max_size=60)


def reference_malformed(text: str, cut: bool) -> bool:
    """``malformed`` restated: judge the newline-ended lines, and the unterminated rest unless it was cut."""
    *complete, rest = text.split("\n")
    if rest and (not cut or rest == "No solution found."):
        complete.append(rest)
    return not complete or any(line_kind(line) is None for line in complete)


@settings(max_examples=200, deadline=None)
@given(st.lists(NEAR_LINES, max_size=6), st.sampled_from(["", "\n"]), st.booleans())
def test_malformed_on_near_misses(lines, end, cut):
    text = "\n".join(lines) + end
    assert malformed(text, cut=cut) == reference_malformed(text, cut)


# report and plots


def small_results():
    grids = hand_grids()
    a = summarize(**grids, budgets=(16, 40, 100))
    grids["solved_PxN"] = np.zeros((2, 4), bool)
    b = summarize(**grids, budgets=(16, 40, 100))
    return {"sos-model": {"val_seen": a, "test_unseen": b},
            "ot-model-with-a-rather-long-name-indeed-very-very-very-long-1234": {"val_seen": b}}


def test_format_report_lists_every_model_and_split():
    results = small_results()
    text = format_report(results)
    for name in ("sos-model", "val_seen", "test_unseen"):
        assert name in text
    long_name = "ot-model-with-a-rather-long-name-indeed-very-very-very-long-1234"
    row = next(line for line in text.splitlines() if "1234" in line)  # a long name is shortened in the middle
    assert long_name not in text and row.split()[1].startswith("ot-model") and "..-long-1234" in row
    assert max(len(line) for line in text.splitlines()) <= 110
    a = results["sos-model"]["val_seen"]
    assert f"{a['pass_at_k']['4']:.1%} (4)" in text  # pass@k at the largest k, 4 samples per problem
    rows = [line for line in text.splitlines() if line.startswith(("val_seen", "test_unseen"))]
    assert len(rows) == 3


def test_plots_write_png_files(tmp_path):
    results = small_results()
    for plot, name in ((plot_pass_at_k, "pass_at_k.png"), (plot_budgets, "budgets.png")):
        path = tmp_path / name
        plot(str(path), results)
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["budgets.png", "pass_at_k.png"]  # no temporaries left
