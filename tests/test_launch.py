"""The multi-host launchers: launch/tpu_pod.py (Cloud TPU pods) and launch/slurm.sbatch (Slurm).

Each test runs a launcher as a subprocess, mostly in its dry-run mode, with stand-ins for
``gcloud``, ``scontrol`` and ``srun`` on PATH; no JAX, no cloud, no cluster. Where a printed
command is meant for a worker's or a task's shell, the tests run it in bash against a fake
``python`` that records its arguments, so quoting mistakes show up as wrong arguments.
"""

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

from config_util import REPO

TPU_POD = os.path.join(REPO, "launch", "tpu_pod.py")
SLURM = os.path.join(REPO, "launch", "slurm.sbatch")
CONFIG = "configs/countdown_sos.py:tiny"
OVERRIDES = ["--config.pretrain.train.steps=7", "--config.name=it's a test"]


def _script(path, text):
    """Writes an executable script at ``path``."""
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _recorder(path):
    """A stand-in program that appends its argv (and a few environment variables) to ``$RECORD``
    as one JSON line and exits with ``$FAKE_EXIT`` (0 by default)."""
    return _script(path, f"""#!{sys.executable}
import json, os, sys
keep = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "JAX_LOCAL_DEVICE_IDS", "CUDA_VISIBLE_DEVICES")
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "env": {{k: os.environ[k] for k in keep if k in os.environ}}}}) + "\\n")
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
""")


def _records(path):
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


@pytest.fixture
def fake_bin(tmp_path):
    """A folder put first on PATH holding a recording ``gcloud``; yields (env, record file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _recorder(bin_dir / "gcloud")
    record = str(tmp_path / "gcloud.jsonl")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", RECORD=record)
    return env, record


def _tpu(env, *args):
    return subprocess.run([sys.executable, TPU_POD, *args], capture_output=True, text=True, env=env, timeout=60)


def _lines(stdout):
    """The commands of a dry run, each split into words (comment lines left out)."""
    return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


def _remote(words):
    """The shell command of a ``gcloud ... ssh --command=...`` line."""
    (command,) = [w[len("--command="):] for w in words if w.startswith("--command=")]
    return command


TPU = ["--name", "pod1", "--zone", "us-east5-a", "--project", "lab"]


# ---- launch/tpu_pod.py ------------------------------------------------------------------------------


def test_tpu_up_dry_run_prints_every_step_and_calls_no_gcloud(fake_bin):
    env, record = fake_bin
    result = _tpu(env, "up", "--dry-run", *TPU, "--accelerator-type", "v5litepod-64", "--spot",
                  "--config", CONFIG, "--workdir", "/mnt/shared/run1", "--", *OVERRIDES)
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(record), "a dry run called gcloud"
    describe, create, archive, scp, install, run = _lines(result.stdout)
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    assert describe[:6] == [*tpu_vm, "describe", "pod1"] and "--zone=us-east5-a" in describe
    assert create[:6] == [*tpu_vm, "create", "pod1"]
    assert {"--accelerator-type=v5litepod-64", "--version=v2-alpha-tpuv5-lite", "--spot", "--zone=us-east5-a",
            "--project=lab"} <= set(create)
    assert archive[:2] == ["git", "-C"] and "archive" in archive and archive[-1] == "HEAD"
    tarball = next(w for w in archive if w.startswith("--output=")).split("=", 1)[1]
    assert scp[:5] == [*tpu_vm, "scp"] and tarball in scp and "pod1:sos_jax.tar.gz" in scp and "--worker=all" in scp
    for ssh in (install, run):
        assert ssh[:6] == [*tpu_vm, "ssh", "pod1"] and "--worker=all" in ssh and "--zone=us-east5-a" in ssh
    assert 'pip install --quiet -e ".[tpu]"' in _remote(install)
    words = shlex.split(_remote(run))
    assert words[:3] == ["cd", "sos_jax", "&&"]
    assert words[3:] == [".venv/bin/python", "-m", "sos_jax.main", "--distributed", f"--config={CONFIG}",
                         "--workdir=/mnt/shared/run1", *OVERRIDES]


def _worker(tmp_path, index, record):
    """A fake worker's home: ``~/sos_jax/.venv/bin/python`` records its arguments."""
    home = tmp_path / f"worker{index}"
    (home / "sos_jax" / ".venv" / "bin").mkdir(parents=True)
    _recorder(home / "sos_jax" / ".venv" / "bin" / "python")
    return str(home)


