"""Countdown datasets: every split in both forms (SoS traces and optimal paths), written once.

Usage::

    python -m sos_jax.main --config=configs/countdown_data.py[:PRESET] --workdir=DIR \
        [--config.splits.train=100000 --config.env.num_count=5 ...]

The dataset lands in ``DIR/sos_countdown/{sos,ot}/1.0.0/`` (ArrayRecord shards, TFDS layout);
read it with ``tfds.data_source("sos_countdown/sos", data_dir=DIR)`` or the grain pipeline.

Presets:

- ``default``: the reference scale: train 500,000 problems (seen targets), val/test on seen
  targets 1,000 / 10,000 (none in train), val/test on unseen targets 1,000 / 10,000; 4 numbers in
  1..99, targets 10..100, the published SoS mix; traces stored up to 16,384 tokens.
- ``small``: the same splits at 1/100 scale (about a minute on a 2-core CPU).
- ``tiny``: a few dozen problems per split, traces cut at 1,024 tokens (tests).
"""

from ml_collections import config_dict

from sos_jax.jobs import fields


def get_config(preset: str = "default") -> config_dict.ConfigDict:
    config = config_dict.ConfigDict()
    config.job = "dataset"
    config.source = "generate"  # "generate" on device, or "import" files of the original SoS JSON format
    config.seed = 0  # problems, strategies, heuristics, beams and BFS shuffles all derive from it
    config.split_seed = 4  # seed of the held-out target draw (4 is the reference split)
    config.splits = config_dict.ConfigDict()  # problems per split; 0 leaves a split out
    config.splits.train = 500_000
    config.splits.val_seen = 1_000
    config.splits.test_seen = 10_000
    config.splits.val_unseen = 1_000
    config.splits.test_unseen = 10_000
    config.forms = ("sos", "ot")  # SoS traces and optimal paths, of the same problems
    config.max_len = 16_384  # longer traces are stored cut (their full length is kept in ``total``)
    config.context_len = 4_096  # the table reports the share of traces longer than this
    config.batch_size = 1_024  # problems per on-device call (does not change the data; fits 2 x 2^k devices)
    config.overwrite = False  # replace a dataset written with other settings
    config.mix = fields.mix_config()  # the SoS mix (sos_jax.search.countdown.Mix)
    config.env = fields.env_config()  # the problem family (sos_jax.envs.countdown.CountdownSpec)
    config.files = config_dict.ConfigDict()  # source="import": one original-format JSON file per split
    for split in config.splits:
        config.files[split] = ""

    preset = preset or "default"
    if preset == "small":
        for split in config.splits:
            config.splits[split] //= 100
    elif preset == "tiny":
        config.splits.train = 64
        for split in ("val_seen", "test_seen", "val_unseen", "test_unseen"):
            config.splits[split] = 16
        config.max_len = 1_024
        config.batch_size = 32
    elif preset != "default":
        raise ValueError(f"configs/countdown_data.py: unknown preset {preset!r}; choose default, small or tiny")
    return config
