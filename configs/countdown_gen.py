"""Countdown trace generation: sample problems on device and write Stream-of-Search traces.

Usage::

    python -m sos_jax.main --config=configs/countdown_gen.py[:PRESET] --workdir=DIR \
        [--config.num_problems=5000 --config.env.num_count=5 ...]

Presets:

- ``default``: 1,000 problems in the reference setting (4 numbers in 1..99, targets 10..100,
  ``seen`` split, SoS mix, traces up to 4,096 tokens), one batch of 1,000.
- ``quickstart``: the same 1,000 traces; about a minute on a 2-core CPU, compilation included.
- ``tiny``: 64 problems, traces cut at 512 tokens, batches of 32 (tests).
"""

from ml_collections import config_dict

from sos_jax.jobs import fields


def get_config(preset: str = "default") -> config_dict.ConfigDict:
    config = config_dict.ConfigDict()
    config.job = "generate"
    config.seed = 0  # problems, strategies, heuristics, beams and BFS shuffles all derive from it
    config.num_problems = 1000
    config.batch_size = 1024  # problems per jitted call (a multiple of 2 x the devices); the last is padded
    config.split = "seen"  # target split: "seen", "unseen" (held-out targets) or "all"
    config.split_seed = 4  # seed of the held-out target draw (4 is the reference split)
    config.strategy = "sos"  # "sos": 50% DFS / 50% BFS beam 1..5, sum/mult; "ot": optimal path
    config.max_len = 4096  # token buffer per trace; longer traces are cut and flagged truncated
    config.overwrite = False  # replace the outputs of an earlier run in the same workdir
    config.show_examples = True  # print a solved and an unsolved trace at the end

    config.mix = fields.mix_config()  # the SoS mix (strategy "sos"; sos_jax.search.countdown.Mix)

    config.env = fields.env_config()  # the problem family (sos_jax.envs.countdown.CountdownSpec)

    preset = preset or "default"
    if preset in ("default", "quickstart"):
        pass
    elif preset == "tiny":
        config.num_problems = 64
        config.batch_size = 32
        config.max_len = 512
    else:
        raise ValueError(f"configs/countdown_gen.py: unknown preset {preset!r}; choose default, quickstart or tiny")
    return config
