"""The backtracking and direct Sudoku models side by side, in one table and plot.

Usage::

    python -m sos_jax.main --config=configs/sudoku_eval.py --workdir=OUT \
        --config.checkpoint=bt=RUNS/bt/model,direct=RUNS/direct/model

The ``eval`` job on the 200 test puzzles: greedy decoding (accuracy within 400, 512, 1K, 2K and 4K
generated tokens) and 16 samples per puzzle at temperature 0.7 (pass@1..16) for every model; the
study's table on stdout and ``study.png`` in OUT.

Presets: ``default``; ``tiny`` (tests: 8 puzzles, 2 samples, 64 new tokens).
"""

from ml_collections import config_dict

from sos_jax.jobs import study


def get_config(preset: str = "default") -> config_dict.ConfigDict:
    config = study.sudoku_config("direct", "tiny" if preset == "tiny" else "bt-17m").eval
    if preset not in ("default", "tiny", None, ""):
        raise ValueError(f"configs/sudoku_eval.py: unknown preset {preset!r}; choose default or tiny")
    return config
