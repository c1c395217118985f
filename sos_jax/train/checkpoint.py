"""Checkpoints of a training run with orbax (v1 ``training.Checkpointer``).

A checkpoint holds the train state (parameters, optimizer state, step, RNG key data), the
data-iterator state (when the run has one) and, as metadata, the run's config. Saves are asynchronous, every
``every`` steps (and when asked, e.g. on SIGTERM); the last ``keep`` are kept. A checkpoint that
cannot be read, or that does not fit the model, raises ``CheckpointError`` naming it and saying
how to start afresh; nothing is ever deleted on error.
"""

from __future__ import annotations

import os

import jax

CHECKPOINTS = "checkpoints"
STEP_MARKER = "_CHECKPOINT_METADATA"  # in every finished step directory (saves in flight write to a temporary one)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored; the message names it."""


class Checkpoints:
    """The run's checkpoints under ``workdir/checkpoints``."""

    def __init__(self, workdir: str, *, every: int, keep: int):
        from orbax.checkpoint import v1 as ocp

        policies = ocp.training.save_decision_policies
        self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINTS)
        self._ckptr = ocp.training.Checkpointer(
            self.directory, save_decision_policy=policies.FixedIntervalPolicy(every),
            preservation_policy=ocp.training.preservation_policies.LatestN(keep))

    @property
    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        latest = self._ckptr.latest
        return None if latest is None else int(latest.step)

    def save(self, step: int, state: dict, data, config: dict, force: bool = False) -> bool:
        """Starts an asynchronous save of ``state`` and the iterator ``data`` (or None) at ``step``
        when the interval says so (or ``force``); returns whether it did."""
        return self._ckptr.save_checkpointables_async(
            step, _checkpointables(state, data), force=force, custom_metadata={"config": config}) is not None

    def restore(self, state: dict, data) -> dict:
        """The newest checkpoint's state (laid out and sharded like ``state``); restores ``data`` (if
        not None) in place."""
        step = self.latest_step
        where = os.path.join(self.directory, str(step))
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        try:
            loaded = self._ckptr.load_checkpointables(step, _checkpointables(abstract, data))
        except Exception as e:  # unreadable, or written for another model / optimizer / data source
            raise CheckpointError(
                f"{where}: cannot be restored ({type(e).__name__}: {str(e).splitlines()[0][:300]}); to start afresh "
                f"use another --workdir (the checkpoint is left in place)") from e
        return loaded["state"]

    def wait(self) -> None:
        """Blocks until pending saves are on disk."""
        self._ckptr.wait()

    def close(self) -> None:
        """Waits for pending saves and releases the checkpointer."""
        self._ckptr.close()


def _checkpointables(state, data) -> dict:
    return {"state": state} if data is None else {"state": state, "data": data}


def find_checkpoint(path: str) -> str:
    """The checkpoint directory ``path`` names: a step directory itself, or the newest step under a
    ``checkpoints/`` directory or under a run's workdir. ``CheckpointError`` when there is none."""
    def complete(folder: str) -> bool:
        return os.path.isfile(os.path.join(folder, STEP_MARKER))

    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such directory (give a pretrain workdir, its checkpoints/ or a step in it)")
    if complete(path):
        return path
    root = os.path.join(path, CHECKPOINTS) if os.path.isdir(os.path.join(path, CHECKPOINTS)) else path
    steps = sorted((int(name) for name in os.listdir(root) if name.isdigit() and complete(os.path.join(root, name))),
                   reverse=True)
    if not steps:
        raise CheckpointError(f"{path}: holds no complete checkpoint (looked in {root})")
    return os.path.join(root, str(steps[0]))


def saved_config(checkpoint: str) -> dict:
    """The run config stored with a checkpoint (as a plain dict)."""
    from orbax.checkpoint import v1 as ocp

    try:
        config = (ocp.metadata(checkpoint).custom_metadata or {}).get("config")
    except Exception as e:  # unreadable metadata
        raise CheckpointError(f"{checkpoint}: cannot read its metadata ({type(e).__name__}: {e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{checkpoint}: holds no run config (not written by sos_jax's pretrain job?)")
    return config


def load_params(checkpoint: str, abstract_params):
    """The parameters alone from a train-state checkpoint, laid out and sharded like
    ``abstract_params`` (``jax.ShapeDtypeStruct`` leaves); the optimizer state is not read."""
    from orbax.checkpoint import v1 as ocp

    context = ocp.Context()
    context.pytree.loading.partial_load = True
    try:
        with context:
            return ocp.load(checkpoint, {"params": abstract_params}, checkpointable_name="state")["params"]
    except Exception as e:  # unreadable, or written for another model
        raise CheckpointError(f"{checkpoint}: cannot load its parameters ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300]})") from e
