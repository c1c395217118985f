"""Several processes, one run: ``jax.distributed`` set-up and the few rules jobs follow under it.

``sos_jax.main --distributed`` (or ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I``) calls :func:`initialize` before any job touches a device. Every process then sees
all devices of the run (``jax.devices()``) and its own (``jax.local_devices()``); the jobs build one
mesh over all of them and assemble each process's rows into global ``jax.Array``s. Without explicit
values JAX finds them itself on Cloud TPU pods, Slurm and Open MPI.

On the CPU (tests, ``launch/local.py``), cross-process collectives go through gloo over TCP.

The rules every multi-process job keeps: only the main process (index 0) writes summaries, metric
logs, TensorBoard files and plots, and prints progress (:func:`is_main_process`); a global array
that this process cannot see whole is fetched with :func:`fetch` (an all-gather), never with
``jax.device_get``; a decision taken from files (what is already written) is the main process's,
shared with :func:`agree`, so that every process takes the same path through the collectives;
orbax checkpoints are saved and restored by every process together.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

CPU_COLLECTIVES = "gloo"
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class DistributedError(ValueError):
    """A bad combination of the multi-process flags; the message names the flag."""


def check_flags(*, distributed: bool, coordinator_address: str | None, num_processes: int | None,
                process_id: int | None) -> bool:
    """Whether these flag values ask for several processes; DistributedError for a bad combination.

    ``--distributed`` alone lets JAX detect everything (Cloud TPU pods, Slurm, Open MPI);
    ``--coordinator_address`` (``host:port``) with ``--num_processes`` and ``--process_id`` names a
    process explicitly (``launch/local.py`` does this). ``--num_processes`` and ``--process_id`` go
    together, and need ``--distributed`` or ``--coordinator_address``.
    """
    requested = distributed or coordinator_address is not None
    given = [name for name, value in (("--num_processes", num_processes), ("--process_id", process_id))
             if value is not None]
    if given and not requested:
        raise DistributedError(f"{' and '.join(given)}: only with --coordinator_address=HOST:PORT (or --distributed)")
    if len(given) == 1:
        missing = "--process_id" if given == ["--num_processes"] else "--num_processes"
        raise DistributedError(f"{given[0]} needs {missing} as well")
    if coordinator_address is not None:
        match = _ADDRESS.match(coordinator_address)
        if not match or not 1 <= int(match.group(2)) <= 65535:
            raise DistributedError(f"--coordinator_address={coordinator_address!r}: must be HOST:PORT "
                                   "(a port 1..65535)")
    if num_processes is not None and num_processes < 1:
        raise DistributedError(f"--num_processes={num_processes}: must be at least 1")
    if process_id is not None and not 0 <= process_id < num_processes:
        raise DistributedError(f"--process_id={process_id}: must be in 0..{num_processes - 1} "
                               f"(--num_processes={num_processes})")
    return requested


def initialize(*, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Joins this process to the run with ``jax.distributed.initialize`` (values left None are
    detected by JAX), with gloo collectives on the CPU. Call it before anything uses a device."""
    import jax

    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", CPU_COLLECTIVES)
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def is_multiprocess() -> bool:
    """Whether this run spans several processes (never starts a JAX backend when it does not)."""
    import jax

    return jax.distributed.is_initialized() and jax.process_count() > 1


def is_main_process() -> bool:
    """Whether this process writes the run's files and prints its progress (process 0, or the only one)."""
    import jax

    return not is_multiprocess() or jax.process_index() == 0


def say(*args, **kwargs) -> None:
    """``print`` (flushed) on the main process; nothing on the others."""
    if is_main_process():
        print(*args, **{"flush": True, **kwargs})


def fetch(tree: Any) -> Any:
    """``jax.device_get`` for global arrays: arrays this process holds whole (or fully replicated)
    are copied from its own devices; the others are all-gathered from every process, so on several
    processes every process must call it with the same arrays."""
    import jax
    import numpy as np

    def whole(x):
        return not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated

    leaves = jax.tree.leaves(tree)
    if all(whole(x) for x in leaves):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(lambda x: np.asarray(x) if whole(x) else multihost_utils.process_allgather(x, tiled=True),
                        tree)


def agree(compute: Callable[[], Any]) -> Any:
    """``compute()`` run by the main process alone, its result (anything JSON can carry) returned on
    every process; on several processes every process must call it, and the others wait for it."""
    if not is_multiprocess():
        return compute()
    import numpy as np
    from jax.experimental import multihost_utils

    sent = np.frombuffer(json.dumps(compute()).encode(), np.uint8) if is_main_process() else np.zeros(0, np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int64(sent.size)))
    buffer = np.zeros(size, np.uint8)
    buffer[: sent.size] = sent
    return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes().decode())


def every_process(flag: bool) -> bool:
    """Whether ``flag`` holds on every process; on several processes every process must call it."""
    if not is_multiprocess():
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(flag))))
