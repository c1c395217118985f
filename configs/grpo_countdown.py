"""GRPO on Countdown: group-normalised rewards, clipped ratio, KL to the pretrained model.

Usage::

    python -m sos_jax.main --config=configs/grpo_countdown.py --workdir=workdir/grpo \
        [--config.base=workdir/quickstart/sos --config.data.data_dir=workdir/quickstart/data]

The backtracking study (Qin et al. 2025) used 8 samples per prompt at temperature 0.7, learning
rate 1e-6 and a KL loss coefficient of 0.001 with a 17M model; the default keeps the group, the
temperature and the KL coefficient and raises the learning rate for the quickstart's 0.9M-parameter
model and 100 steps. Presets: ``default`` (the quickstart's SoS model and training problems),
``tiny`` (tests).
"""

from sos_jax.jobs import rl


def get_config(preset: str = "default"):
    config = rl.preset_config("grpo", preset)
    if preset in ("", "default"):
        config.train.update(steps=100, learning_rate=5e-5, minibatch_rows=32)
    return config
