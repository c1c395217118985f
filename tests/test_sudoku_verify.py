"""The Sudoku judges: the text replay and the JAX token replay agree on golden, mutated and random answers."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sos_jax.data import sudoku_test
from sos_jax.envs.sudoku_check import fill_lines, replay_text
from sos_jax.search.sudoku_verify import replay_token_batch, replay_tokens
from sos_jax.tokenizers import sudoku as tok

RECORDS = [json.loads(line) for line in (Path(__file__).parent / "data" / "sudoku_examples.jsonl").open()]
_FILL = re.compile(r"^\((\d), (\d)\) = (\d) ?$", re.M)


def is_valid_solution(grid81, puzzle81) -> bool:
    """Whether ``grid81`` is a complete valid sudoku that keeps the clues of ``puzzle81``."""
    g = np.asarray(grid81).reshape(9, 9)
    units = [*g, *g.T, *g.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)]
    puzzle = np.asarray(puzzle81)
    kept = (g.reshape(81) == puzzle) | (puzzle == 0)
    return all(sorted(u) == list(range(1, 10)) for u in units) and bool(kept.all())


def trace_solution(record) -> list[int]:
    """The grid left by replaying the record's full trace (read with a regex of its own), checked valid."""
    grid = tok.grid_values(record["puzzle"])
    for r, c, v in _FILL.findall(record["trace"]):
        grid[9 * int(r) + int(c)] = int(v)
    assert is_valid_solution(grid, tok.grid_values(record["puzzle"])), record["id"]
    return grid


SOLUTIONS = [trace_solution(r) for r in RECORDS]


def judge_tokens(texts, puzzles, solutions) -> list[bool]:
    """Token verdicts of the texts, batched by length padded to a power of two (at least 256)."""
    ids = [tok.encode(t) for t in texts]
    verdicts = [None] * len(ids)
    buckets = {}
    for i, row in enumerate(ids):
        buckets.setdefault(max(256, 1 << (len(row) - 1).bit_length()), []).append(i)
    for L, rows in buckets.items():
        batch = np.full((len(rows), L), tok.MASK, np.int32)
        for j, i in enumerate(rows):
            batch[j, : len(ids[i])] = ids[i]
        lengths = np.array([len(ids[i]) for i in rows], np.int32)
        p = np.array([tok.grid_values(puzzles[i]) for i in rows], np.int32)
        s = np.array([solutions[i] for i in rows], np.int32)
        out = np.asarray(replay_token_batch(batch, lengths, p, s))
        assert out.dtype == np.bool_
        for j, i in enumerate(rows):
            verdicts[i] = bool(out[j])
    return verdicts


def assert_judged(texts, puzzles, solutions, expected):
    """Both judges give ``expected`` on every text."""
    by_text = [replay_text(t, p, s) for t, p, s in zip(texts, puzzles, solutions)]
    assert by_text == expected
    assert judge_tokens(texts, puzzles, solutions) == expected


def test_golden_traces_shortcuts_and_sequences_are_solved():
    texts = [r["trace"] for r in RECORDS] + [r["shortcut"] for r in RECORDS]
    texts += [tok.sequence_text(r["board"], r["shortcut"]) for r in RECORDS]
    puzzles = [r["puzzle"] for r in RECORDS] * 3
    assert_judged(texts, puzzles, SOLUTIONS * 3, [True] * len(texts))
    # The board alone, or a trace replayed onto an empty grid, is not a solution.
    assert not any(replay_text(r["board"], r["puzzle"], s) for r, s in zip(RECORDS, SOLUTIONS))
    assert not replay_text(RECORDS[0]["shortcut"], "." * 81, SOLUTIONS[0])


def _lines(text):
    return [line.rstrip() for line in text.split("\n")]


def _text(lines):
    return " \n".join(lines)


