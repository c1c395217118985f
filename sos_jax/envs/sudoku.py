"""Sudoku on device: boards, candidate masks, a depth-first solver and a puzzle generator.

A board is an int array [81] (int32 out; any int type in), row-major, 0 for an empty cell and
1..9 for a value. Candidates
are 9-bit masks [81]: bit ``v-1`` is set when ``v`` is allowed. The solver works on masks (a cell
whose mask has one bit is fixed). Each step of the search runs one round of naked- and
hidden-single propagation; at a fixed point it branches on the open cell with the fewest
candidates (first in row-major order on ties): the current node takes that cell's first value and
the node with that value struck out goes on a stack. A stack entry is pushed only when an open
cell becomes fixed on the current path, so 81 entries always suffice, and the whole search is one
``jax.lax.while_loop``. Every function on arrays has static shapes and is meant for ``jax.jit``
and ``jax.vmap``; ``parse_puzzle`` and ``format_puzzle`` are host helpers.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CELL_PEERS",
    "UNIT_CELLS",
    "candidates",
    "count_solutions",
    "equivalent_puzzles",
    "format_puzzle",
    "generate_puzzle",
    "is_solved",
    "is_valid",
    "parse_puzzle",
    "random_grid",
    "sample_minimal_puzzles",
    "sample_puzzles",
    "solve",
]

ALL_VALUES = 0x1FF  # the 9-bit mask of every value
MIN_CLUES = 17  # fewest clues of any uniquely solvable puzzle
PUT_BACK = 16  # empty cells of the best puzzle refilled at the start of each later removal round
DEFAULT_ROUNDS = 64  # removal rounds before giving up on the asked clue count
FIRST_ROUNDS = 1  # rounds that a whole batch runs together before stragglers go on a few lanes
DIGITS_9 = np.arange(9, dtype=np.int32)
ASCENDING_81x9 = np.broadcast_to(DIGITS_9.astype(np.float32), (81, 9))  # value priorities: 1 first


def _unit_cells() -> np.ndarray:
    rows = [[9 * r + c for c in range(9)] for r in range(9)]
    cols = [[9 * r + c for r in range(9)] for c in range(9)]
    boxes = [[9 * (3 * (b // 3) + i // 3) + 3 * (b % 3) + i % 3 for i in range(9)] for b in range(9)]
    return np.array(rows + cols + boxes, dtype=np.int32)


UNIT_CELLS = _unit_cells()  # [27, 9]: the cells of rows 0..8, columns 0..8, boxes 0..8
# [81, 3]: where each cell sits in UNIT_CELLS.reshape(-1) (its row, column and box slot)
UNIT_SLOTS = np.array([np.flatnonzero(UNIT_CELLS.reshape(-1) == cell) for cell in range(81)], dtype=np.int32)
# [81, 20]: the other cells sharing a unit with each cell, ascending
CELL_PEERS = np.array([sorted(set(UNIT_CELLS[UNIT_SLOTS[cell] // 9].reshape(-1)) - {cell}) for cell in range(81)],
                      dtype=np.int32)


def _popcount(mask):
    return jax.lax.population_count(mask)


def _or_last(x):
    return jnp.bitwise_or.reduce(x, axis=-1)


def _value_bits(board_81: jax.Array) -> jax.Array:
    """Single-bit int32 masks of the filled cells (0 where empty), whatever the board's int type."""
    board_81 = jnp.asarray(board_81, jnp.int32)
    return jnp.where(board_81 > 0, jnp.left_shift(1, jnp.maximum(board_81 - 1, 0)), 0)


def _masks(board_81: jax.Array) -> jax.Array:
    """Search masks of a board: the value's bit for a filled cell, every value for an empty one."""
    return jnp.where(board_81 > 0, _value_bits(board_81), ALL_VALUES)


def _board(mask_81: jax.Array) -> jax.Array:
    """The board of the fixed cells of a mask array (0 where a cell is open)."""
    return jnp.where(_popcount(mask_81) == 1, 32 - jax.lax.clz(mask_81), 0)


def candidates(board_81: jax.Array) -> jax.Array:
    """Candidate masks [81]: the values no peer holds, for each empty cell; 0 for filled cells."""
    used_81 = _or_last(_value_bits(board_81)[..., CELL_PEERS])
    return jnp.where(board_81 == 0, ~used_81 & ALL_VALUES, 0)


