"""The 200 held-out Sudoku test puzzles of the original work (spec: sudoku.md), shipped with the package.

Never train on them. Each line of ``sudoku_test200.jsonl`` holds ``puzzle`` (81 characters, ``.``
empty), ``solution`` and ``clues``.
"""

from __future__ import annotations

import importlib.resources
import json

import numpy as np

from sos_jax.data import DataError
from sos_jax.tokenizers.sudoku import grid_values

FILE = "sudoku_test200.jsonl"


def load() -> tuple[np.ndarray, np.ndarray]:
    """(puzzles_Nx81, solutions_Nx81) as int8 arrays, row-major, 0 for an empty cell; N = 200."""
    path = importlib.resources.files("sos_jax.data").joinpath(FILE)
    puzzles, solutions = [], []
    with path.open("r", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                puzzles.append(grid_values(record["puzzle"]))
                solutions.append(grid_values(record["solution"]))
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path}: line {n} is not a Sudoku test record: {e}") from e
    return np.array(puzzles, np.int8), np.array(solutions, np.int8)
