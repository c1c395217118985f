"""The ``rl`` job: all six configs end to end on a tiny checkpoint on 8 devices, resuming, the eval
job's loader reading RL checkpoints, GRPO raising the reward, and one-line config errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from config_util import REPO, load_config
from sos_jax.jobs import ConfigError, pretrain, rl
from sos_jax.train import checkpoint

ALGORITHMS = ("grpo", "ppo", "apa", "star", "rest", "guided_rest")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny pretrained model (2 steps) to start from."""
    workdir = str(tmp_path_factory.mktemp("base"))
    pretrain.run(load_config("countdown_sos", "tiny", **{"train.steps": 2, "train.eval_every": 0}), workdir)
    return workdir


def _config(name, base_dir, **overrides):
    return load_config(f"{name}_countdown", "tiny", **{"base": base_dir, **overrides})


def _params(workdir):
    """The newest checkpoint's parameters, as host arrays in tree order."""
    from sos_jax.jobs import evaluate
    from sos_jax.models import sharding

    loaded = evaluate.load_model(workdir, sharding.make_mesh((8, 1, 1)))
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(loaded["state"]))]


def _length(algorithm):
    return {"train.steps": 2} if algorithm in rl.POLICY_GRADIENT else {"expert.rounds": 2}


def _stop_after_one(algorithm):
    return {"train.steps": 1} if algorithm in rl.POLICY_GRADIENT else {"expert.rounds": 1}


@pytest.mark.parametrize("algorithm", [a if a in ("grpo", "guided_rest") else pytest.param(a, marks=pytest.mark.slow)
                                       for a in ALGORITHMS])
def test_each_config_runs_and_resumes(algorithm, base, tmp_path):
    """A run stopped after its first step (round) and rerun finishes with the same parameters as an
    uninterrupted run; its summary, metrics and checkpoints are written, and the eval job's loader
    reads its checkpoints (``_params``) with the base model's config saved beside them."""
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    summary = rl.run(_config(algorithm, base, **_length(algorithm)), whole)
    rl.run(_config(algorithm, base, **_stop_after_one(algorithm)), parts)
    resumed = rl.run(_config(algorithm, base, **_length(algorithm)), parts)
    for a, b in zip(_params(whole), _params(parts)):
        np.testing.assert_array_equal(a, b)
    assert summary["algorithm"] == algorithm and summary["device_count"] == 8
    same = ("step", "reward", "solve_rate", "tokens_per_trace")
    assert [resumed["first"][k] for k in same] == [summary["first"][k] for k in same]
    assert [resumed["last"][k] for k in same] == [summary["last"][k] for k in same] and resumed["last"]["step"] == 2
    logged = [json.loads(line) for line in open(os.path.join(whole, "metrics.jsonl"))]
    keys = set(logged[-1])
    assert {"rl/reward", "rl/solve_rate", "rl/tokens_per_trace", "rl/rollout_tokens_per_s", "rl/update_s"} <= keys
    if algorithm in rl.POLICY_GRADIENT:
        assert {"rl/kl_ref", "rl/entropy", "rl/loss"} <= keys
        assert algorithm == "apa" or "rl/clip_fraction" in keys
    else:
        assert {"rl/kept", "rl/finetune_steps"} <= keys
    if algorithm == "guided_rest":  # edited traces reach the goal: every round fine-tunes
        assert all(row["rl/kept"] > 0 and row["rl/finetune_steps"] > 0 for row in logged)
    saved = checkpoint.saved_config(checkpoint.find_checkpoint(whole))
    assert saved["model"] == checkpoint.saved_config(checkpoint.find_checkpoint(base))["model"]


@pytest.mark.parametrize("overrides, field", [
    ({"algorithm": "dpo"}, "config.algorithm"),
    ({"base": ""}, "config.base"),
    ({"grpo.aggregation": "mean"}, "config.grpo.aggregation"),
    ({"rollout.prompts_per_step": 3}, "config.rollout"),
    ({"train.minibatch_rows": 5}, "config.train.minibatch_rows"),
    ({"rollout.temperature": 0.0}, "config.rollout.temperature"),
])
def test_bad_fields_are_named(overrides, field, tmp_path):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        rl.validate(_config("grpo", "some/base", **overrides), str(tmp_path))


def test_missing_base_is_a_one_line_error(tmp_path):
    env_vars = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "sos_jax.main", "--config=configs/star_countdown.py:tiny",
           f"--workdir={tmp_path / 'out'}", f"--config.base={tmp_path / 'nothing'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, cwd=REPO, timeout=300)
    assert result.returncode != 0
    assert "no such directory" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_grpo_raises_the_solve_rate_on_an_easy_problem_set(tmp_path):
    """A tiny model pretrained on optimal paths (600 steps) solves 8 fixed problems a few percent of
    the time; 30 GRPO steps on them raise the solve rate of its samples by more than 5 points."""
    env = {"data.env.num_max": 12, "data.env.target_min": 10, "data.env.target_max": 50}
    base_dir = str(tmp_path / "base")
    pretrain.run(load_config("countdown_ot", "tiny", **{"train.steps": 600, "train.eval_every": 0,
                                                        "train.checkpoint_every": 600, **env}), base_dir)
    run_dir = str(tmp_path / "grpo")
    rl.run(_config("grpo", base_dir, **{"data.num_problems": 8, "rollout.group_size": 16, "rollout.max_new_tokens": 64,
                                        "rollout.temperature": 1.0, "train.steps": 30, "train.learning_rate": 3e-4,
                                        "train.minibatch_rows": 64, "train.checkpoint_every": 30,
                                        "grpo.kl_coef": 0.0, **env}), run_dir)
    solved = [json.loads(line)["rl/solve_rate"] for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert len(solved) == 30
    assert np.mean(solved[-5:]) > np.mean(solved[:5]) + 0.05, solved