def is_valid(board_81: jax.Array) -> jax.Array:
    """Whether every entry is in 0..9 and no row, column or box repeats a value (empties allowed)."""
    in_range = jnp.all((board_81 >= 0) & (board_81 <= 9), axis=-1)
    held_27x9x9 = board_81[..., UNIT_CELLS, None] == DIGITS_9 + 1  # [unit, slot, value]
    return in_range & jnp.all(held_27x9x9.sum(axis=-2) <= 1, axis=(-2, -1))


def is_solved(board_81: jax.Array) -> jax.Array:
    """Whether the board is a complete valid grid."""
    return jnp.all(board_81 > 0, axis=-1) & is_valid(board_81)


def _propagate(mask_81: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One round of naked singles (fixed values leave their peers) and hidden singles (a value with
    one place left in a unit is fixed there). Returns the new masks and whether a contradiction
    showed: a cell without values, a unit with no place for a value, or two values forced on a cell."""
    fixed_81 = jnp.where(_popcount(mask_81) == 1, mask_81, 0)
    mask_81 = mask_81 & ~_or_last(fixed_81[CELL_PEERS])
    has_27x9x9 = jnp.right_shift(mask_81[UNIT_CELLS][..., None], DIGITS_9) & 1  # [unit, slot, value]
    places_27x9 = has_27x9x9.sum(axis=1)  # [unit, value]
    only_27x9 = jnp.sum(jnp.left_shift(has_27x9x9 * (places_27x9[:, None, :] == 1), DIGITS_9), axis=-1)
    forced_81 = _or_last(only_27x9.reshape(-1)[UNIT_SLOTS])
    mask_81 = jnp.where(forced_81 == 0, mask_81, jnp.where(_popcount(forced_81) == 1, forced_81, 0))
    dead = jnp.any(mask_81 == 0) | jnp.any(places_27x9 == 0)
    return mask_81, dead


class _Search(NamedTuple):
    """State of one depth-first search over candidate masks."""

    mask_81: jax.Array  # the node being worked on
    stack_81x81: jax.Array  # pending nodes (the untried values of a branch), bottom first
    depth: jax.Array  # stack entries in use
    count: jax.Array  # solutions found so far
    first_81: jax.Array  # masks of the first solution found
    done: jax.Array


def _start(mask_81: jax.Array) -> _Search:
    """A search whose root is ``mask_81``."""
    return _Search(mask_81=mask_81, stack_81x81=jnp.zeros((81, 81), jnp.int32), depth=jnp.int32(0),
                   count=jnp.int32(0), first_81=mask_81, done=jnp.bool_(False))


def _restart(search: _Search, mask_81: jax.Array, when: jax.Array) -> _Search:
    """A fresh search from ``mask_81`` where ``when`` holds, reusing the buffers (stale rows are never read)."""
    return search._replace(mask_81=jnp.where(when, mask_81, search.mask_81), depth=jnp.where(when, 0, search.depth),
                           count=jnp.where(when, 0, search.count), done=search.done & ~when)


def _step(search: _Search, priority_81x9: jax.Array, cap, active=True) -> _Search:
    """One search step: propagate once; pop on a contradiction; at a fixed point, count a solution
    (every cell fixed) and pop, or branch (value with the lowest priority first); else keep going.
    Where ``active`` is false nothing is pushed (the caller keeps the old state of such a search).

    A solution is only taken at a fixed point, where naked singles have checked that no two
    fixed peers agree (the hidden singles of one round may fix two peers to the same value).
    """
    mask_81, dead = _propagate(search.mask_81)
    width_81 = _popcount(mask_81)
    settled = ~dead & jnp.all(mask_81 == search.mask_81)
    solved = settled & jnp.all(width_81 == 1)
    branch = settled & ~solved
    pop = dead | solved

    cell = jnp.argmin(jnp.where(width_81 > 1, width_81, 10))
    allowed_9 = (jnp.right_shift(mask_81[cell], DIGITS_9) & 1) == 1
    value = jnp.argmin(jnp.where(allowed_9, jnp.asarray(priority_81x9)[cell], jnp.inf)).astype(jnp.int32)
    bit = jnp.left_shift(1, value)
    taken_81 = mask_81.at[cell].set(bit)
    rest_81 = mask_81.at[cell].set(mask_81[cell] & ~bit)
    # Push (only when branching) before reading the top (only used when popping, so unchanged by
    # the push): reading the old stack after an update would make XLA copy it every step.
    stack = search.stack_81x81.at[jnp.where(branch & active, search.depth, 81)].set(rest_81, mode="drop")
    top_81 = stack[jnp.maximum(search.depth - 1, 0)]

    count = search.count + solved
    return _Search(
        mask_81=jnp.where(pop, top_81, jnp.where(branch, taken_81, mask_81)),
        stack_81x81=stack,
        depth=jnp.maximum(search.depth - pop + branch, 0),
        count=count,
        first_81=jnp.where(solved & (search.count == 0), mask_81, search.first_81),
        done=(pop & (search.depth == 0)) | (count >= cap),
    )


def _search(mask_81: jax.Array, priority_81x9: jax.Array, cap) -> _Search:
    """Depth-first search from ``mask_81`` until ``cap`` solutions are found or the tree is spent."""
    return jax.lax.while_loop(lambda s: ~s.done, lambda s: _step(s, priority_81x9, cap), _start(mask_81))


def count_solutions(board_81: jax.Array, cap=2) -> jax.Array:
    """Number of solutions of a board (values in 0..9), counting stops at ``cap``; int32.

    An invalid board (a repeated value in a unit) has 0.
    """
    return _search(_masks(board_81), ASCENDING_81x9, cap).count


def solve(board_81: jax.Array) -> tuple[jax.Array, jax.Array]:
    """First solution found (values tried in ascending order) and whether there is one.

    Where there is none, the board comes back unchanged with ``ok`` false.
    """
    found = _search(_masks(board_81), ASCENDING_81x9, 1)
    ok = found.count > 0
    return jnp.where(ok, _board(found.first_81), board_81), ok


def random_grid(key: jax.Array) -> jax.Array:
    """A random complete valid grid [81].

    The solver is run on the empty board with a random value order drawn for every cell (the
    branch cell is still the one with the fewest candidates), so the result is a solution, hence a
    valid grid, and any grid can come out; the distribution over grids is broad but not exactly
    uniform.
    """
    priority_81x9 = jax.random.uniform(key, (81, 9))
    return _board(_search(jnp.full((81,), ALL_VALUES, jnp.int32), priority_81x9, 1).first_81)


class _Carve(NamedTuple):
    """State of clue removal for one puzzle: the puzzle so far, the best minimal one and the
    uniqueness search for the next cell. It can pause between rounds and resume."""

    solution_81: jax.Array
    order_Rx81: jax.Array  # the random removal order of each round
    target: jax.Array  # clues asked for
    puzzle_81: jax.Array
    clues: jax.Array
    best_81: jax.Array  # fewest-clue minimal puzzle of the rounds so far
    best_clues: jax.Array
    round: jax.Array  # index of the current removal order
    slot: jax.Array  # position in that order of the cell being tried
    search: _Search
    finished: jax.Array


def _without(puzzle_81: jax.Array, solution_81: jax.Array, cell: jax.Array) -> jax.Array:
    """Masks of the puzzle with ``cell`` emptied and forbidden its solution value.

    The puzzle without ``cell`` has a unique solution exactly when these masks have none: any
    other solution keeping the solution value at ``cell`` would also solve the puzzle itself.
    """
    mask_81 = _masks(puzzle_81.at[cell].set(0))
    return mask_81.at[cell].set(ALL_VALUES & ~_value_bits(solution_81[cell]))


def _first_clue_slot(puzzle_81: jax.Array, order_81: jax.Array, after) -> tuple[jax.Array, jax.Array]:
    """The first position after ``after`` in ``order_81`` holding a clue, and whether there is one."""
    open_81 = (jnp.arange(81) > after) & (puzzle_81[order_81] > 0)
    return jnp.argmax(open_81).astype(jnp.int32), jnp.any(open_81)


def _put_back(best_81: jax.Array, solution_81: jax.Array, order_81: jax.Array) -> jax.Array:
    """``best_81`` with its first ``PUT_BACK`` empty cells in ``order_81`` refilled from the solution."""
    empty_81 = best_81[order_81] == 0
    refill_81 = empty_81 & (jnp.cumsum(empty_81) <= PUT_BACK)
    return best_81.at[order_81].set(jnp.where(refill_81, solution_81[order_81], best_81[order_81]))


def _carve_start(key: jax.Array, clues, max_rounds: int) -> _Carve:
    """A random full grid, the removal orders of all rounds, and the first round set up."""
    grid_key, order_key = jax.random.split(key)
    solution_81 = random_grid(grid_key)
    order_Rx81 = jax.vmap(lambda r: jax.random.permutation(jax.random.fold_in(order_key, r), 81))(
        jnp.arange(max_rounds))
    return _Carve(solution_81=solution_81, order_Rx81=order_Rx81, target=jnp.asarray(clues, jnp.int32),
                  puzzle_81=solution_81, clues=jnp.int32(81), best_81=solution_81, best_clues=jnp.int32(81),
                  round=jnp.int32(0), slot=jnp.int32(0),
                  search=_start(_without(solution_81, solution_81, order_Rx81[0, 0])),
                  finished=jnp.asarray(clues) >= 81)


def _carve_step(c: _Carve, active=True) -> _Carve:
    """One search step; when the search ends, keep or undo the removal and move to the next cell,
    or to the next round when the order is spent. Where ``active`` is false the search pushes
    nothing (the caller keeps the old state)."""
    max_rounds = c.order_Rx81.shape[0]
    search = _step(c.search, ASCENDING_81x9, 1, active)
    removed = search.done & (search.count == 0)
    puzzle_81 = jnp.where(removed, c.puzzle_81.at[c.order_Rx81[c.round, c.slot]].set(0), c.puzzle_81)
    clues = c.clues - removed
    reached = clues <= c.target
    next_slot, more = _first_clue_slot(puzzle_81, c.order_Rx81[c.round], c.slot)
    slot = jnp.where(search.done, next_slot, c.slot)
    spent = search.done & ~more & ~reached  # this round's puzzle is minimal
    better = (spent & (clues <= c.best_clues)) | reached
    best_81 = jnp.where(better, puzzle_81, c.best_81)
    best_clues = jnp.where(better, clues, c.best_clues)
    restart = spent & (c.round + 1 < max_rounds)
    round_ = c.round + restart
    refilled_81 = _put_back(best_81, c.solution_81, c.order_Rx81[round_])
    puzzle_81 = jnp.where(restart, refilled_81, puzzle_81)
    clues = jnp.where(restart, jnp.sum(refilled_81 > 0), clues)
    slot = jnp.where(restart, _first_clue_slot(refilled_81, c.order_Rx81[round_], -1)[0], slot)
    search = _restart(search, _without(puzzle_81, c.solution_81, c.order_Rx81[round_, slot]), search.done)
    return c._replace(puzzle_81=puzzle_81, clues=clues, best_81=best_81, best_clues=best_clues, round=round_,
                      slot=slot, search=search, finished=reached | (spent & ~restart))


def _carve(c: _Carve, rounds) -> _Carve:
    """Runs the removal until the puzzle is finished or round ``rounds`` is about to start."""
    return jax.lax.while_loop(lambda c: ~c.finished & (c.round < rounds), _carve_step, c)


def _carve_batch(c: _Carve, rounds) -> _Carve:
    """``_carve`` of a batch of removals (leading axis B; ``rounds`` a scalar or [B]).

    One loop over the batch rather than a ``vmap`` of ``_carve``: under ``vmap`` a ``while_loop``
    selects its whole state back into place for the finished rows at every iteration, copying
    every row's search stack each step. Here the rows that are done push nothing and only their
    small fields are kept by a select; the stack and the constant fields are never copied.
    """
    def active(c):
        return ~c.finished & (c.round < rounds)

    def small(c):  # the fields a step changes, the stack aside
        return c._replace(order_Rx81=0, solution_81=0, search=c.search._replace(stack_81x81=0))

    def body(c):
        on_B = active(c)
        new = jax.vmap(_carve_step)(c, on_B)
        kept = jax.tree.map(lambda x, y: jnp.where(on_B.reshape((-1,) + (1,) * (jnp.ndim(x) - 1)), x, y),
                            small(new), small(c))
        return kept._replace(order_Rx81=c.order_Rx81, solution_81=c.solution_81,
                             search=kept.search._replace(stack_81x81=new.search.stack_81x81))

    return jax.lax.while_loop(lambda c: jnp.any(active(c)), body, c)


def generate_puzzle(key: jax.Array, clues, max_rounds: int = DEFAULT_ROUNDS) -> tuple[jax.Array, jax.Array]:
    """A puzzle with a unique solution and ``clues`` clues (int or traced int in 17..81), and its solution.

    A random full grid (``random_grid``), then its cells are emptied in a random order, each
    removal kept only if the solution stays unique (tested as "no solution with another value
    there", which is the same as ``count_solutions(..., cap=2) == 1``), until ``clues`` clues are
    left. If the order runs out first (the puzzle became minimal above ``clues``: one order gives
    about 24.4 clues on average, 22 or fewer about once in 40), a new round starts from the
    fewest-clue minimal puzzle so far with ``PUT_BACK`` of its empty cells refilled and tries its
    clues in a new random order (a hill climb with restarts). After ``max_rounds`` rounds the best
    puzzle is returned even if it has more clues than asked (count its non-zero cells). All steps
    run in one ``while_loop`` that interleaves the searches, so under ``vmap`` each puzzle
    advances on its own.
    """
    if isinstance(clues, int) and not MIN_CLUES <= clues <= 81:
        raise ValueError(f"clues={clues}: must be in {MIN_CLUES}..81")
    carved = _carve(_carve_start(key, clues, max_rounds), max_rounds)
    return carved.best_81, carved.solution_81


def _finish_stragglers(carved: _Carve, lanes: int) -> _Carve:
    """Finishes the unfinished rows of a batch of removals on ``lanes`` lanes, one round at a time:
    after each round, the lanes whose puzzle finished write it back and take the next pending row."""
    batch = carved.finished.shape[0]
    queue_B = jnp.nonzero(~carved.finished, size=batch, fill_value=batch)[0]
    pending = jnp.sum(~carved.finished)

    def take(carved: _Carve, order_L: jax.Array) -> tuple[jax.Array, _Carve]:
        rows_L = jnp.where(order_L < pending, queue_B[jnp.minimum(order_L, batch - 1)], batch)
        lane = jax.tree.map(lambda x: x[jnp.minimum(rows_L, batch - 1)], carved)
        return rows_L, lane._replace(finished=lane.finished | (rows_L == batch))  # idle lanes stay still

    def one_round(state):
        carved, rows_L, lane, taken = state
        lane = _carve_batch(lane, lane.round + 1)
        carved = jax.tree.map(lambda x, y: x.at[rows_L].set(y, mode="drop"), carved, lane)
        free_L = lane.finished
        next_rows_L, fresh = take(carved, taken + jnp.cumsum(free_L) - 1)
        rows_L = jnp.where(free_L, next_rows_L, rows_L)
        lane = jax.tree.map(lambda f, old: jnp.where(free_L.reshape((-1,) + (1,) * (f.ndim - 1)), f, old), fresh, lane)
        return carved, rows_L, lane, taken + jnp.sum(free_L)

    rows_L, lane = take(carved, jnp.arange(lanes))
    state = (carved, rows_L, lane, jnp.int32(lanes))
    return jax.lax.while_loop(lambda s: jnp.any(s[1] < batch), one_round, state)[0]


@functools.partial(jax.jit, static_argnames=("clue_min", "clue_max", "max_rounds", "lanes"))
def sample_puzzles(key: jax.Array, indices_B: jax.Array, clue_min: int = 22, clue_max: int = 28,
                   max_rounds: int = DEFAULT_ROUNDS, lanes: int | None = None) -> dict:
    """Puzzles for the given global indices: ``puzzle_Bx81``, ``solution_Bx81`` and ``clues_B``.

    Puzzle ``i`` depends only on ``(key, i)`` (``fold_in``): its clue count is drawn uniformly in
    ``clue_min..clue_max``, then it is made as by ``generate_puzzle``, so the same seed gives the
    same puzzles whatever the batch size or device count. All puzzles run ``FIRST_ROUNDS`` rounds
    together; the few left (low clue counts) then finish on ``lanes`` lanes (default ``B // 16``,
    at least 1; more suit a GPU) that take the next pending puzzle as soon as theirs is done, so
    they do not hold up the whole batch. ``clues_B`` counts the clues each puzzle has; it exceeds
    the drawn count only if ``max_rounds`` rounds all stopped above it.
    """
    if not MIN_CLUES <= clue_min <= clue_max <= 81:
        raise ValueError(f"clue_min={clue_min}, clue_max={clue_max}: need {MIN_CLUES} <= clue_min <= clue_max <= 81")
    if lanes is not None and lanes < 1:
        raise ValueError(f"lanes={lanes}: must be at least 1")
    batch = indices_B.shape[0]

    def start(index):
        clue_key, puzzle_key = jax.random.split(jax.random.fold_in(key, index))
        target = jax.random.randint(clue_key, (), clue_min, clue_max + 1, dtype=jnp.int32)
        return _carve_start(puzzle_key, target, max_rounds)

    carved = _carve_batch(jax.vmap(start)(indices_B), FIRST_ROUNDS)
    carved = _finish_stragglers(carved, lanes=max(1, batch // 16) if lanes is None else lanes)
    return {"puzzle_Bx81": carved.best_81, "solution_Bx81": carved.solution_81,
            "clues_B": carved.best_clues}


def sample_minimal_puzzles(key: jax.Array, indices_B: jax.Array) -> dict:
    """Minimal puzzles (no clue can go without losing uniqueness) with the clue count one removal
    pass reaches, as ``sample_puzzles`` returns them.

    One pass in a random order and no restarts, so no puzzle waits for a hard clue count: on the
    CPU 2-3x the rate of ``sample_puzzles`` (``benchmarks/sudoku_gen.py --minimal``). The counts
    follow the natural distribution of minimal puzzles: mean about 24.4, 99.6% in 22..28 (measured
    on 1,280), close to the 200 test puzzles (mean 24.3); check ``clues_B`` where the range matters.
    """
    return sample_puzzles(key, indices_B, clue_min=MIN_CLUES, clue_max=MIN_CLUES, max_rounds=1)


def _line_order(key: jax.Array) -> jax.Array:
    """A random order of the 9 rows (or columns) that keeps bands together: the bands, then the
    lines within each band, shuffled."""
    band_key, line_key = jax.random.split(key)
    bands_3 = jax.random.permutation(band_key, 3)
    lines_3x3 = jax.vmap(lambda k: jax.random.permutation(k, 3))(jax.random.split(line_key, 3))
    return (3 * bands_3[:, None] + lines_3x3).reshape(9)


def equivalent_puzzles(key: jax.Array, puzzle_81: jax.Array, solution_81: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A random symmetry of a puzzle and its solution: values relabelled, bands and stacks
    shuffled, rows within bands and columns within stacks shuffled, and a transpose half the time.

    These maps keep every row, column and box a unit, so the clue count and the uniqueness of the
    solution carry over, while the board (and so its trace) changes. ``vmap`` it over keys to draw
    many equivalents of one generated puzzle cheaply.
    """
    value_key, row_key, col_key, flip_key = jax.random.split(key, 4)
    relabel_10 = jnp.concatenate([jnp.zeros((1,), jnp.int32), jax.random.permutation(value_key, 9) + 1])
    rows_9, cols_9 = _line_order(row_key), _line_order(col_key)
    cells_9x9 = 9 * rows_9[:, None] + cols_9[None, :]
    cells_81 = jnp.where(jax.random.bernoulli(flip_key), cells_9x9.T, cells_9x9).reshape(81)

    def apply(board_81):
        return relabel_10[jnp.asarray(board_81, jnp.int32)[cells_81]]

    return apply(puzzle_81), apply(solution_81)


def parse_puzzle(s: str) -> np.ndarray:
    """A board (int32 [81]) from an 81-character row-major string, ``.`` or ``0`` for empty cells."""
    s = s.strip()
    if len(s) != 81:
        raise ValueError(f"puzzle string has {len(s)} characters, expected 81: {s!r}")
    bad = sorted(set(s) - set(".0123456789"))
    if bad:
        raise ValueError(f"puzzle string has characters other than '.' and digits: {bad}")
    return np.array([0 if ch == "." else int(ch) for ch in s], dtype=np.int32)


def format_puzzle(board) -> str:
    """The 81-character string of a board, ``.`` for empty cells."""
    board = np.asarray(board)
    if board.shape != (81,) or board.min() < 0 or board.max() > 9:
        raise ValueError(f"board must have shape (81,) and values in 0..9, got shape {board.shape}")
    return "".join("." if v == 0 else str(int(v)) for v in board)