def test_tpu_run_gives_every_worker_the_same_command_and_config(fake_bin, tmp_path):
    env, record = fake_bin
    result = _tpu(env, "run", "--dry-run", *TPU, "--config", CONFIG, "--workdir", "/mnt/shared/run 1", "--", *OVERRIDES)
    assert result.returncode == 0, result.stderr
    (ssh,) = _lines(result.stdout)
    assert "--worker=all" in ssh and not any(w.startswith("--worker=") and w != "--worker=all" for w in ssh)
    runs = str(tmp_path / "python.jsonl")
    for index in range(2):  # what each worker's shell does with the one command gcloud sends to all of them
        home = _worker(tmp_path, index, runs)
        done = subprocess.run(["bash", "-c", _remote(ssh)], cwd=home, env=dict(env, HOME=home, RECORD=runs))
        assert done.returncode == 0
    argvs = [r["argv"] for r in _records(runs)]
    assert argvs == [["-m", "sos_jax.main", "--distributed", f"--config={CONFIG}", "--workdir=/mnt/shared/run 1",
                      *OVERRIDES]] * 2


def test_tpu_run_detach_runs_in_the_background_with_a_log(fake_bin):
    env, _ = fake_bin
    result = _tpu(env, "run", "--dry-run", *TPU, "--config", CONFIG, "--workdir", "/w", "--detach")
    assert result.returncode == 0, result.stderr
    command = _remote(_lines(result.stdout)[0])
    assert "nohup .venv/bin/python -m sos_jax.main --distributed" in command
    assert command.endswith("> run.log 2>&1 < /dev/null &")


@pytest.mark.skipif(shutil.which("git") is None or not os.path.isdir(os.path.join(REPO, ".git")),
                    reason="needs git and a git checkout")
def test_tpu_copy_unpacks_the_checkout_on_a_worker_and_installs_it(fake_bin, tmp_path):
    env, record = fake_bin
    result = _tpu(env, "copy", "--dry-run", *TPU)
    assert result.returncode == 0, result.stderr
    archive, scp, ssh = _lines(result.stdout)
    assert not os.path.exists(record)
    tarball = str(tmp_path / "checkout.tar.gz")
    archive = [f"--output={tarball}" if w.startswith("--output=") else w for w in archive]
    assert subprocess.run(archive).returncode == 0  # git archive: reads the repository, changes nothing
    pips = str(tmp_path / "pip.jsonl")
    home = _worker(tmp_path, 0, pips)
    (tmp_path / "worker0" / "sos_jax" / "stale.txt").write_text("from an older copy")
    shutil.copy(tarball, os.path.join(home, "sos_jax.tar.gz"))  # what scp puts in the worker's home
    done = subprocess.run(["bash", "-c", _remote(ssh)], cwd=home, env=dict(env, HOME=home, RECORD=pips),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    package = os.path.join(home, "sos_jax")
    assert os.path.isfile(os.path.join(package, "configs", "countdown_sos.py"))
    assert os.path.isfile(os.path.join(package, "pyproject.toml"))
    assert not os.path.exists(os.path.join(package, "stale.txt"))
    assert not os.path.exists(os.path.join(home, "sos_jax.tar.gz"))
    assert os.path.isfile(os.path.join(package, ".venv", "bin", "python"))  # the existing venv is kept
    assert [r["argv"] for r in _records(pips)][-1] == ["-m", "pip", "install", "--quiet", "-e", ".[tpu]"]


def test_tpu_install_clones_the_git_url_at_the_ref_on_every_worker(fake_bin):
    env, record = fake_bin
    result = _tpu(env, "install", "--dry-run", *TPU, "--git-url", "https://example.org/lab/sos_jax.git",
                  "--ref", "v0.1.0", "--extras", "tpu,test")
    assert result.returncode == 0, result.stderr
    (ssh,) = _lines(result.stdout)
    command = _remote(ssh)
    assert "--worker=all" in ssh and not os.path.exists(record)
    assert "git clone --quiet https://example.org/lab/sos_jax.git sos_jax" in command
    assert "git fetch --quiet --force origin v0.1.0 && git checkout --quiet --force FETCH_HEAD" in command
    assert command.endswith('pip install --quiet -e ".[tpu,test]"')


def test_tpu_check_and_delete(fake_bin):
    env, record = fake_bin
    check = _tpu(env, "check", "--dry-run", *TPU)
    delete = _tpu(env, "delete", "--dry-run", *TPU)
    assert check.returncode == delete.returncode == 0
    (ssh,) = _lines(check.stdout)
    assert "--worker=all" in ssh and "jax.device_count(), jax.local_device_count()" in _remote(ssh)
    assert _lines(delete.stdout) == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod1", "--quiet",
                                      "--zone=us-east5-a", "--project=lab"]]
    assert not os.path.exists(record)


