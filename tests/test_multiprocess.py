"""Several processes, one run: the local launcher, and pretraining on 2 processes x 4 CPU devices
matching 1 process x 8 devices (same global batch), with checkpoints and a resume; the batches,
eval, rl (GRPO, Guided-ReST), dataset (finishing a crashed run), generate and study jobs on 2
processes; the bench job's refusal and bad flags."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from config_util import REPO, config_path, crash_countdown_writer_at, load_config

from sos_jax import distributed
from sos_jax import main as sos_main
from sos_jax.jobs import ConfigError

LAUNCHER = os.path.join(REPO, "launch", "local.py")
# Few steps, all inside the warmup: the learning rate of a step does not depend on train.steps, so
# a run stopped at step 2 and resumed to step 4 takes the same steps as a straight 4-step run.
TRAIN = {"data.source": "dataset", "data.packing": False, "train.warmup_steps": 5, "train.log_every": 1,
         "train.eval_every": 0, "train.checkpoint_every": 2, "train.peak_flops": 1e12}


def _launch(*args, timeout=600):
    return subprocess.run([sys.executable, LAUNCHER, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def _on_two_processes(name: str, workdir, overrides: dict, timeout=600) -> list[str]:
    """Runs ``configs/<name>.py:tiny`` with ``overrides`` on 2 processes x 4 CPU devices into
    ``workdir``; returns the output lines after checking that every process succeeded."""
    result = _launch("--num-processes", "2", "--devices-per-process", "4", "--", f"--config={config_path(name)}:tiny",
                     f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items()), timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout.splitlines()


def _as_one_and_two(name: str, tmp_path, overrides: dict, timeout=600) -> tuple[dict, list[str]]:
    """``configs/<name>.py:tiny`` run by 1 process x 8 devices (``tmp_path/one``; its summary) and
    by 2 processes x 4 devices (``tmp_path/two``; the output lines)."""
    one = sos_main.run(load_config(name, "tiny", **overrides), str(tmp_path / "one"))
    return one, _on_two_processes(name, tmp_path / "two", overrides, timeout)


def test_dry_run_prints_each_process_command():
    job = [f"--config={config_path('countdown_sos')}:tiny", "--workdir=/tmp/run dir", "--config.train.steps=4"]
    result = _launch("--num-processes", "2", "--devices-per-process", "4", "--port", "4321", "--dry-run", "--", *job)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines):
        assert line.startswith("JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=4 PYTHONPATH=")
        assert f" -m sos_jax.main {job[0]} '--workdir=/tmp/run dir' --config.train.steps=4 " in line
        assert line.endswith(f" --coordinator_address=localhost:4321 --num_processes=2 --process_id={i}")

    free = _launch("--num-processes", "3", "--devices-per-process", "1", "--dry-run", "--", "--workdir=w")
    ports = {line.split("--coordinator_address=localhost:")[1].split()[0] for line in free.stdout.splitlines()}
    assert free.returncode == 0 and len(free.stdout.splitlines()) == 3 and len(ports) == 1
    assert 0 < int(ports.pop()) < 65536

    for bad in (["--num-processes", "2", "--devices-per-process", "4", "--dry-run"],
                ["--num-processes", "0", "--devices-per-process", "4", "--dry-run", "--", "--workdir=w"]):
        result = _launch(*bad)
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("launch/local.py: error:")


def _golden_dataset(root, count=None) -> str:
    """A Countdown dataset of the first ``count`` golden examples (all: None), imported: its ``data_dir``."""
    with open(os.path.join(REPO, "tests", "data", "countdown_examples.jsonl")) as f:
        rows = [json.loads(line) for line in f][:count]
    with open(root / "train.json", "w") as f:
        json.dump([{"nums": r["nums"], "target": r["target"], "search_path": r["trace"],
                    "optimal_path": r["optimal_path"]} for r in rows], f)
    sos_main.run(load_config("countdown_data", source="import", **{"files.train": str(root / "train.json")}),
                 str(root / "data"))
    return str(root / "data")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small Countdown dataset (the golden examples, imported): its ``data_dir``."""
    return _golden_dataset(tmp_path_factory.mktemp("multiprocess_data"))


