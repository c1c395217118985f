"""The quickstart pipeline (data, two pretrainings, eval) end to end on its tiny preset."""

import json
import os
import shutil
import subprocess
import sys

from config_util import REPO


def _run(workdir, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2")
    cmd = [sys.executable, "-m", "sos_jax.main", "--config=configs/quickstart.py:tiny", f"--workdir={workdir}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)


def test_quickstart_tiny_runs_every_stage_and_finishes_after_a_lost_stage(tmp_path):
    workdir = str(tmp_path / "qs")
    result = _run(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("data", "sos", "ot", "eval"):
        assert os.path.isfile(os.path.join(workdir, stage, "summary.json")), stage
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert set(summary["accuracy"]) == {"sos", "ot", "untrained"}
    for model in summary["accuracy"].values():
        for split in ("test_seen", "test_unseen"):
            assert 0.0 <= model[split]["greedy_accuracy"] <= 1.0 and set(model[split]["pass_at_k"]) == {"1", "2"}
    sos = json.load(open(os.path.join(workdir, "sos", "summary.json")))
    ot = json.load(open(os.path.join(workdir, "ot", "summary.json")))
    assert sos["config"]["data"]["form"] == "sos" and ot["config"]["data"]["form"] == "ot"
    assert ot["step"] == summary["config"]["ot_train_steps"] and sos["step"] == summary["config"]["pretrain"]["train"]["steps"]
    assert "held-out accuracy" in result.stdout and "untrained" in result.stdout

    # A finished quickstart is not redone; after losing its last stage and summary, a rerun does only that.
    again = _run(workdir)
    assert again.returncode != 0 and "summary.json" in again.stderr
    os.remove(os.path.join(workdir, "summary.json"))
    shutil.rmtree(os.path.join(workdir, "eval"))
    rerun = _run(workdir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("finished earlier; kept") == 3
    assert json.load(open(os.path.join(workdir, "summary.json")))["accuracy"] == summary["accuracy"]
