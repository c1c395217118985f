"""The backtracking study on Sudoku, direct form: a model trained on direct solutions (the fills of
the solving path only, failed branches left out), evaluated on the 200 test puzzles by pass@1..16
of 16 samples per puzzle at temperature 0.7 (and greedy decoding).

Usage, stages and presets as configs/sudoku_bt.py::

    python -m sos_jax.main --config=configs/sudoku_direct.py:PRESET --workdir=DIR
"""

from ml_collections import config_dict

from sos_jax.jobs import study


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    return study.sudoku_config("direct", preset or "tiny")
