#!/usr/bin/env python3
"""Runs sos_jax on every worker of a Cloud TPU VM slice (a pod), with gcloud.

    launch/tpu_pod.py create  --name NAME --zone ZONE --accelerator-type v5litepod-64 [--spot]
    launch/tpu_pod.py copy    --name NAME --zone ZONE [--ref HEAD]        # this checkout -> every worker
    launch/tpu_pod.py install --name NAME --zone ZONE --git-url URL [--ref REF]
    launch/tpu_pod.py check   --name NAME --zone ZONE                     # devices seen by every worker
    launch/tpu_pod.py run     --name NAME --zone ZONE --config FILE.py[:preset] --workdir DIR [--detach] \\
        -- [--config.a.b=value ...]
    launch/tpu_pod.py up      ...                                         # create (or reuse), copy, run
    launch/tpu_pod.py delete  --name NAME --zone ZONE

Every worker gets the package in ``~/sos_jax`` (with its own ``.venv``) and runs
``python -m sos_jax.main --distributed`` with the same config, through
``gcloud compute tpus tpu-vm ssh NAME --worker=all``; ``jax.distributed.initialize()`` finds the
slice's other workers by itself. ``--dry-run`` prints every command, one per line and shell-quoted,
and runs nothing (not even ``gcloud ... describe``). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "sos_jax"  # the package's folder on every worker, relative to the home directory
REMOTE_TARBALL = "sos_jax.tar.gz"
GCLOUD_TPU = ["gcloud", "compute", "tpus", "tpu-vm"]

# Default TPU software (runtime) version per TPU generation, the prefix of --accelerator-type.
RUNTIME_VERSIONS = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
# States of an existing TPU VM that cannot run anything until it is deleted and created again.
DEAD_STATES = {"PREEMPTED", "TERMINATED", "STOPPED", "STOPPING", "DELETING"}
# Flags of sos_jax.main that this launcher sets itself: not accepted after `--`.
OWN_FLAGS = ("--config=", "--workdir=", "--distributed")


class LaunchError(Exception):
    """A bad argument or a failed step; the message is one line for the user."""


def quote(word: str) -> str:
    """``word`` quoted for a POSIX shell: like ``shlex.quote``, but in double quotes when that avoids
    escaping single quotes (so that a quoted remote command stays readable)."""
    if "'" in word and not any(c in word for c in '"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)


def quote_remote(word: str) -> str:
    """``word`` quoted for the shell of a worker, in double quotes where they suffice, so that the
    remote command itself fits in single quotes."""
    if shlex.quote(word) == word or any(c in word for c in '"$`\\!'):
        return shlex.quote(word)
    return f'"{word}"'


def join(command: list[str]) -> str:
    """``command`` as one shell line."""
    return " ".join(quote(word) for word in command)


def gcloud_tpu(verb: str, args: argparse.Namespace, *rest: str) -> list[str]:
    """``gcloud compute tpus tpu-vm VERB NAME ... --zone=ZONE [--project=P]``, with ``rest`` after
    the TPU name (``scp`` takes its own positionals and passes ``NAME`` itself)."""
    target = [] if verb == "scp" else [args.name]
    project = [f"--project={args.project}"] if args.project else []
    return [*GCLOUD_TPU, verb, *target, *rest, f"--zone={args.zone}", *project]


def ssh_all(args: argparse.Namespace, command: str) -> list[str]:
    """The gcloud command that runs the shell ``command`` on every worker of the slice at once."""
    return gcloud_tpu("ssh", args, "--worker=all", f"--command={command}")


def runtime_version(accelerator_type: str) -> str:
    """The default TPU software version for ``accelerator_type`` (e.g. ``v5litepod-64``)."""
    generation = accelerator_type.rsplit("-", 1)[0]
    if generation not in RUNTIME_VERSIONS or not accelerator_type.rsplit("-", 1)[-1].isdigit():
        raise LaunchError(
            f"--accelerator-type {accelerator_type}: unknown TPU type; expected GENERATION-SIZE with GENERATION one "
            f"of {', '.join(RUNTIME_VERSIONS)} (e.g. v5litepod-64, v5p-128), or give --version yourself")
    return RUNTIME_VERSIONS[generation]


def describe_command(args: argparse.Namespace) -> list[str]:
    """The command that prints the state of the TPU VM, and fails when there is none."""
    return gcloud_tpu("describe", args, "--format=value(state)")


def create_command(args: argparse.Namespace) -> list[str]:
    """The command that creates the TPU VM slice."""
    version = args.version or runtime_version(args.accelerator_type)
    extra = ["--spot"] if args.spot else ["--preemptible"] if args.preemptible else []
    return gcloud_tpu("create", args, f"--accelerator-type={args.accelerator_type}", f"--version={version}", *extra)


def venv_script(python: str, extras: str) -> str:
    """Shell commands, run inside the package folder on a worker, that make ``.venv`` (with
    ``python`` when the worker has it, else with a Python 3.12 fetched by uv) and install the
    package into it with ``extras``."""
    py = quote_remote(python)
    make_venv = (f"if command -v {py} >/dev/null 2>&1; then {py} -m venv .venv; else python3 -m pip install "
                 f"--user --quiet uv && ~/.local/bin/uv venv --seed --python 3.12 .venv; fi")
    target = quote_remote(f".[{extras}]" if extras else ".")
    return (f"{{ test -x .venv/bin/python || {{ {make_venv}; }}; }} "
            f"&& .venv/bin/python -m pip install --quiet --upgrade pip "
            f"&& .venv/bin/python -m pip install --quiet -e {target}")


def copy_commands(args: argparse.Namespace) -> list[list[str]]:
    """Packs ``args.ref`` of this checkout with ``git archive``, copies it to every worker and
    installs it there (``~/sos_jax``, keeping an existing ``.venv``)."""
    tarball = os.path.join(tempfile.gettempdir(), f"sos_jax-{args.name}.tar.gz")
    unpack = (f"mkdir -p {REMOTE_DIR} "
              f"&& find {REMOTE_DIR} -mindepth 1 -maxdepth 1 -not -name .venv -exec rm -rf {{}} + "
              f"&& tar -xzf {REMOTE_TARBALL} -C {REMOTE_DIR} && rm {REMOTE_TARBALL} && cd {REMOTE_DIR} && "
              + venv_script(args.python, args.extras))
    return [
        ["git", "-C", ROOT, "archive", "--format=tar.gz", f"--output={tarball}", args.ref],
        gcloud_tpu("scp", args, tarball, f"{args.name}:{REMOTE_TARBALL}", "--worker=all"),
        ssh_all(args, unpack),
    ]


def install_commands(args: argparse.Namespace) -> list[list[str]]:
    """Clones (or updates) ``args.git_url`` at ``args.ref`` into ``~/sos_jax`` on every worker and
    installs it there."""
    url, ref = quote_remote(args.git_url), quote_remote(args.ref)
    script = (f"{{ test -d {REMOTE_DIR}/.git || {{ rm -rf {REMOTE_DIR} && git clone --quiet {url} {REMOTE_DIR}; }}; }} "
              f"&& cd {REMOTE_DIR} && git remote set-url origin {url} && git fetch --quiet --force origin {ref} "
              f"&& git checkout --quiet --force FETCH_HEAD && " + venv_script(args.python, args.extras))
    return [ssh_all(args, script)]


def check_commands(args: argparse.Namespace) -> list[list[str]]:
    """Prints, on every worker, four numbers: its process index, the number of processes, and the
    global and local device counts."""
    probe = ("import jax; jax.distributed.initialize(); "
             "print(jax.process_index(), jax.process_count(), jax.device_count(), jax.local_device_count())")
    return [ssh_all(args, f"cd {REMOTE_DIR} && .venv/bin/python -c {quote_remote(probe)}")]


def run_commands(args: argparse.Namespace) -> list[list[str]]:
    """Runs ``python -m sos_jax.main --distributed`` with the same config on every worker."""
    if args.workdir.startswith("gs://"):
        raise LaunchError(
            f"--workdir {args.workdir}: sos_jax writes its workdir with local file calls; mount the bucket with "
            f"gcsfuse at the same path on every worker (e.g. /mnt/bucket) and give that path")
    if not os.path.isabs(args.workdir):
        print(f"warning: --workdir {args.workdir} is relative: each worker writes under its own "
              f"~/{REMOTE_DIR}/{args.workdir}, not a shared folder", file=sys.stderr)
    main = [".venv/bin/python", "-m", "sos_jax.main", "--distributed", f"--config={args.config}",
            f"--workdir={args.workdir}", *args.main_flags]
    main = " ".join(quote_remote(word) for word in main)
    command = f"cd {REMOTE_DIR} && {main}"
    if args.detach:
        command = f"cd {REMOTE_DIR} && nohup {main} > run.log 2>&1 < /dev/null &"
    return [ssh_all(args, command)]


def delete_commands(args: argparse.Namespace) -> list[list[str]]:
    """Deletes the TPU VM slice without asking."""
    return [gcloud_tpu("delete", args, "--quiet")]


def execute(command: list[str]) -> None:
    """Runs ``command`` (echoed on stderr first); a failure becomes a ``LaunchError``."""
    print(f"+ {join(command)}", file=sys.stderr, flush=True)
    try:
        code = subprocess.run(command).returncode
    except FileNotFoundError:
        raise LaunchError(f"{command[0]}: not found on PATH (install the Google Cloud CLI, then `gcloud auth login`)")
    if code != 0:
        raise LaunchError(f"exit status {code}: {join(command)}")


def create_or_reuse(args: argparse.Namespace) -> None:
    """Creates the TPU VM unless ``describe`` finds it, in which case it is reused (if alive)."""
    create = create_command(args)
    describe = describe_command(args)
    if args.dry_run:
        print(join(describe))
        print(f"# only if the describe above fails (no TPU VM named {args.name} yet):")
        print(join(create))
        return
    try:
        found = subprocess.run(describe, capture_output=True, text=True)
    except FileNotFoundError:
        raise LaunchError("gcloud: not found on PATH (install the Google Cloud CLI, then `gcloud auth login`)")
    if found.returncode != 0:
        execute(create)
        return
    state = found.stdout.strip()
    if state in DEAD_STATES:
        raise LaunchError(f"TPU VM {args.name} exists but is {state}: delete it (launch/tpu_pod.py delete) "
                          f"and create it again")
    print(f"reusing TPU VM {args.name} (state {state or 'unknown'})", file=sys.stderr)


def perform(commands: list[list[str]], dry_run: bool) -> None:
    """Prints (dry run) or runs ``commands`` in order, stopping at the first failure."""
    for command in commands:
        if dry_run:
            print(join(command))
        else:
            execute(command)


def parser() -> argparse.ArgumentParser:
    """The command-line parser: one subcommand per step, ``up`` for create + copy + run."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="TPU VM name")
    common.add_argument("--zone", required=True, help="zone of the TPU VM, e.g. us-east5-a")
    common.add_argument("--project", help="Google Cloud project (default: gcloud's configured project)")
    common.add_argument("--dry-run", action="store_true", help="print the commands, one per line; run nothing")

    create = argparse.ArgumentParser(add_help=False)
    create.add_argument("--accelerator-type", required=True, help="e.g. v5litepod-64, v5p-128, v6e-256, v4-32")
    create.add_argument("--version", help="TPU software version (default: by generation, e.g. "
                                          "v2-alpha-tpuv5-lite for v5litepod)")
    kind = create.add_mutually_exclusive_group()
    kind.add_argument("--spot", action="store_true", help="a Spot TPU VM (cheaper; can be preempted)")
    kind.add_argument("--preemptible", action="store_true", help="a preemptible TPU VM (older form of --spot)")

    setup = argparse.ArgumentParser(add_help=False)
    setup.add_argument("--extras", default="tpu", help="pip extras to install with the package (default: tpu)")
    setup.add_argument("--python", default="python3.12",
                       help="Python >= 3.12 on the workers that makes ~/sos_jax/.venv (default: python3.12; "
                            "when missing, uv fetches a Python 3.12)")

    copy = argparse.ArgumentParser(add_help=False)
    copy.add_argument("--ref", default="HEAD", help="git commit, branch or tag of this checkout to copy (default: "
                                                    "HEAD; uncommitted changes are not copied)")

    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--config", required=True, help="config file relative to the repository root, FILE.py[:preset]")
    run.add_argument("--workdir", required=True,
                     help="output folder, the same shared path on every worker (NFS or a gcsfuse mount)")
    run.add_argument("--detach", action="store_true",
                     help="run in the background on every worker (output in ~/sos_jax/run.log) and return at once")

    p = argparse.ArgumentParser(
        prog="launch/tpu_pod.py", description="Run sos_jax on every worker of a Cloud TPU VM slice.",
        epilog="Flags after `--` (e.g. --config.pretrain.train.steps=1000) go to sos_jax.main on every worker.")
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")
    sub.add_parser("create", parents=[common, create], help="create the TPU VM, or reuse it if it exists")
    sub.add_parser("copy", parents=[common, setup, copy], help="copy this checkout to every worker and install it")
    install = sub.add_parser("install", parents=[common, setup], help="install from a git URL on every worker")
    install.add_argument("--git-url", required=True, help="repository URL every worker can clone")
    install.add_argument("--ref", default="HEAD", help="branch, tag or commit to install (default: the remote's HEAD)")
    sub.add_parser("check", parents=[common], help="print every worker's process index and device counts")
    sub.add_parser("run", parents=[common, run], help="run sos_jax.main on every worker with the same config")
    sub.add_parser("up", parents=[common, create, setup, copy, run], help="create (or reuse), copy, then run")
    sub.add_parser("delete", parents=[common], help="delete the TPU VM")
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """Parses ``argv``; the flags after the first ``--`` are kept as ``main_flags``."""
    split = argv.index("--") if "--" in argv else len(argv)
    p = parser()
    args = p.parse_args(argv[:split])
    args.main_flags = argv[split + 1:]
    if args.main_flags and args.step not in ("run", "up"):
        p.error(f"{args.step} takes no flags after `--` (only run and up pass flags to sos_jax.main)")
    for flag in args.main_flags:
        if not flag.startswith("--"):
            p.error(f"after `--`: {flag!r} is not a flag; expected flags of sos_jax.main such as --config.a.b=value")
        if flag.startswith(OWN_FLAGS):
            p.error(f"after `--`: {flag.split('=')[0]} is set by the launcher; give --config and --workdir before `--`")
    if getattr(args, "config", None) is not None and not args.config.split(":")[0].endswith(".py"):
        p.error(f"--config {args.config}: expected a config file FILE.py, optionally with :preset")
    return args


def main(argv: list[str]) -> int:
    """Entry point: runs (or prints) the steps ``argv`` asks for; returns the exit status."""
    args = parse(argv)
    steps = {"create": lambda _: [], "copy": copy_commands, "install": install_commands, "check": check_commands,
             "run": run_commands, "up": lambda a: [*copy_commands(a), *run_commands(a)], "delete": delete_commands}
    try:
        commands = steps[args.step](args)  # checks the arguments before anything runs
        if args.step in ("create", "up"):
            create_or_reuse(args)
        perform(commands, args.dry_run)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
