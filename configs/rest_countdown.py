"""ReST (expert iteration) on Countdown, the Guided-ReST paper's baseline.

Usage::

    python -m sos_jax.main --config=configs/rest_countdown.py --workdir=workdir/rest

The Guided-ReST loop without the editing: one sample per problem at temperature 1.0, keep the
solved traces, fine-tune from the base model; the paper fine-tuned 3 epochs per iteration, for 3
iterations. Presets: ``default``, ``tiny``.
"""

from sos_jax.jobs import rl


def get_config(preset: str = "default"):
    config = rl.preset_config("rest", preset)
    config.expert.epochs = 3 if preset in ("", "default") else config.expert.epochs
    return config
