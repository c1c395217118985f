"""Training batches from a dataset or the on-device generator, as a pretraining run would draw them.

Usage::

    # the grain pipeline over a dataset written by configs/countdown_data.py
    python -m sos_jax.main --config=configs/countdown_batches.py --workdir=OUT \
        --config.data.source=dataset --config.data.data_dir=DIR
    # fresh traces from the on-device generator, no files
    python -m sos_jax.main --config=configs/countdown_batches.py --workdir=OUT --config.data.source=online

``config.data`` is the input section every training config shares (``sos_jax.jobs.inputs``).

Presets: ``default`` (16 rows of 4,096 tokens, 20 batches) and ``tiny`` (8 rows of 256 tokens,
3 numbers per problem, 4 batches; tests).
"""

from ml_collections import config_dict

from sos_jax.jobs import inputs


def get_config(preset: str = "default") -> config_dict.ConfigDict:
    config = config_dict.ConfigDict()
    config.job = "batches"
    config.num_batches = 20  # batches timed after one warm-up batch
    config.overwrite = False  # replace the summary of an earlier run in the same workdir
    config.data = inputs.data_config()

    preset = preset or "default"
    if preset == "tiny":
        config.num_batches = 4
        config.data.seq_len = 256
        config.data.global_batch_size = 8
        config.data.env.num_count = 3
    elif preset != "default":
        raise ValueError(f"configs/countdown_batches.py: unknown preset {preset!r}; choose default or tiny")
    return config
