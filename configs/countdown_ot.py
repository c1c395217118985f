"""Pretraining a GPT on Countdown optimal paths (the baseline that never sees search).

Usage::

    python -m sos_jax.main --config=configs/countdown_ot.py:PRESET --workdir=DIR [--config.FIELD=VALUE ...]

The same presets and fields as ``configs/countdown_sos.py``; the data are optimal paths (the online
generator's ``ot`` strategy, or the ``ot`` form of a dataset).
"""

from ml_collections import config_dict

from sos_jax.jobs import pretrain


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    return pretrain.default_config(preset or "tiny", form="ot")