@pytest.mark.parametrize("args, code, message", [
    (["run", "--zone", "z", "--config", CONFIG, "--workdir", "/w"], 2, "required: --name"),
    (["run", "--name", "n", "--zone", "z", "--workdir", "/w"], 2, "required: --config"),
    (["create", "--name", "n", "--zone", "z", "--accelerator-type", "v5p-8", "--spot", "--preemptible"], 2,
     "not allowed with argument"),
    (["create", "--name", "n", "--zone", "z", "--accelerator-type", "tpu9-8"], 1, "unknown TPU type"),
    (["run", "--name", "n", "--zone", "z", "--config", CONFIG, "--workdir", "gs://bucket/run"], 1, "gcsfuse"),
    (["run", "--name", "n", "--zone", "z", "--config", "configs/x.txt", "--workdir", "/w"], 2, "expected a config"),
    (["run", "--name", "n", "--zone", "z", "--config", CONFIG, "--workdir", "/w", "--", "steps=3"], 2,
     "is not a flag"),
    (["run", "--name", "n", "--zone", "z", "--config", CONFIG, "--workdir", "/w", "--", "--workdir=/x"], 2,
     "set by the launcher"),
    (["delete", "--name", "n", "--zone", "z", "--", "--config.x=1"], 2, "takes no flags after"),
    (["up", "--name", "n", "--zone", "z", "--accelerator-type", "v5p-8", "--config", CONFIG, "--workdir",
      "gs://b/r"], 1, "gcsfuse"),
])
def test_tpu_bad_arguments_are_named_and_nothing_runs(fake_bin, args, code, message):
    env, record = fake_bin
    for dry in ([], ["--dry-run"]):
        result = _tpu(env, *args[:1], *dry, *args[1:])
        assert result.returncode == code, result.stderr
        assert message in result.stderr and result.stdout == ""
    assert not os.path.exists(record)


def test_tpu_create_reuses_an_existing_vm_and_creates_a_missing_one(fake_bin):
    env, record = fake_bin
    args = ["create", *TPU, "--accelerator-type", "v5p-128"]
    missing = _tpu(dict(env, FAKE_EXIT="1"), *args)  # describe fails: no such TPU VM; create fails too
    assert missing.returncode == 1 and "exit status 1" in missing.stderr
    assert [r["argv"][3] for r in _records(record)] == ["describe", "create"]
    assert "--version=v2-alpha-tpuv5" in _records(record)[1]["argv"]
    os.remove(record)
    found = _tpu(env, *args)  # describe succeeds: reused, nothing created
    assert found.returncode == 0 and "reusing TPU VM pod1" in found.stderr
    assert [r["argv"][3] for r in _records(record)] == ["describe"]


