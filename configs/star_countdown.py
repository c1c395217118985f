"""STaR (expert iteration) on Countdown, as in the SoS paper.

Usage::

    python -m sos_jax.main --config=configs/star_countdown.py --workdir=workdir/star

Each round samples one trace per training problem at temperature 0.8, keeps the solved ones (cut
after the goal line) and fine-tunes the pretrained model (not the previous round's) on them; 3
rounds. The paper used about 100,000 kept traces per round and learning rate 1e-5; the default
samples 2,000 quickstart problems per round. Presets: ``default``, ``tiny``.
"""

from sos_jax.jobs import rl


def get_config(preset: str = "default"):
    return rl.preset_config("star", preset)
