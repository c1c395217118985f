"""The sos_jax entry point.

    python -m sos_jax.main --config=configs/NAME.py[:preset] --workdir=DIR [--config.a.b=value ...]

runs the job that ``config.job`` names (see ``sos_jax.jobs.JOBS``). A bad flag, an unknown config
field, a value of the wrong type or out of range, or a workdir holding an earlier run is reported
as one line on stderr (exit status 2) before anything is compiled.

One run over several processes (hosts): ``--distributed`` lets JAX find its peers (Cloud TPU pods,
Slurm), or ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` names them (see
``sos_jax.distributed`` and ``launch/local.py``). Every job but ``bench`` (one host's numbers) runs
so; ``bench`` refuses.
"""

from __future__ import annotations

import importlib
import os
import re
import sys

# On the CPU, one JAX device per core (set before jax is imported): jobs split batches over devices.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

from absl import app, flags, logging
from ml_collections import config_flags

from sos_jax import distributed
from sos_jax.data import DataError
from sos_jax.jobs import JOBS, MULTI_PROCESS_JOBS, ConfigError, WorkdirError
from sos_jax.train.checkpoint import CheckpointError

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file, optionally with a preset: FILE.py[:preset]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "folder for the job's outputs (summary.json, plots)")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "run over several processes: jax.distributed.initialize() "
                                 "detects them (Cloud TPU pods, Slurm, Open MPI)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0's coordinator; implies "
                                   "--distributed")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in the run (with --coordinator_address)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index, 0..num_processes-1")


def run(config, workdir: str) -> dict:
    """Validates ``config`` for its job, then runs the job; returns the job's summary."""
    job = config.get("job") if hasattr(config, "get") else None
    if job not in JOBS:
        raise ConfigError(f"config.job={job!r}: unknown job; choose one of {', '.join(sorted(JOBS))}")
    if job not in MULTI_PROCESS_JOBS and distributed.is_multiprocess():
        raise ConfigError(f"config.job={job!r}: runs on one process only; start it without --distributed / "
                          f"--coordinator_address (multi-process jobs: {', '.join(sorted(MULTI_PROCESS_JOBS))})")
    module = importlib.import_module(JOBS[job])
    module.validate(config, workdir)
    return module.run(config, workdir)


def _die(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else str(text)


def _unknown_field(argv: list[str], error: Exception) -> str:
    """Names the ``--config.`` override whose path does not exist in the config."""
    text = str(error)
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    hint = f" (did you mean {hint.group(1)!r}?)" if hint else ""
    for word in words:
        for arg in argv[1:]:
            name = arg.lstrip("-")
            if not name.startswith("config."):
                continue
            path = name[len("config."):].split("=", 1)[0]
            if word in path.split("."):
                return f"{arg}: the config has no field config.{path}{hint}"
    return f"unknown config field: {_last_line(text)}"


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _die(_last_line(e))
    except (AttributeError, KeyError) as e:  # an override of a field the config does not have
        _die(_unknown_field(argv, e))


def _main(argv: list[str]) -> None:
    if not flags.FLAGS["verbosity"].present:  # library INFO lines (orbax, TFDS) would bury the progress bars
        logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        _die(f"unexpected arguments: {' '.join(argv[1:])}")
    _initialize_distributed()
    config = _CONFIG.value
    try:
        config.get("job")  # a config file that failed to load raises here
    except OSError as e:
        _die(f"--config={flags.FLAGS['config'].config_filename}: {_last_line(e)}")
    try:
        run(config, _WORKDIR.value)
    except (ConfigError, WorkdirError, DataError, CheckpointError) as e:
        _die(str(e))


def _initialize_distributed() -> None:
    """Joins the run's other processes when the flags ask for it (before any job touches a device)."""
    values = dict(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                  process_id=_PROCESS_ID.value)
    try:
        if not distributed.check_flags(distributed=_DISTRIBUTED.value, **values):
            return
        distributed.initialize(**values)
    except distributed.DistributedError as e:
        _die(str(e))
    except (RuntimeError, ValueError) as e:  # no peers found, coordinator unreachable, a backend already started
        _die(f"jax.distributed.initialize failed ({_last_line(e)}); with --distributed JAX looks for a Cloud TPU "
             "pod, Slurm or Open MPI, elsewhere give --coordinator_address, --num_processes and --process_id")


def main() -> None:
    """The command line: ``python -m sos_jax.main --config=FILE.py[:preset] --workdir=DIR``."""
    app.run(_main, flags_parser=_parse_flags)


if __name__ == "__main__":
    main()