def _metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_two_processes_train_and_resume_as_one(dataset, tmp_path):
    """1 process x 8 devices vs 2 processes x 4 devices (stopped after step 2, resumed to step 4)."""
    one = tmp_path / "one"
    sos_main.run(load_config("countdown_sos", "tiny", **TRAIN, **{"data.data_dir": dataset, "train.steps": 4}),
                 str(one))

    two = tmp_path / "two"
    flags = [f"--config={config_path('countdown_sos')}:tiny", f"--workdir={two}", f"--config.data.data_dir={dataset}",
             *(f"--config.{k}={v}" for k, v in TRAIN.items())]
    outputs = []
    for steps in (2, 4):
        result = _launch("--num-processes", "2", "--devices-per-process", "4", "--", *flags,
                         f"--config.train.steps={steps}")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        outputs.append(result.stdout.splitlines())
    for lines in outputs:  # process 0 reports; process 1 stays quiet
        assert any(line.startswith("[0] pretrain: step") for line in lines)
        assert not any(line.startswith("[1] pretrain") for line in lines)
    assert any(line.startswith("[0] pretrain: resumed from") and line.endswith("checkpoints/2") for line in outputs[1])

    # one metrics file, each step once (process 0 wrote it), the losses of the 1-process run
    rows_one, rows_two = _metrics(one), _metrics(two)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == [1, 2, 3, 4]
    assert [r["train/tokens"] for r in rows_two] == [r["train/tokens"] for r in rows_one]
    np.testing.assert_allclose([r["train/loss"] for r in rows_two], [r["train/loss"] for r in rows_one], rtol=1e-5)
    with open(one / "summary.json") as f, open(two / "summary.json") as g:
        summary_one, summary_two = json.load(f), json.load(g)
    assert summary_two["step"] == 4 and summary_two["device_count"] == 8 and summary_two["mesh"] == summary_one["mesh"]
    np.testing.assert_allclose(summary_two["loss"], summary_one["loss"], rtol=1e-5)
    assert sorted(os.listdir(two)) == ["checkpoints", "metrics.jsonl", "summary.json", "tb"]
    assert len(os.listdir(two / "tb")) == 2  # one event file per run, both from process 0

    # checkpoints written by both processes together: each process's data-iterator state
    assert sorted(os.listdir(two / "checkpoints")) == ["2", "4"]
    for step in ("2", "4"):
        assert (two / "checkpoints" / step / "_CHECKPOINT_METADATA").is_file()
        saved = set(os.listdir(two / "checkpoints" / step / "data"))
        assert {"process_0-of-2.json", "process_1-of-2.json"} <= saved


def test_batches_job_on_two_processes_counts_the_global_batches(dataset, tmp_path):
    overrides = {"data.source": "dataset", "data.data_dir": dataset, "data.packing": False, "num_batches": 2}
    one, lines = _as_one_and_two("countdown_batches", tmp_path, overrides)
    assert any(line.startswith("[0] wrote ") for line in lines)
    assert not any(line.startswith("[1] wrote ") or line.startswith("[1] batches:") for line in lines)
    assert os.listdir(tmp_path / "two") == ["summary.json"]
    with open(tmp_path / "two" / "summary.json") as f:
        two = json.load(f)
    for key in ("batch_shape", "fill_rate", "loss_share", "traces_per_row"):
        assert two[key] == one[key], key


def test_a_finite_dataset_ends_on_every_process_at_once(tmp_path):
    """One epoch of 15 records in batches of 8 rows, 4 per process: process 0's share (8 records)
    holds a second batch that process 1's (7) lacks, so both stop after the first, as 1 process does."""
    overrides = {"data.source": "dataset", "data.data_dir": _golden_dataset(tmp_path, 15), "data.packing": False,
                 "data.num_epochs": 1, "num_batches": 3}
    one, lines = _as_one_and_two("countdown_batches", tmp_path, overrides, timeout=300)
    assert one["num_batches"] == 0  # the first batch (warm-up) was the only one
    assert "[0] batches: the data (data.num_epochs=1) ended after 0 of 3 batches (besides the first)" in lines
    with open(tmp_path / "two" / "summary.json") as f:
        assert json.load(f)["num_batches"] == 0


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory):
    """A 2-step pretraining run (1 process x 8 devices): its workdir."""
    workdir = str(tmp_path_factory.mktemp("multiprocess_model") / "model")
    sos_main.run(load_config("countdown_sos", "tiny", **TRAIN, **{"data.data_dir": dataset, "train.steps": 2}),
                 workdir)
    return workdir


def _quiet_process_1(lines: list[str], words: tuple[str, ...]) -> bool:
    """Whether no output line of process 1 holds one of the job's words (library lines aside)."""
    return not any(line.startswith("[1]") and any(word in line for word in words) for line in lines)


