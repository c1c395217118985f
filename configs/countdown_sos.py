"""Pretraining a GPT on Countdown Stream-of-Search streams.

Usage::

    python -m sos_jax.main --config=configs/countdown_sos.py:PRESET --workdir=DIR \
        [--config.train.steps=2000 --config.data.source=dataset --config.data.data_dir=DATA ...]

A run in a workdir that holds checkpoints resumes from the newest one by itself.

Presets (the model preset of ``sos_jax.models.gpt.PRESETS``, with a batch and schedule to match):

- ``tiny``: a model under 1M parameters, 256-token rows, 8 rows, 20 steps (tests, CI).
- ``small``: about 20M parameters, 1,024-token rows.
- ``sos-250m``: the original SoS model (16 layers, 16 heads, d_model 1,024, MLP 4,096, context 4,096).
- ``bt-3m``, ``bt-17m``, ``bt-38m``, ``bt-144m``: the backtracking study's model sizes, context 4,096.

``PRESET@TOPOLOGY`` (``bt-144m@v5e-256``, ``sos-250m@8xH100``; ``sos_jax.topologies``) takes the mesh
of a TPU slice or GPU nodes and a batch that splits over it; with ``--config.train.plan_only=True``
the job only prints and writes (``plan.json``) the mesh, the batch per device and the compiled
step's memory estimate against the devices' memory.
"""

from ml_collections import config_dict

from sos_jax.jobs import pretrain


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    return pretrain.default_config(preset or "tiny", form="sos")
