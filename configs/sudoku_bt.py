"""The backtracking study on Sudoku, bt form: a model trained on backtracking traces (deductions, guesses and reverts).

Usage::

    python -m sos_jax.main --config=configs/sudoku_bt.py:PRESET --workdir=DIR [--config.pretrain.train.steps=...]

Three stages in DIR (the ``study`` job): ``data/`` (the dataset job, configs/sudoku_data.py), ``model/``
(pretraining, 109-word vocabulary) and ``eval/`` (the 200 test puzzles: greedy decoding, accuracy within 400, 512, 1K, 2K and 4K generated tokens).
Every stage takes the usual overrides (``--config.dataset.splits.train=...``,
``--config.pretrain.model.num_layers=...``, ``--config.eval.sampling.batch_size=...``). Put it next to
the other form with configs/sudoku_eval.py.

Presets: ``tiny`` (tests: seconds), ``small`` (20,000 puzzles, the 3M model, 2,048-token context),
``bt-3m``, ``bt-17m``, ``bt-38m``, ``bt-144m`` (the study: 2.8M puzzles, context 4,096).
"""

from ml_collections import config_dict

from sos_jax.jobs import study


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    return study.sudoku_config("bt", preset or "tiny")
