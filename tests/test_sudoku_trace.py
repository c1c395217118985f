"""The on-device Sudoku trace writer (sos_jax.search.sudoku) against the plain-Python reference."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from config_util import run_benchmark

from sos_jax.data import sudoku_test
from sos_jax.envs import sudoku as env
from sos_jax.search import sudoku as S
from sos_jax.search import sudoku_python as sp
from sos_jax.search.sudoku_verify import replay_token_batch
from sos_jax.tokenizers import sudoku as tok

EXAMPLES = pathlib.Path(__file__).parent / "data" / "sudoku_examples.jsonl"
MAX_TOKENS = 8192
TEST_PUZZLES = 12


def _puzzles():
    """The golden records' puzzles, then the first test puzzles, with their solutions."""
    records = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    golden = np.array([tok.grid_values(r["puzzle"]) for r in records], np.int32)
    golden_solutions = np.asarray(jax.jit(jax.vmap(env.solve))(golden)[0])
    puzzles, solutions = sudoku_test.load()
    return (np.concatenate([golden, puzzles[:TEST_PUZZLES]]).astype(np.int32),
            np.concatenate([golden_solutions, solutions[:TEST_PUZZLES]]).astype(np.int32))


@pytest.fixture(scope="module")
def puzzles():
    return _puzzles()


@pytest.fixture(scope="module", params=[(b, t) for b in S.BRANCH_ORDERS for t in S.TECHNIQUES])
def written(request, puzzles):
    branch, techniques = request.param
    return branch, techniques, jax.device_get(S.trace_batch(puzzles[0], branch=branch, techniques=techniques,
                                                            max_tokens=MAX_TOKENS))


def _text(ids, length):
    return tok.decode(np.asarray(ids)[: int(length)])


def test_traces_are_the_reference_traces(puzzles, written):
    branch, techniques, out = written
    complete = 0
    for i, puzzle in enumerate(puzzles[0]):
        reference = sp.trace(puzzle, branch, techniques)
        got = _text(out.trace_BxL[i], out.length_B[i])
        assert _text(out.direct_BxM[i], out.direct_length_B[i]) == sp.shortcut(got), i  # also when cut
        if out.truncated_B[i]:
            assert not out.solved_B[i]
            assert reference.startswith(got + " \n"), i  # cut at a line end
            assert len(tok.encode(reference)) > MAX_TOKENS
            continue
        complete += 1
        assert got == reference, i
        assert _text(out.direct_BxM[i], out.direct_length_B[i]) == sp.shortcut(reference), i
        assert out.solved_B[i]
        assert out.guesses_B[i] == reference.count("guess:")
        assert out.reverts_B[i] == reference.count("revert:")
        assert np.array_equal(out.board_Bx81[i], puzzles[1][i])
    assert complete >= 0.7 * len(puzzles[0])


def test_traces_and_direct_solutions_replay_to_the_solution(puzzles, written):
    _, _, out = written
    solved = np.asarray(replay_token_batch(out.trace_BxL, out.length_B, *puzzles))
    direct = np.asarray(replay_token_batch(out.direct_BxM, out.direct_length_B, *puzzles))
    assert np.all(solved[out.solved_B])  # a cut trace may also replay right, by chance
    assert np.array_equal(direct, out.solved_B)
    assert np.all(out.trace_BxL[np.arange(MAX_TOKENS) >= out.length_B[:, None]] == tok.MASK)


def test_one_puzzle_equals_its_batch_row(puzzles):
    one = jax.jit(S.write_trace, static_argnames=("branch", "max_tokens"))(puzzles[0][3], branch="row-major",
                                                                          max_tokens=1024)
    batch = S.trace_batch(puzzles[0][:5], branch="row-major", max_tokens=1024)
    for name in ("trace_BxL", "length_B", "direct_BxM", "solved_B", "truncated_B"):
        assert np.array_equal(getattr(one, name), getattr(batch, name)[3]), name


