"""On-device Sudoku: candidate masks, validity, the solver and counter, and the puzzle generator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sos_jax import parallel
from sos_jax.data import sudoku_test
from sos_jax.envs import sudoku as env

PUZZLES, SOLUTIONS = sudoku_test.load()  # the 200 held-out test puzzles shipped with the package
GRID = env.parse_puzzle("534678912672195348198342567859761423426853791713924856961537284287419635345286179")

solve_batch = jax.jit(jax.vmap(env.solve))
count_batch = jax.jit(jax.vmap(env.count_solutions))


def _count_py(board, cap=2):
    """Plain-Python oracle: solutions of a board, counting stops at ``cap``."""
    board = [int(v) for v in board]
    if not bool(env.is_valid(np.asarray(board))):
        return 0
    peers = env.CELL_PEERS.tolist()

    def count():
        best = None
        for cell in range(81):
            if board[cell] == 0:
                allowed = set(range(1, 10)) - {board[p] for p in peers[cell]}
                if best is None or len(allowed) < len(best[1]):
                    best = cell, sorted(allowed)
        if best is None:
            return 1
        found = 0
        for value in best[1]:
            board[best[0]] = value
            found += count()
            board[best[0]] = 0
            if found >= cap:
                return cap
        return found

    return count()


def test_unit_and_peer_tables():
    assert sorted(env.UNIT_CELLS.reshape(-1).tolist()) == sorted(list(range(81)) * 3)
    assert all(len(set(unit)) == 9 for unit in env.UNIT_CELLS.tolist())
    assert env.CELL_PEERS.shape == (81, 20)
    r, c = divmod(40, 9)
    expected = {9 * rr + cc for rr in range(9) for cc in range(9)
                if (rr == r or cc == c or (rr // 3, cc // 3) == (r // 3, c // 3)) and (rr, cc) != (r, c)}
    assert set(env.CELL_PEERS[40].tolist()) == expected


def test_parse_and_format():
    text = "...74...94....1...1..2...7........1.3.5.....8.6...8542.....276..3..7.......48..5."  # test puzzle 0
    board = env.parse_puzzle(text)
    assert board.dtype == np.int32 and board.shape == (81,)
    assert env.format_puzzle(board) == text
    assert env.format_puzzle(env.parse_puzzle(text.replace(".", "0"))) == text
    with pytest.raises(ValueError, match="81"):
        env.parse_puzzle("123")
    with pytest.raises(ValueError, match="characters other"):
        env.parse_puzzle("x" * 81)
    with pytest.raises(ValueError, match="values in 0..9"):
        env.format_puzzle(np.full(81, 10))


def test_candidates():
    assert np.all(np.asarray(env.candidates(jnp.zeros(81, jnp.int32))) == 0x1FF)
    board = np.zeros(81, np.int32)
    board[40] = 5  # centre cell
    cands = np.asarray(env.candidates(jnp.asarray(board)))
    assert cands[40] == 0
    peers = set(env.CELL_PEERS[40].tolist())
    for cell in range(81):
        if cell != 40:
            assert cands[cell] == (0x1FF & ~(1 << 4) if cell in peers else 0x1FF), cell
    row = GRID.copy()
    row[:9] = 0
    row[1:9] = GRID[1:9]  # only (0, 0) is empty: its row leaves one value
    cands = np.asarray(env.candidates(jnp.asarray(row)))
    assert cands[0] == 1 << (GRID[0] - 1) and np.all(cands[1:] == 0)
    batched = np.asarray(env.candidates(jnp.stack([jnp.asarray(board), jnp.asarray(row)])))
    assert batched[1, 0] == 1 << (GRID[0] - 1)


def test_is_valid_and_is_solved():
    def check(board):
        board = jnp.asarray(board)
        return bool(env.is_valid(board)), bool(env.is_solved(board))

    empty = np.zeros(81, np.int32)
    assert check(empty) == (True, False)
    assert check(GRID) == (True, True)
    holes = GRID.copy()
    holes[[0, 40]] = 0
    assert check(holes) == (True, False)
    for a, b in [(0, 8), (0, 72), (0, 20)]:  # same row, same column, same box
        twice = empty.copy()
        twice[[a, b]] = 7
        assert check(twice) == (False, False), (a, b)
    swapped = GRID.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # rows stay valid, columns and boxes do not
    assert check(swapped) == (False, False)
    out_of_range = empty.copy()
    out_of_range[3] = 10
    assert check(out_of_range) == (False, False)
    assert np.asarray(env.is_solved(jnp.stack([jnp.asarray(GRID), jnp.asarray(holes)]))).tolist() == [True, False]


def test_solver_solves_the_test_set_and_counts_one_solution():
    puzzles = jnp.asarray(PUZZLES, jnp.int32)
    solved, ok = solve_batch(puzzles)
    assert bool(ok.all()) and len(PUZZLES) == 200
    np.testing.assert_array_equal(np.asarray(solved), SOLUTIONS)
    assert np.asarray(count_batch(puzzles)).tolist() == [1] * len(PUZZLES)
    small = puzzles[:4].astype(jnp.int8)  # narrow int types work too (9 does not fit a shifted int8)
    np.testing.assert_array_equal(np.asarray(solve_batch(small)[0]), np.asarray(solved[:4]))
    assert np.asarray(count_batch(small)).tolist() == [1] * 4
    assert np.all(np.asarray(env.candidates(small)) == np.asarray(env.candidates(puzzles[:4])))


def test_counts_match_python_oracle_on_removed_clues():
    boards = []
    for puzzle in PUZZLES[:2].astype(np.int32):
        for cell in np.flatnonzero(puzzle):
            board = puzzle.copy()
            board[cell] = 0
            boards.append(board)
    counts = np.asarray(count_batch(jnp.asarray(np.stack(boards))))
    assert counts.tolist() == [_count_py(b) for b in boards]
    assert 2 in counts.tolist()  # some removal lets a second solution in


def test_count_and_solve_edge_cases():
    empty = np.zeros(81, np.int32)
    invalid = empty.copy()
    invalid[[0, 8]] = 7  # a repeated value
    dead_end = empty.copy()
    dead_end[1:9] = np.arange(1, 9)
    dead_end[36] = 9  # (0, 0) has no candidate left, though no unit repeats a value
    assert bool(env.is_valid(jnp.asarray(dead_end)))
    boards = jnp.asarray(np.stack([empty, invalid, dead_end, GRID]))
    assert np.asarray(count_batch(boards)).tolist() == [2, 0, 0, 1]
    assert int(jax.jit(env.count_solutions, static_argnames="cap")(jnp.asarray(empty), cap=5)) == 5
    solved, ok = solve_batch(boards)
    assert np.asarray(ok).tolist() == [True, False, False, True]
    assert bool(env.is_solved(solved[0]))
    np.testing.assert_array_equal(np.asarray(solved[1:3]), np.asarray(boards[1:3]))  # unchanged where unsolvable
    np.testing.assert_array_equal(np.asarray(solved[3]), GRID)


def test_generate_puzzle_reaches_the_asked_clue_counts():
    targets = jnp.asarray([22, 23, 24, 25, 26, 27, 28, 81] * 2, jnp.int32)
    keys = jax.random.split(jax.random.key(3), targets.shape[0])
    puzzles, solutions = jax.jit(jax.vmap(env.generate_puzzle))(keys, targets)
    puzzles, solutions = np.asarray(puzzles), np.asarray(solutions)
    assert (puzzles > 0).sum(axis=1).tolist() == targets.tolist()
    assert bool(env.is_solved(jnp.asarray(solutions)).all())
    assert np.all((puzzles == 0) | (puzzles == solutions))
    assert np.asarray(count_batch(jnp.asarray(puzzles))).tolist() == [1] * len(puzzles)
    assert len({env.format_puzzle(s) for s in solutions}) == len(solutions)
    with pytest.raises(ValueError, match="clues=16"):
        env.generate_puzzle(jax.random.key(0), 16)


def test_sample_puzzles_is_seeded_by_index_and_shards():
    key = jax.random.key(11)
    indices = jnp.arange(8)
    batch = env.sample_puzzles(key, indices)
    puzzles, solutions, clues = (np.asarray(batch[k]) for k in ("puzzle_Bx81", "solution_Bx81", "clues_B"))
    assert puzzles.shape == solutions.shape == (8, 81) and clues.shape == (8,)
    assert clues.tolist() == (puzzles > 0).sum(axis=1).tolist()
    assert np.all((clues >= 22) & (clues <= 28))
    assert np.all((puzzles == 0) | (puzzles == solutions))
    assert np.asarray(count_batch(jnp.asarray(puzzles))).tolist() == [1] * 8
    assert len({env.format_puzzle(p) for p in puzzles}) == 8  # different indices, different puzzles

    reversed_ = env.sample_puzzles(key, indices[::-1])  # the same index gives the same puzzle
    np.testing.assert_array_equal(np.asarray(reversed_["puzzle_Bx81"])[::-1], puzzles)
    other = env.sample_puzzles(jax.random.key(12), indices)
    assert not np.array_equal(np.asarray(other["puzzle_Bx81"]), puzzles)

    one = jax.jit(env.generate_puzzle)  # the one-puzzle loop gives the batched loop's puzzles
    for i in range(3):
        clue_key, puzzle_key = jax.random.split(jax.random.fold_in(key, i))
        np.testing.assert_array_equal(one(puzzle_key, jax.random.randint(clue_key, (), 22, 29))[0], puzzles[i])

    mesh = parallel.data_mesh()
    sharded = parallel.shard_rows(env.sample_puzzles, mesh)(key, jnp.arange(len(jax.devices())))
    np.testing.assert_array_equal(np.asarray(sharded["puzzle_Bx81"])[:8], puzzles[: len(jax.devices())])
    with pytest.raises(ValueError, match="clue_min"):
        env.sample_puzzles(key, indices, clue_min=30, clue_max=28)


def test_equivalent_puzzles_keep_clues_and_a_unique_solution():
    puzzles, solutions = sudoku_test.load()
    keys = jax.random.split(jax.random.key(3), 16)
    draw = jax.jit(jax.vmap(env.equivalent_puzzles, in_axes=(0, None, None)))
    p, s = (np.asarray(x) for x in draw(keys, puzzles[5], solutions[5]))
    assert np.all(jax.jit(jax.vmap(env.is_solved))(s))
    assert np.all(jax.jit(jax.vmap(env.count_solutions))(p) == 1)
    assert np.all((p > 0).sum(axis=1) == (puzzles[5] > 0).sum())
    assert np.all((p == 0) | (p == s))  # the clues are the solution's values
    assert len({row.tobytes() for row in p}) == 16  # all different
    # the map is a relabelling composed with a permutation of the cells
    counts = sorted(np.bincount(puzzles[5][puzzles[5] > 0], minlength=10)[1:])
    assert all(sorted(np.bincount(row[row > 0], minlength=10)[1:]) == counts for row in p)


def test_minimal_puzzles_lose_uniqueness_without_any_clue():
    batch = jax.jit(env.sample_minimal_puzzles)(jax.random.key(5), jnp.arange(3))
    puzzles = np.asarray(batch["puzzle_Bx81"])
    assert np.asarray(count_batch(jnp.asarray(puzzles))).tolist() == [1] * 3
    assert batch["clues_B"].tolist() == (puzzles > 0).sum(axis=1).tolist()
    without = np.array([np.where(np.arange(81) == k, 0, p) for p in puzzles for k in np.flatnonzero(p)])
    assert np.all(np.asarray(count_batch(jnp.asarray(without))) == 2)