def test_eval_on_two_processes_scores_as_one(model, tmp_path):
    """A 2-step checkpoint evaluated by 1 process x 8 devices and by 2 processes x 4 devices: the same
    scores, greedy and sampled (the same keys draw the same samples); process 0 alone prints and writes."""
    overrides = {"checkpoint": model, "data.splits": ("test_seen",), "data.num_problems": 8,
                 "sampling.num_samples": 2, "sampling.max_new_tokens": 16}
    one, lines = _as_one_and_two("countdown_eval", tmp_path, overrides)
    two = tmp_path / "two"
    assert any(line.startswith("[0] eval: wrote ") for line in lines) and "[0] greedy decoding" in lines
    assert _quiet_process_1(lines, ("eval", "model", "greedy", "samples"))
    assert sorted(os.listdir(two)) == ["accuracy_vs_tokens.png", "pass_at_k.png", "summary.json"]
    with open(two / "summary.json") as f:
        summary = json.load(f)
    assert summary["device_count"] == one["device_count"] == 8
    for kind, samples in (("greedy", 1), ("sampled", 2)):
        ours, theirs = summary["results"][kind]["model"]["test_seen"], one["results"][kind]["model"]["test_seen"]
        assert ours["problems"] == 8 and ours["samples_per_problem"] == samples
        ours.pop("tokens_per_s"), theirs.pop("tokens_per_s")
        assert ours == theirs, kind
    assert 0 < one["results"]["sampled"]["model"]["test_seen"]["mean_tokens"] < 16  # samples of different lengths


def test_grpo_on_two_processes_steps_as_one(model, tmp_path):
    """GRPO from the 2-step checkpoint, 1 process x 8 devices against 2 processes x 4 devices: the same
    rollouts (rewards, lengths) and updates (losses, KL) at every step; process 0 alone logs and writes."""
    overrides = {"base": model, "train.steps": 2, "rollout.max_new_tokens": 16}
    _, lines = _as_one_and_two("grpo_countdown", tmp_path, overrides)
    two = tmp_path / "two"
    assert any(line.startswith("[0] rl: grpo, solve rate") for line in lines)
    assert _quiet_process_1(lines, ("rl:", "grpo"))
    assert sorted(os.listdir(two)) == ["checkpoints", "metrics.jsonl", "summary.json", "tb"]
    assert sorted(os.listdir(two / "checkpoints")) == ["1", "2"]
    rows_one, rows_two = _metrics(tmp_path / "one"), _metrics(two)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == [1, 2]
    for key in ("rl/reward", "rl/solve_rate", "rl/tokens_per_trace"):
        assert [r[key] for r in rows_two] == [r[key] for r in rows_one], key
    for key in ("rl/loss", "rl/kl_ref", "rl/entropy", "rl/grad_norm"):
        np.testing.assert_allclose([r[key] for r in rows_two], [r[key] for r in rows_one], rtol=1e-5, err_msg=key)
    assert 0 < rows_one[0]["rl/tokens_per_trace"] < 16  # rollouts of different lengths
    with open(two / "summary.json") as f:
        summary = json.load(f)
    assert summary["step"] == 2 and summary["updates"] == 4 and summary["device_count"] == 8


@pytest.mark.slow  # about 2 minutes on 2 cores; the GRPO test covers rollouts and checkpoints on 2 processes
def test_guided_rest_on_two_processes_rounds_as_one(model, tmp_path):
    """Guided-ReST (2 rounds of sampling, guided edits and fine-tuning) from the 2-step checkpoint,
    1 process x 8 devices against 2 processes x 4 devices: the same samples, kept traces and
    fine-tuning losses each round; process 0 alone logs and writes."""
    overrides = {"base": model}
    _, lines = _as_one_and_two("guided_rest_countdown", tmp_path, overrides)
    two = tmp_path / "two"
    assert any(line.startswith("[0] rl: guided_rest, solve rate") for line in lines)
    assert _quiet_process_1(lines, ("rl:", "guided_rest"))
    assert sorted(os.listdir(two / "checkpoints")) == ["1", "2"]
    rows_one, rows_two = _metrics(tmp_path / "one"), _metrics(two)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == [1, 2]
    for key in ("rl/solve_rate", "rl/tokens_per_trace", "rl/kept", "rl/guided_solved", "rl/finetune_steps"):
        assert [r[key] for r in rows_two] == [r[key] for r in rows_one], key
    assert all(r["rl/finetune_steps"] > 0 for r in rows_one)  # traces were kept and fine-tuned on
    np.testing.assert_allclose([r["rl/finetune_loss"] for r in rows_two], [r["rl/finetune_loss"] for r in rows_one],
                               rtol=1e-5)


def _tree_files(root) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {str(path.relative_to(root)): path.read_bytes() for path in pathlib.Path(root).rglob("*") if path.is_file()}


