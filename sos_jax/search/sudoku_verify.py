"""The Sudoku answer verifier on word ids, in JAX, for evaluation and rewards.

``replay_tokens`` judges one id sequence exactly as ``sos_jax.envs.sudoku_check.replay_text``
judges its decoded text: ``replay_tokens(ids, n, p, s) == replay_text(decode(ids[:n]), p, s)``.
A fill is a cell word at position q followed by ``=`` and a digit word, the three alone on their
line: q is 0 or the word before it is ``n``, and the word after the digit is ``n`` or position q + 3
is the end (``length``). So ``guess : CELL [ .. ] = v`` and ``revert : CELL [ .. ] = none`` lines
are never fills (their cell follows ``:``), and neither is a fill run into other words on its line
(``SOL_S`` or ``SOL_E`` with no ``n`` between; the canonical sequence always has one). The fills are
replayed onto the puzzle in order, the last write to a cell winning, and the puzzle is solved when
the grid equals the solution.

Static shapes, no loop over tokens: shifted compares find the fills and one scatter-max finds the
last fill of each cell. Use it under ``jax.jit`` and ``jax.vmap``; ``replay_token_batch(ids_BxL,
lengths_B, puzzles_Bx81, solutions_Bx81)`` is ``jax.jit(jax.vmap(replay_tokens))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sos_jax.tokenizers import sudoku as tok

__all__ = ["replay_token_batch", "replay_tokens"]

_OUTSIDE = -1  # the id read before position 0 and at or after ``length``: a line boundary


def _shift(x, k):
    """x[p + k] at p, _OUTSIDE where p + k is outside 0..L-1."""
    (L,) = x.shape
    pad = jnp.full((abs(k),), _OUTSIDE, x.dtype)
    return jnp.concatenate([x, pad])[k : k + L] if k > 0 else jnp.concatenate([pad, x])[:L]


def replay_tokens(ids_L, length, puzzle_81, solution_81):
    """Whether the fills among the first ``length`` ids of ``ids_L`` (int [L]) solve the puzzle (bool scalar).

    ``puzzle_81`` holds the clues (0 empty), ``solution_81`` the solution, both int [81] row-major.
    """
    (L,) = ids_L.shape
    pos = jnp.arange(L, dtype=jnp.int32)
    length = jnp.clip(jnp.asarray(length, jnp.int32), 0, L)
    ids = jnp.where(pos < length, ids_L.astype(jnp.int32), _OUTSIDE)

    cell = ids - tok.CELL0
    before, after = _shift(ids, -1), _shift(ids, 3)
    value = _shift(ids, 2)
    fill = (
        (cell >= 0)
        & (cell < 81)
        & ((before == tok.NEWLINE) | (before == _OUTSIDE))
        & (_shift(ids, 1) == tok.EQUALS)
        & (value >= 0)
        & (value <= 9)
        & ((after == tok.NEWLINE) | (after == _OUTSIDE))
    )
    # The last fill of each cell; non-fills go to the extra slot 81.
    last_81 = jnp.full((82,), -1, jnp.int32).at[jnp.where(fill, cell, 81)].max(pos)[:81]
    grid_81 = jnp.where(last_81 >= 0, value[jnp.maximum(last_81, 0)], jnp.asarray(puzzle_81, jnp.int32))
    return jnp.all(grid_81 == jnp.asarray(solution_81, jnp.int32))


replay_token_batch = jax.jit(jax.vmap(replay_tokens))
