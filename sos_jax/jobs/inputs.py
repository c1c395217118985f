"""Training inputs from a config: ``config.data`` picks the grain pipeline over a written dataset
(``source="dataset"``) or the on-device generator (``source="online"``, Countdown only); both give the
same batches (``sos_jax.data.batch``) and checkpointable iterator state. ``data.task`` says whose
dataset it is (``countdown``: ``sos_countdown``, ``sudoku``: ``sos_sudoku``).

``data_config()`` is the default ``config.data`` that job configs start from; ``make_batches``
checks it (ConfigError names the field) and builds the iterator.
"""

from __future__ import annotations

from typing import Any

from sos_jax.jobs import ConfigError, fields

SOURCES = ("dataset", "online")
MIN_SEQ_LEN = 64


def data_config():
    """The default ``config.data``: packed 4,096-token rows from the online SoS generator."""
    from ml_collections import config_dict

    data = config_dict.ConfigDict()
    data.task = "countdown"  # "countdown" or "sudoku" (source="dataset" only)
    data.source = "online"  # "dataset": the grain pipeline over DIR; "online": fresh traces every step
    data.seq_len = 4096  # tokens per row (traces longer than this are cut)
    data.global_batch_size = 16  # rows per step, over all hosts
    data.packing = True  # several traces per row (segment ids keep them apart), or one per row
    data.mask_prompt = False  # True: no loss on the prompt line; False: the whole stream, as the original
    data.seed = 0
    # source="dataset": a dataset written by configs/countdown_data.py
    data.data_dir = ""  # the dataset job's workdir
    data.form = "sos"  # Countdown: "sos" traces or "ot" optimal paths; Sudoku: "bt" traces or "direct"
    data.split = "train"
    data.shuffle = True
    data.num_epochs = 0  # 0: repeat forever
    data.worker_count = 0  # grain worker processes (0: pack in the main process)
    # source="online": the on-device generator
    data.strategy = "sos"  # "sos" (the mix) or "ot"
    data.targets = "seen"  # target split: "seen", "unseen" or "all"
    data.split_seed = 4
    data.traces_per_step = 0  # 0: enough to fill the packed rows (see data.online)
    data.env = fields.env_config()
    data.mix = fields.mix_config()
    return data


def make_batches(config, mesh=None, start_step: int = 0) -> Any:
    """The iterator ``config.data`` describes (``data.pipeline.Batches`` or ``data.online.OnlineBatches``).

    ``start_step`` positions the online source (the dataset pipeline resumes from its saved state
    instead). ConfigError names the field at fault; a missing or corrupt dataset raises
    ``data.DataError`` naming the file.
    """
    config = config
    source = fields.choice(config, "data.source", SOURCES)
    seq_len = fields.integer(config, "data.seq_len", MIN_SEQ_LEN)
    batch = fields.integer(config, "data.global_batch_size", 1)
    packing = fields.boolean(config, "data.packing")
    mask_prompt = fields.boolean(config, "data.mask_prompt")
    seed = fields.integer(config, "data.seed", 0)
    try:
        if source == "dataset":
            return _dataset_batches(config, mesh, seq_len=seq_len, global_batch_size=batch, packing=packing,
                                    mask_prompt=mask_prompt, seed=seed)
        return _online_batches(config, mesh, start_step, seq_len=seq_len, global_batch_size=batch, packing=packing,
                               mask_prompt=mask_prompt, seed=seed)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config.data: {e}") from None


def dataset_store(config):
    """The tfds module of ``config.data.task``'s datasets (``countdown_tfds`` or ``sudoku_tfds``)."""
    if fields.task(config, "data.task").name == "sudoku":
        from sos_jax.data import sudoku_tfds

        return sudoku_tfds
    from sos_jax.data import countdown_tfds

    return countdown_tfds


def eval_splits(config) -> tuple[str, ...]:
    """The held-out splits of ``config.data.task``'s datasets that the pretraining eval reads."""
    return ("val",) if fields.task(config, "data.task").name == "sudoku" else ("val_seen", "val_unseen")


def _dataset_batches(config, mesh, **kwargs):
    from sos_jax.data import pipeline

    data_dir = fields.get(config, "data.data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError("config.data.data_dir: the workdir of a dataset job (configs/countdown_data.py or "
                          "configs/sudoku_data.py) is required for source='dataset'")
    store = dataset_store(config)
    form = fields.choice(config, "data.form", store.FORMS)
    split = fields.get(config, "data.split")
    epochs = fields.integer(config, "data.num_epochs", 0)
    source = store.open_split(data_dir, form, split)
    return pipeline.batches(source, shuffle=fields.boolean(config, "data.shuffle"), num_epochs=epochs or None,
                            worker_count=fields.integer(config, "data.worker_count", 0), mesh=mesh,
                            task=fields.task(config, "data.task"), **kwargs)


def _online_batches(config, mesh, start_step, **kwargs):
    from sos_jax.data import online
    from sos_jax.envs import countdown as env

    if fields.task(config, "data.task").name != "countdown":
        raise ConfigError("config.data.source='online': the online generator writes Countdown traces; train on a "
                          "written dataset (source='dataset') for other tasks")

    strategy = fields.choice(config, "data.strategy", online.STRATEGIES)
    kind = fields.choice(config, "data.targets", ("seen", "unseen", "all"))
    spec = fields.spec_from_config(config, "data.env")
    try:
        targets = env.split_targets(spec, kind, seed=fields.integer(config, "data.split_seed", 0))
    except ValueError as e:
        raise ConfigError(f"config.data.{e}") from None
    traces = fields.integer(config, "data.traces_per_step", 0)
    return online.online_batches(spec, targets, strategy=strategy, traces_per_step=traces or None,
                                 start_step=start_step, mesh=mesh, mix=fields.mix_from_config(config, "data.mix"), **kwargs)
