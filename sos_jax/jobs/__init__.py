"""Jobs that ``sos_jax.main`` runs, one module per ``config.job``.

A job module has ``validate(config, workdir)``, which checks the config and the workdir quickly and
raises :class:`ConfigError` or :class:`WorkdirError` with a one-line message, and
``run(config, workdir) -> dict``, which does the work and returns the summary it wrote.
"""

from __future__ import annotations

import os
import tempfile

# config.job -> module that implements it
JOBS = {
    "generate": "sos_jax.jobs.generate",
}


class ConfigError(ValueError):
    """A config field with a wrong type or value; the message names the field."""


class WorkdirError(RuntimeError):
    """The workdir cannot be used (for example it holds a finished run and overwrite is off)."""


def write_atomic(path: str, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
