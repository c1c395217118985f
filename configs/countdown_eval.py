"""Evaluating checkpoints on held-out Countdown problems.

Usage::

    python -m sos_jax.main --config=configs/countdown_eval.py --workdir=OUT \
        --config.checkpoint=sos=runs/sos,ot=runs/ot --config.data.data_dir=data/countdown

Presets:

- ``default``: the test splits (seen and unseen targets) of a written dataset, 1,000 problems each,
  greedy decoding plus 8 samples per problem at temperature 1.0 for pass@k.
- ``tiny``: 16 generated problems per split, 4 samples, at most 64 new tokens (tests).
"""

from ml_collections import config_dict

from sos_jax.jobs import evaluate


def get_config(preset: str = "default") -> config_dict.ConfigDict:
    config = evaluate.default_config()
    preset = preset or "default"
    if preset == "tiny":
        config.data.source = "generated"
        config.data.num_problems = 16
        config.data.env.num_count = 3
        config.sampling.batch_size = 8
        config.sampling.num_samples = 4
        config.sampling.max_new_tokens = 64
        config.ks = (1, 2, 4)
    elif preset != "default":
        raise ValueError(f"configs/countdown_eval.py: unknown preset {preset!r}; choose default or tiny")
    return config
