"""Sudoku datasets: backtracking traces (``bt``) and direct solutions (``direct``) of the same
generated puzzles, written once.

Usage::

    python -m sos_jax.main --config=configs/sudoku_data.py[:PRESET] --workdir=DIR \
        [--config.splits.train=100000 --config.branch=row-major ...]

The dataset lands in ``DIR/sos_sudoku/{bt,direct}/1.0.0/`` (ArrayRecord shards, TFDS layout); read
it with ``tfds.data_source("sos_sudoku/bt", data_dir=DIR)`` or the grain pipeline. The 200 test
puzzles (``sos_jax.data.sudoku_test``) are never written.

Presets:

- ``default``: the study's scale: 2,800,000 train puzzles and 2,000 val; minimal puzzles (one
  removal pass, mean 24.4 clues, like the test puzzles), 64 symmetries of each fresh puzzle,
  ``full`` techniques, fewest-candidates branching; sequences up to 4,096 tokens.
- ``small``: 20,000 train, 500 val (a few minutes on a 2-core CPU).
- ``tiny``: 48 train, 16 val, sequences up to 1,024 tokens (tests).
"""

from ml_collections import config_dict

from sos_jax.jobs import dataset


def get_config(preset: str = "default") -> config_dict.ConfigDict:
    return dataset.sudoku_config(preset or "default")