def mutations(record, solution, field):
    """(text, expected verdict) for four edits of the record's trace or shortcut."""
    lines = _lines(record[field])
    fills = [(k, m) for k, line in enumerate(lines) if (m := _FILL.match(line))]
    cells = [9 * int(m[1]) + int(m[2]) for _, m in fills]
    k, m = fills[-1]  # the last fill of its cell
    r, c, v = int(m[1]), int(m[2]), int(m[3])
    wrong = v % 9 + 1
    changed = lines[:k] + [f"({r}, {c}) = {wrong}"] + lines[k + 1 :]
    out = [(_text(changed), False)]
    counts = collections.Counter(cells)
    single = [k for (k, _), cell in zip(fills, cells) if counts[cell] == 1]
    if single:  # the only fill of a cell
        out.append((_text(lines[: single[0]] + lines[single[0] + 1 :]), False))
    cell = cells[len(cells) // 2]
    r, c = divmod(cell, 9)
    out.append((_text(lines + [f"({r}, {c}) = {solution[cell] % 9 + 1}"]), False))
    out.append((_text(lines + [f"({r}, {c}) = {solution[cell]}"]), True))
    return out


def test_mutated_traces():
    texts, puzzles, solutions, expected = [], [], [], []
    for record, solution in zip(RECORDS, SOLUTIONS):
        for field in ("trace", "shortcut"):
            for text, verdict in mutations(record, solution, field):
                texts.append(text)
                puzzles.append(record["puzzle"])
                solutions.append(solution)
                expected.append(verdict)
    assert len(texts) >= 60 * 7
    assert_judged(texts, puzzles, solutions, expected)


def test_test_puzzles_solved_by_their_solutions():
    puzzles, solutions = sudoku_test.load()
    assert puzzles.shape == solutions.shape == (200, 81) and puzzles.dtype == solutions.dtype == np.int8
    clues = (puzzles != 0).sum(1)
    assert clues.min() == 22 and clues.max() == 29 and abs(clues.mean() - 24.3) < 0.05
    assert all(is_valid_solution(s, p) for p, s in zip(puzzles, solutions))
    answers, wrong = [], []
    for p, s in zip(puzzles, solutions):
        empty = np.flatnonzero(p == 0)
        lines = [f"({k // 9}, {k % 9}) = {s[k]}" for k in empty]
        answers.append(_text(lines))
        lines[len(lines) // 2] = lines[len(lines) // 2][:-1] + str(s[empty[len(lines) // 2]] % 9 + 1)
        wrong.append(_text(lines))
    sols = [list(s) for s in solutions]
    assert_judged(answers + wrong, list(puzzles) * 2, sols * 2, [True] * 200 + [False] * 200)


def test_single_sequence_under_jit():
    record, solution = RECORDS[0], SOLUTIONS[0]
    ids = tok.sequence(record["board"], record["trace"])
    buf = np.full(1024, tok.MASK, np.int32)
    buf[: len(ids)] = ids
    p = np.array(tok.grid_values(record["puzzle"]), np.int32)
    judge = jax.jit(replay_tokens)
    assert bool(judge(buf, len(ids), p, np.array(solution)))
    # Cut just before the last fill's digit: that cell stays empty.
    assert not bool(judge(buf, len(ids) - 4, p, np.array(solution)))


@pytest.mark.parametrize(
    "text,solved",
    [
        ("(0, 0) = 1", True),
        ("  (0, 0)=1\t\r", True),  # any spacing inside the line
        ("guess: (0, 0) [1, 2] = 1", False),
        ("revert: (0, 0) [1] = none", False),
        ("(0, 0) = none", False),
        ("(0, 0) = 1 2", False),
        ("SOL_S (0, 0) = 1", False),
        ("SOL_S\n(0, 0) = 1\nSOL_E END", True),
        ("(0, 0) = 1\n(0, 0) = 2", False),  # the last write wins
        ("(0, 0) = 2\n(0, 0) = 1", True),
    ],
)
def test_what_a_fill_line_is(text, solved):
    solution = SOLUTIONS[0]
    puzzle = [0] + solution[1:]
    assert replay_text(text, puzzle, solution) is solved
    assert judge_tokens([text], [puzzle], [solution]) == [solved]


def test_fill_lines_of_malformed_text():
    assert fill_lines("(0,0) = 1\n(9, 0) = 1\n(0, 0) = 12\n(0, 0) == 1\n(1, 2) = 3 \n\x00") == [(11, 3)]
    assert fill_lines("") == [] and not replay_text(None, "." * 81, SOLUTIONS[0])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.text(alphabet="(0, 1)=2\n guess:[]none", max_size=200))
def test_any_text_is_judged_without_raising(text):
    assert isinstance(replay_text(text, RECORDS[0]["puzzle"], SOLUTIONS[0]), bool)


L = 64
_JUDGE = jax.jit(replay_tokens)
_EMPTY = (3, 40, 77)  # a puzzle that is the solution with three cells emptied


@st.composite
def token_sequence(draw):
    """(ids [L], length): maybe the answer, then fill lines of the empty cells (mostly right) and random words."""
    solution = SOLUTIONS[1]
    words = []
    if draw(st.booleans()):
        for cell in draw(st.permutations(_EMPTY)):
            words += [tok.CELL0 + cell, tok.EQUALS, solution[cell], tok.NEWLINE]
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 2)):
            cell = draw(st.sampled_from(_EMPTY))
            digit = solution[cell] if draw(st.integers(0, 3)) else draw(st.integers(0, 9))
            words += [tok.CELL0 + cell, tok.EQUALS, digit, tok.NEWLINE]
        else:
            words += draw(st.lists(st.integers(0, tok.VOCAB_SIZE - 1), max_size=4))
    words = words[:L]
    length = draw(st.one_of(st.just(len(words)), st.just(max(0, len(words) - 1)), st.integers(0, L)))
    return words + [tok.MASK] * (L - len(words)), length


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_sequence())
def test_any_token_sequence_agrees_with_its_text(case):
    ids, length = case
    solution = SOLUTIONS[1]
    puzzle = [0 if k in _EMPTY else v for k, v in enumerate(solution)]
    verdict = _JUDGE(np.array(ids, np.int32), length, np.array(puzzle, np.int32), np.array(solution, np.int32))
    assert verdict.dtype == np.bool_ and verdict.shape == ()
    assert bool(verdict) == replay_text(tok.decode(ids[:length]), puzzle, solution)