def test_dataset_job_on_two_processes_finishes_a_crashed_run_as_one(tmp_path, monkeypatch):
    """A Countdown dataset written by 1 process x 8 devices, against one whose first run (1 process)
    died in the middle of the sos form and was finished by 2 processes x 4 devices: the same bytes in
    every file, the splits finished before the crash kept; process 0 alone writes and reports."""
    one, two = tmp_path / "one", tmp_path / "two"
    sos_main.run(load_config("countdown_data"), str(one))
    crash_countdown_writer_at(monkeypatch, "test_seen")
    with pytest.raises(KeyboardInterrupt):
        sos_main.run(load_config("countdown_data"), str(two))
    partial = two / "sos_countdown" / "sos" / "incomplete.1.0.0"
    kept = {name: os.path.getmtime(partial / name) for name in os.listdir(partial) if "-train." in name}
    assert kept

    lines = _on_two_processes("countdown_data", two, {})
    for start in ("[0] dataset: ", "[0] wrote "):
        assert any(line.startswith(start) for line in lines), start
    assert _quiet_process_1(lines, ("dataset", "wrote", "traces"))
    assert _tree_files(two / "sos_countdown") == _tree_files(one / "sos_countdown")
    final = two / "sos_countdown" / "sos" / "1.0.0"
    assert {name: os.path.getmtime(final / name) for name in kept} == kept  # not written again
    with open(one / "summary.json") as f, open(two / "summary.json") as g:
        forms_one, forms_two = json.load(f)["forms"], json.load(g)["forms"]
    assert {form: v["splits"] for form, v in forms_two.items()} == {form: v["splits"] for form, v in forms_one.items()}


@pytest.mark.slow  # about a minute on 2 cores; the dataset test covers trace generation on 2 processes
def test_generate_job_on_two_processes_counts_as_one(tmp_path):
    """The generate job's statistics from 1 process x 8 devices and from 2 processes x 4 devices."""
    one, lines = _as_one_and_two("countdown_gen", tmp_path, {})
    assert any(line.startswith("[0] === problem ") for line in lines)
    assert _quiet_process_1(lines, ("generate", "problem", "traces"))
    assert sorted(os.listdir(tmp_path / "two")) == ["summary.json", "token_lengths.png"]
    with open(tmp_path / "two" / "summary.json") as f:
        two = json.load(f)
    assert two["num_traces"] == one["num_traces"] == 64 and two["strategies"] == one["strategies"]


@pytest.mark.slow  # about 2 minutes on 2 cores; the dataset, pretrain and eval tests cover its stages
def test_sudoku_study_on_two_processes(tmp_path):
    """The Sudoku bt study (dataset, pretraining, eval) on 2 processes x 4 devices writes the dataset
    of 1 process x 8 devices byte for byte, and a rerun after a crash in the eval stage keeps the
    finished stages."""
    one = tmp_path / "one"
    sos_main.run(load_config("sudoku_data", forms=("bt",)), str(one))
    two = tmp_path / "two"
    for attempt in range(2):
        if attempt:  # as if the first run had died during the eval
            os.remove(two / "summary.json")
            os.remove(two / "eval" / "summary.json")
        lines = _on_two_processes("sudoku_bt", two, {})
        assert any(line.startswith("[0] study: done") for line in lines)
        assert _quiet_process_1(lines, ("study", "dataset", "pretrain", "eval"))
    assert [line for line in lines if line.endswith(": finished earlier; kept")] == [
        "[0] data: finished earlier; kept", "[0] model: finished earlier; kept"]  # the rerun
    assert _tree_files(two / "data" / "sos_sudoku") == _tree_files(one / "sos_sudoku")
    with open(two / "summary.json") as f:
        summary = json.load(f)
    assert summary["results"]["greedy"]["bt"]["test"]["problems"] == 8


def test_the_bench_job_refuses_several_processes(monkeypatch, tmp_path):
    monkeypatch.setattr(distributed, "is_multiprocess", lambda: True)
    with pytest.raises(ConfigError, match=r"config\.job='bench': runs on one process only"):
        sos_main.run(load_config("bench"), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("values, message", [
    (dict(num_processes=2, process_id=0), "only with --coordinator_address"),
    (dict(coordinator_address="localhost:1234", num_processes=2), "--num_processes needs --process_id"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), "must be HOST:PORT"),
    (dict(coordinator_address="localhost:99999", num_processes=2, process_id=0), "must be HOST:PORT"),
    (dict(coordinator_address="localhost:1234", num_processes=0, process_id=0), "at least 1"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2), r"must be in 0\.\.1"),
])
def test_bad_distributed_flags_are_named(values, message):
    values = dict(dict(distributed=False, coordinator_address=None, num_processes=None, process_id=None), **values)
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.check_flags(**values)


def test_distributed_flags_choose_initialization():
    none = dict(coordinator_address=None, num_processes=None, process_id=None)
    assert not distributed.check_flags(distributed=False, **none)
    assert distributed.check_flags(distributed=True, **none)
    assert distributed.check_flags(distributed=False, coordinator_address="[::1]:80", num_processes=2, process_id=1)


def test_bad_distributed_flag_exits_with_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "sos_jax.main", f"--config={config_path('countdown_sos')}:tiny",
                             f"--workdir={tmp_path / 'run'}", "--num_processes=2", "--process_id=0"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --num_processes and --process_id: only with "
                                                  "--coordinator_address=HOST:PORT (or --distributed)"]
    assert not (tmp_path / "run").exists()
