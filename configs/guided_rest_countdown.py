"""Guided-ReST on Countdown (Moon, Park, Song 2025): expert iteration with traces edited towards
the optimal solution.

Usage::

    python -m sos_jax.main --config=configs/guided_rest_countdown.py --workdir=workdir/guided_rest

Each iteration samples one trace per problem at temperature 1.0; each unsolved trace gets up to 3
rounds of editing (``sos_jax.rl.guided``: move to the next optimal node if it was generated but
not explored, else replace an explored child of the deepest optimal node with the optimal step)
and a continuation within the remaining token budget; solved traces are kept and the base model
is fine-tuned on them (2 epochs); 3 iterations. Presets: ``default``, ``tiny``.
"""

from sos_jax.jobs import rl


def get_config(preset: str = "default"):
    return rl.preset_config("guided_rest", preset)