def test_tpu_a_failing_step_stops_the_launch(fake_bin):
    env, record = fake_bin
    result = _tpu(dict(env, FAKE_EXIT="3"), "run", *TPU, "--config", CONFIG, "--workdir", "/w")
    assert result.returncode == 1 and "error: exit status 3: gcloud compute tpus tpu-vm ssh pod1" in result.stderr
    assert len(_records(record)) == 1


# ---- launch/slurm.sbatch ----------------------------------------------------------------------------


def _slurm(env, *args):
    return subprocess.run(["bash", SLURM, *args], capture_output=True, text=True, env=env, timeout=60, cwd=REPO)


def _slurm_env(tmp_path, **extra):
    """The environment of a job on nodes gpu01, gpu02, with ``scontrol`` expanding ``gpu[01-02]``."""
    bin_dir = tmp_path / "slurm_bin"
    bin_dir.mkdir(exist_ok=True)
    _script(bin_dir / "scontrol", '#!/bin/bash\n[[ "$1 $2 $3" == "show hostnames gpu[01-02]" ]] || exit 1\n'
                                  'printf "gpu01\\ngpu02\\n"\n')
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SOS_JAX_"))}
    job = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2"}
    return {**clean, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **job, **extra}


MAIN = [f"--config={CONFIG}", "--workdir=/shared/run1", *OVERRIDES]
PORT = 61440 + 4242 % 4096


def _srun_line(stdout):
    (srun,) = [shlex.split(line) for line in stdout.splitlines() if line.startswith("srun ")]
    return srun


@pytest.mark.parametrize("mode, per_node", [("node", 1), ("gpu", 4)])
def test_slurm_dry_run_prints_srun_with_the_coordinator_and_each_task(tmp_path, mode, per_node):
    env = _slurm_env(tmp_path, SOS_JAX_DRY_RUN="1", SOS_JAX_MODE=mode, SLURM_GPUS_PER_NODE="h100:4",
                     SOS_JAX_PYTHON="/opt/env/bin/python")
    result = _slurm(env, "--", *MAIN)
    assert result.returncode == 0, result.stderr
    srun = _srun_line(result.stdout)
    tasks = 2 * per_node
    assert srun[:5] == ["srun", "--nodes=2", f"--ntasks={tasks}", f"--ntasks-per-node={per_node}",
                        "--kill-on-bad-exit=1"]
    assert srun[5:7] == ["bash", "-c"] and len(srun) == 8
    task = srun[7]
    assert f"--coordinator_address=gpu01:{PORT}" in task
    assert '--num_processes="$SLURM_NTASKS" --process_id="$SLURM_PROCID"' in task  # read inside each task
    assert shlex.split(task.split(" exec ", 1)[1]) == ["/opt/env/bin/python", "-m", "sos_jax.main", "--distributed",
                                                       f"--coordinator_address=gpu01:{PORT}",
                                                       "--num_processes=$SLURM_NTASKS",
                                                       "--process_id=$SLURM_PROCID", *MAIN]
    per_task = [line for line in result.stdout.splitlines() if line.startswith("# task ")]
    assert len(per_task) == tasks
    for i, line in enumerate(per_task):
        host = "gpu01" if i < per_node else "gpu02"
        assert line.startswith(f"# task {i} on {host} (SLURM_PROCID={i} SLURM_LOCALID={i % per_node}):")
        assert f"--num_processes={tasks} --process_id={i} " in line and f"gpu01:{PORT}" in line


