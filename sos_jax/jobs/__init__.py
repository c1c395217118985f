"""Jobs that ``sos_jax.main`` runs, one module per ``config.job``.

A job module has ``validate(config, workdir)``, which checks the config and the workdir quickly and
raises :class:`ConfigError` or :class:`WorkdirError` with a one-line message, and
``run(config, workdir) -> dict``, which does the work and returns the summary it wrote.
"""

from __future__ import annotations

from sos_jax.files import write_atomic

__all__ = ["JOBS", "MULTI_PROCESS_JOBS", "ConfigError", "WorkdirError", "write_atomic"]

# config.job -> module that implements it
JOBS = {
    "generate": "sos_jax.jobs.generate",
    "dataset": "sos_jax.jobs.dataset",
    "batches": "sos_jax.jobs.batches",
    "pretrain": "sos_jax.jobs.pretrain",
    "eval": "sos_jax.jobs.evaluate",
    "quickstart": "sos_jax.jobs.quickstart",
    "study": "sos_jax.jobs.study",
    "rl": "sos_jax.jobs.rl",
    "bench": "sos_jax.jobs.bench",
}
# Jobs that run over several processes (``sos_jax.distributed``); ``sos_jax.main`` refuses the others there.
MULTI_PROCESS_JOBS = frozenset({"batches", "dataset", "eval", "generate", "pretrain", "quickstart", "rl", "study"})


class ConfigError(ValueError):
    """A config field with a wrong type or value; the message names the field."""


class WorkdirError(RuntimeError):
    """The workdir cannot be used (for example it holds a finished run and overwrite is off)."""
