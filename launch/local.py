"""Runs one sos_jax job as several processes on this machine: multi-host code, tested on the CPU.

    python launch/local.py --num-processes 2 --devices-per-process 4 [--port P] [--dry-run] \\
        -- --config=configs/countdown_sos.py:tiny --workdir=DIR [--config.a=b ...]

starts ``--num-processes`` copies of ``python -m sos_jax.main`` with ``JAX_PLATFORMS=cpu`` and
``JAX_NUM_CPU_DEVICES`` set to ``--devices-per-process``, each given the arguments after ``--`` and
``--coordinator_address=localhost:P --num_processes=N --process_id=I`` (``P``: ``--port``, or a
free port). Together they form one JAX run over ``N x D`` CPU devices. Every line a process prints
is shown prefixed with ``[I]``. When a process fails the others are stopped; the exit status is
0 when every process succeeded. A SIGTERM to this script is passed on to every process (the
pretrain job then checkpoints and stops). ``--dry-run`` prints the commands (one line per process, with
their environment) and exits. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRACE_S = 10.0  # how long a stopped process may take to exit before it is killed
_PIECE = re.compile(rb"[^\r\n]*[\r\n]")


def free_port() -> int:
    """A TCP port on localhost that no one listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def commands(num_processes: int, devices_per_process: int, port: int,
             job_args: list[str]) -> list[tuple[dict[str, str], list[str]]]:
    """``(environment additions, argv)`` of each process, process 0 first."""
    path = os.environ.get("PYTHONPATH")
    env = {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices_per_process),
           "PYTHONPATH": REPO if not path else f"{REPO}{os.pathsep}{path}"}
    return [(env, [sys.executable, "-m", "sos_jax.main", *job_args, f"--coordinator_address=localhost:{port}",
                   f"--num_processes={num_processes}", f"--process_id={i}"]) for i in range(num_processes)]


def shell_line(env: dict[str, str], argv: list[str]) -> str:
    """The command as one shell line: ``VAR=value ... program args``."""
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.quote(a) for a in argv])


def _relay(index: int, stream, lock: threading.Lock) -> None:
    """Copies a process's output to ours, each line (or progress-bar redraw) prefixed with ``[index]``."""
    prefix = f"[{index}] ".encode()
    pending = b""
    while True:
        chunk = os.read(stream.fileno(), 65536)
        pending += chunk
        if not chunk and pending and not pending.endswith((b"\n", b"\r")):
            pending += b"\n"  # the last line, unterminated
        pieces = _PIECE.findall(pending)  # complete lines (or redraws), separator included
        if pieces:
            with lock:
                sys.stdout.buffer.write(b"".join(p if p in (b"\n", b"\r") else prefix + p for p in pieces))
                sys.stdout.buffer.flush()
            pending = pending[sum(len(p) for p in pieces):]
        if not chunk:
            stream.close()
            return


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every process still running, then SIGKILL to those left after ``GRACE_S``."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for p in processes:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _first_failure(processes: list[subprocess.Popen]) -> int | None:
    """The index of the first process that ended with a non-zero status, or None."""
    return next((i for i, p in enumerate(processes) if p.poll() not in (None, 0)), None)


def run(cmds: list[tuple[dict[str, str], list[str]]]) -> int:
    """Starts every command, relays their output, and returns 0 when all succeed; when one fails,
    stops the others and returns its exit status (1 for a process ended by a signal)."""
    lock = threading.Lock()
    processes, relays = [], []
    for index, (env, argv) in enumerate(cmds):
        p = subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        processes.append(p)
        relays.append(threading.Thread(target=_relay, args=(index, p.stdout, lock), daemon=True))
        relays[-1].start()
    # A SIGTERM to the launcher (a scheduler's preemption notice) goes to every process: they save and stop.
    signal.signal(signal.SIGTERM, lambda signum, frame: [p.send_signal(signum) for p in processes if p.poll() is None])
    try:
        while _first_failure(processes) is None and any(p.poll() is None for p in processes):
            time.sleep(0.05)
    except KeyboardInterrupt:
        _stop(processes)
        return 130
    failed = _first_failure(processes)
    if failed is not None:
        _stop(processes)
        code = processes[failed].returncode
        print(f"launch/local.py: process {failed} exited with status {code}; stopped the others", file=sys.stderr)
    for t in relays:
        t.join()
    return 0 if failed is None else (code if code > 0 else 1)


def main(argv: list[str]) -> int:
    """The command line (see the module docstring); returns the exit status."""
    ours, job_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="launch/local.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-processes", type=int, required=True, help="processes to start")
    parser.add_argument("--devices-per-process", type=int, required=True, help="fake CPU devices in each")
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = parser.parse_args(ours)
    if args.num_processes < 1:
        parser.error(f"--num-processes={args.num_processes}: must be at least 1")
    if args.devices_per_process < 1:
        parser.error(f"--devices-per-process={args.devices_per_process}: must be at least 1")
    if args.port is not None and not 1 <= args.port <= 65535:
        parser.error(f"--port={args.port}: must be in 1..65535")
    if not job_args:
        parser.error("give the job's arguments after --, e.g. -- --config=configs/countdown_sos.py:tiny --workdir=DIR")
    cmds = commands(args.num_processes, args.devices_per_process, args.port or free_port(), job_args)
    if args.dry_run:
        for env, command in cmds:
            print(shell_line(env, command))
        return 0
    return run(cmds)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