def test_a_puzzle_without_solution_ends_unsolved():
    board = np.zeros(81, np.int32)
    board[:8] = np.arange(1, 9)
    board[9 + 8] = 9  # (1, 8) = 9 leaves (0, 8) without a candidate
    out = jax.jit(S.write_trace, static_argnames="max_tokens")(board, max_tokens=256)
    assert not out.solved_B and not out.truncated_B
    assert _text(out.trace_BxL, out.length_B).startswith("nocand: (0, 8)")
    assert _text(out.direct_BxM, out.direct_length_B) == sp.shortcut(_text(out.trace_BxL, out.length_B))


def test_a_trace_that_fills_the_buffer_exactly_is_complete(puzzles):
    puzzle = puzzles[0][0]
    words = len(tok.encode(sp.trace(puzzle, "fewest")))
    fits, cut = (S.trace_batch(puzzle[None], max_tokens=m, lanes=1) for m in (words, words - 1))
    assert int(fits.length_B[0]) == words and fits.solved_B[0] and not fits.truncated_B[0]
    assert cut.truncated_B[0] and not cut.solved_B[0] and int(cut.length_B[0]) < words


def test_sequences_are_the_training_text(puzzles):
    out = S.trace_batch(puzzles[0][:4], max_tokens=2048)
    sequences = jax.jit(jax.vmap(S.sequences, in_axes=(0, 0, 0, None)), static_argnums=3)
    ids, length, prompt = sequences(puzzles[0][:4], out.trace_BxL, out.length_B, 4096)
    for i in range(4):
        board = tok.puzzle_board_text(puzzles[0][i])
        trace = _text(out.trace_BxL[i], out.length_B[i])
        assert tok.decode(np.asarray(ids[i])[: int(length[i])]) == tok.sequence_text(board, trace)
        assert tok.decode(np.asarray(ids[i])[: int(prompt[i])]) == f"START {board}\nSOL_S\n"
        assert np.all(np.asarray(ids[i])[int(length[i]):] == tok.MASK)
    cut, cut_length, cut_prompt = jax.jit(S.sequences, static_argnums=3)(puzzles[0][0], out.trace_BxL[0],
                                                                         out.length_B[0], 100)
    assert int(cut_length) == 100 and int(cut_prompt) == 100 and np.array_equal(cut, ids[0][:100])


@pytest.mark.parametrize("kwargs, match", [({"branch": "random"}, "branch"), ({"techniques": "all"}, "techniques"),
                                           ({"max_tokens": 2}, "max_tokens")])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.trace_batch(np.zeros((1, 81), np.int32), **kwargs)


def test_generation_benchmark_json_last_line():
    out, lines = run_benchmark("sudoku_gen.py", "--n", "32", "--batch", "16", "--variants", "4", "--max-tokens", "512",
                               "--python-n", "2", "--techniques", "singles", devices=2)
    device = out["device"]
    assert device["n"] == 32 and device["fresh_n"] == 8 and device["device_count"] == 2
    assert 22 <= device["fresh_clues_mean"] <= 28
    assert device["traces_verified"] is True
    assert set(device["stage_per_s"]) == {"fresh", "variants", "traces"}
    assert all(v > 0 for v in device["stage_per_s"].values())
    assert abs(1 / device["puzzles_with_traces_per_s"] - sum(device["stage_s"].values()) / 32) < 1e-9
    assert out["python"]["n"] == 2 and out["trace_speedup"] > 0
    assert any(line.startswith("pipeline") for line in lines)


def test_results_do_not_depend_on_the_lanes(puzzles):
    """Lanes that take the next puzzle, and lanes that wait for their elimination step, change nothing."""
    runs = [jax.device_get(S.trace_batch(puzzles[0][:24], techniques="full", max_tokens=1024, lanes=lanes))
            for lanes in (24, 5, 1)]
    for other in runs[1:]:
        for name in ("trace_BxL", "length_B", "direct_BxM", "direct_length_B", "solved_B", "truncated_B",
                     "guesses_B", "reverts_B", "board_Bx81"):
            assert np.array_equal(getattr(runs[0], name), getattr(other, name)), name
    with pytest.raises(ValueError, match="lanes"):
        S.trace_batch(puzzles[0][:4], lanes=5)
    with pytest.raises(ValueError, match="shape"):
        S.trace_batch(np.zeros((0, 81), np.int32))