@pytest.mark.parametrize("mode, visible, local_ids", [
    ("node", "0,1,2,3", [None, None]),  # one process per node: every GPU of the node, no SLURM_LOCALID
    ("gpu", "0,1", [None] * 4),  # every task sees the node's GPUs: jax picks GPU SLURM_LOCALID
    ("gpu", "0", ["0"] * 4),  # Slurm bound one GPU to each task: it is GPU 0 of that task
])
def test_slurm_each_task_gets_its_process_id_and_gpus(tmp_path, mode, visible, local_ids):
    """The script for real, with a stand-in ``srun`` that runs each task's ``bash -c`` in turn."""
    bin_dir = tmp_path / "slurm_bin"
    bin_dir.mkdir()
    _script(bin_dir / "srun", """#!/bin/bash
for arg; do case $arg in --ntasks=*) n=${arg#*=};; --ntasks-per-node=*) p=${arg#*=};; esac; done
for ((i = 0; i < n; i++)); do
  SLURM_NTASKS=$n SLURM_PROCID=$i SLURM_LOCALID=$((i % p)) "${@: -3}" || exit
done
""")
    python = _recorder(tmp_path / "python")
    record = str(tmp_path / "tasks.jsonl")
    env = _slurm_env(tmp_path, SOS_JAX_MODE=mode, SOS_JAX_GPUS_PER_NODE="2", SOS_JAX_PYTHON=python,
                     SOS_JAX_PORT="12345", RECORD=record, CUDA_VISIBLE_DEVICES=visible)
    result = _slurm(env, *MAIN)
    assert result.returncode == 0, result.stderr
    tasks = _records(record)
    assert len(tasks) == len(local_ids)
    for i, (task, local) in enumerate(zip(tasks, local_ids)):
        assert task["argv"] == ["-m", "sos_jax.main", "--distributed", "--coordinator_address=gpu01:12345",
                                f"--num_processes={len(local_ids)}", f"--process_id={i}", *MAIN]
        assert task["env"].get("JAX_LOCAL_DEVICE_IDS") == local
        assert ("SLURM_LOCALID" in task["env"]) == (mode == "gpu")


def test_slurm_plain_host_list_needs_no_scontrol(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SOS_JAX_"))}
    env.update(SOS_JAX_DRY_RUN="1", SLURM_JOB_ID="7", SLURM_JOB_NODELIST="a1,b2,c3", SLURM_NNODES="3",
               PATH="/usr/bin:/bin")
    if shutil.which("scontrol", path=env["PATH"]):
        pytest.skip("a real scontrol is installed")
    result = _slurm(env, *MAIN)
    assert result.returncode == 0, result.stderr
    assert "--coordinator_address=a1:61447" in result.stdout and "--ntasks=3" in result.stdout


@pytest.mark.parametrize("dry", ["1", "0"])
def test_slurm_missing_variables_are_named(tmp_path, dry):
    env = _slurm_env(tmp_path, SOS_JAX_DRY_RUN=dry)
    for var in ("SLURM_JOB_NODELIST", "SLURM_NNODES"):
        del env[var]
    result = _slurm(env, *MAIN)
    assert result.returncode == 2 and result.stdout == ""
    assert "missing Slurm variables: SLURM_JOB_NODELIST SLURM_NNODES" in result.stderr
    assert ("set them yourself" if dry == "1" else "submit this script with sbatch") in result.stderr


@pytest.mark.parametrize("extra, args, message", [
    ({"SOS_JAX_MODE": "cpu"}, MAIN, "SOS_JAX_MODE=cpu: expected node"),
    ({}, [f"--config={CONFIG}"], "give --config=FILE.py[:preset] and --workdir=DIR"),
    ({}, [*MAIN, "--process_id=3"], "--process_id=3: set by this script from Slurm"),
    ({"SOS_JAX_MODE": "gpu"}, MAIN, "SOS_JAX_MODE=gpu needs the GPUs per node"),
    ({"SLURM_NNODES": "3"}, MAIN, "names 2 host(s) but SLURM_NNODES=3"),
])
def test_slurm_bad_settings_are_named(tmp_path, extra, args, message):
    result = _slurm(_slurm_env(tmp_path, SOS_JAX_DRY_RUN="1", **extra), *args)
    assert result.returncode == 2 and result.stdout == "" and message in result.stderr, result.stderr
