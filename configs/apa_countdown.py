"""APA (advantage-induced policy alignment) on Countdown, the SoS paper's policy improvement.

Usage::

    python -m sos_jax.main --config=configs/apa_countdown.py --workdir=workdir/apa

Loss per token (log pi - 0.5 A - log pi_ref)^2 plus 10 x the value loss; value model: a copy of
the network with an MLP head; GAE with gamma 1, lambda 0.95, whitened advantages; sparse reward 1
for a solved trace; temperature 1.0; 2 epochs per batch. The paper used learning rate 1e-7 for a
250M model; the default uses 1e-5 for the quickstart model. Presets: ``default``, ``tiny``.
"""

from sos_jax.jobs import rl


def get_config(preset: str = "default"):
    config = rl.preset_config("apa", preset)
    if preset in ("", "default"):
        config.train.update(steps=100, learning_rate=1e-5, value_learning_rate=1e-4, epochs=2, minibatch_rows=32)
    return config
