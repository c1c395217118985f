"""The eval job: scoring of known traces, the whole job on a tiny checkpoint, and its config errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from config_util import REPO, load_config
from sos_jax.envs import countdown as env
from sos_jax.eval import metrics
from sos_jax.jobs import ConfigError, WorkdirError, evaluate
from sos_jax.models import sampler
from sos_jax.search import countdown as search
from sos_jax.tokenizers import countdown as tok

SPEC = env.CountdownSpec(num_count=3, num_min=1, num_max=30, target_min=10, target_max=60)


def _known_traces(count=24, max_len=4096):
    """Problems and their on-device SoS traces (ids, lengths, solved flags), none cut."""
    targets = jnp.asarray(env.split_targets(SPEC, "seen"))
    problems, _, traces = jax.jit(lambda key, idx: search.generate(key, idx, targets, spec=SPEC, strategy="sos",
                                                                   max_len=max_len))(jax.random.key(3), jnp.arange(count))
    assert not np.asarray(traces.truncated).any()
    return (np.asarray(problems.nums), np.asarray(problems.target), np.asarray(traces.tokens),
            np.asarray(traces.length), np.asarray(traces.solved))


def test_stand_in_model_emitting_known_traces_gets_known_scores():
    """A stand-in "model" answers every prompt with the generator's trace for that problem (sample 0)
    and with malformed text cut at the token limit (sample 1): the scores follow from the traces."""
    nums, target, tokens, length, solved = _known_traces()
    prompts, prompt_lengths = evaluate.encode_prompts(nums, target)
    by_prompt = {}
    for i in range(len(target)):
        trace = tokens[i, :length[i]].tolist()
        line = tok.encode(evaluate.prompt_line(nums[i], target[i]))
        assert trace[:len(line)] == line  # the prompt is the trace's first line
        rest = trace[len(line):]
        ends_at_goal = rest[-1] == tok.GOAL
        by_prompt[tuple(prompts[i])] = (rest if ends_at_goal else rest + [tok.EOS],
                                        sampler.STOP_PHRASE if ends_at_goal else sampler.STOP_EOS)
    garbage = tok.encode("Current Stat: 1+1=2\nzzz")
    width = max(len(v[0]) for v in by_prompt.values())
    calls = []

    def generate(prompts_BxW, lengths_B, key):
        calls.append(len(prompts_BxW))
        out = {"tokens": np.zeros((2 * len(prompts_BxW), width), np.int32), "lengths": [], "stop": []}
        for b, row in enumerate(prompts_BxW):
            ids, stop = by_prompt[tuple(row)]
            for s, (seq, why) in enumerate(((ids, stop), (garbage, sampler.STOP_MAX_TOKENS))):
                out["tokens"][2 * b + s, :len(seq)] = seq
                out["lengths"].append(len(seq))
                out["stop"].append(why)
        return {"tokens": out["tokens"], "lengths": np.asarray(out["lengths"]), "stop": np.asarray(out["stop"])}

    grids = evaluate.evaluate_pass(generate, prompts, prompt_lengths, nums, target, num_samples=2, batch=10,
                                   key=jax.random.key(0))
    assert calls == [10, 10, 10]  # 24 problems in batches of 10, the last one wrapping around
    np.testing.assert_array_equal(grids["solved"][:, 0], solved)
    np.testing.assert_array_equal(grids["lax_solved"][:, 0], solved)
    assert not grids["solved"][:, 1].any() and not grids["lax_solved"][:, 1].any()
    np.testing.assert_array_equal(grids["malformed"], np.tile([False, True], (24, 1)))
    np.testing.assert_array_equal(grids["cut"], np.tile([False, True], (24, 1)))
    expected_tokens = np.asarray([len(by_prompt[tuple(p)][0]) for p in prompts])
    np.testing.assert_array_equal(grids["tokens"][:, 0], expected_tokens)
    assert 0 < solved.mean() < 1  # the known traces include failed searches

    summary = metrics.summarize(solved_PxN=grids["solved"], lax_solved_PxN=grids["lax_solved"],
                                tokens_PxN=grids["tokens"], malformed_PxN=grids["malformed"], cut_PxN=grids["cut"],
                                budgets=(100, 10_000), ks=(1, 2))
    assert summary["accuracy"] == pytest.approx(solved.mean() / 2)
    assert summary["pass_at_k"]["2"] == pytest.approx(solved.mean())
    assert summary["accuracy_at_budget"]["100"] == pytest.approx((solved & (expected_tokens <= 100)).mean() / 2)
    assert summary["mean_tokens_solved"] == pytest.approx(expected_tokens[solved].mean())
    assert summary["malformed"] == 0.5 and summary["cut"] == 0.5


def test_traces_join_prompt_line_and_completion():
    prompts = np.array([[tok.BOS, 5, 6, 7, 0], [tok.BOS, 8, 0, 0, 0]], np.int32)
    ids, total = evaluate.traces(prompts, np.array([4, 2]), np.array([[20, 21, 0], [30, 0, 0]], np.int32),
                                 np.array([2, 1]))
    assert total.tolist() == [5, 2]
    assert ids[0, :5].tolist() == [5, 6, 7, 20, 21] and ids[1, :2].tolist() == [8, 30]
    assert not ids[0, 5:].any() and not ids[1, 2:].any()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    env_vars = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2")
    cmd = [sys.executable, "-m", "sos_jax.main", "--config=configs/countdown_sos.py:tiny", f"--workdir={workdir}",
           "--config.train.steps=2", "--config.train.eval_every=0"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir


def test_eval_job_end_to_end(tiny_checkpoint, tmp_path):
    """Two checkpoints (the same run named twice) and the untrained baseline, greedy and sampled, on
    generated problems: the tables, summary.json and both plots; a second run in the workdir is refused."""
    out = str(tmp_path / "eval")
    env_vars = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2")
    cmd = [sys.executable, "-m", "sos_jax.main", "--config=configs/countdown_eval.py:tiny", f"--workdir={out}",
           f"--config.checkpoint=a={tiny_checkpoint},b={tiny_checkpoint}/checkpoints", "--config.untrained_baseline=True",
           "--config.data.num_problems=6", "--config.sampling.max_new_tokens=24"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "greedy decoding" in result.stdout and "4 samples per problem" in result.stdout
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert set(summary["models"]) == {"a", "b", "untrained"}
    assert summary["models"]["a"]["step"] == 2 and summary["models"]["untrained"]["checkpoint"] is None
    for kind, n in (("greedy", 1), ("sampled", 4)):
        for model in ("a", "b", "untrained"):
            for split in ("test_seen", "test_unseen"):
                r = summary["results"][kind][model][split]
                assert r["problems"] == 6 and r["samples_per_problem"] == n and r["max_new_tokens"] == 24
                assert set(r["pass_at_k"]) == {str(k) for k in (1, 2, 4) if k <= n}
                assert 0 < r["mean_tokens"] <= 24
    greedy = summary["results"]["greedy"]
    for split in ("test_seen", "test_unseen"):  # the same parameters give the same greedy traces
        a, b = (dict(greedy[m][split]) for m in ("a", "b"))
        a.pop("tokens_per_s"), b.pop("tokens_per_s")
        assert a == b
    for plot in ("pass_at_k.png", "accuracy_vs_tokens.png"):
        assert os.path.getsize(os.path.join(out, plot)) > 1000
    again = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, cwd=REPO, timeout=300)
    assert again.returncode != 0 and "summary.json" in again.stderr


def test_bad_config_and_checkpoint_are_one_line_errors(tmp_path):
    config = load_config("countdown_eval", "tiny")
    with pytest.raises(ConfigError, match="config.checkpoint"):
        evaluate.validate(config, str(tmp_path))
    config.checkpoint = "a=x,a=y"
    with pytest.raises(ConfigError, match="used twice"):
        evaluate.validate(config, str(tmp_path))
    for field, value, match in (("data.splits", ("test",), "data.splits"), ("sampling.batch_size", 3, "multiple"),
                                ("sampling.top_p", 0.0, "top_p"), ("budgets", (0,), "budgets")):
        bad = load_config("countdown_eval", "tiny", checkpoint="x", **{field: value})
        with pytest.raises(ConfigError, match=match):
            evaluate.validate(bad, str(tmp_path))
    with pytest.raises(WorkdirError):
        evaluate.validate(load_config("countdown_eval", "tiny", checkpoint="x"), "")
    env_vars = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "sos_jax.main", "--config=configs/countdown_eval.py:tiny",
                             f"--workdir={tmp_path / 'out'}", f"--config.checkpoint={tmp_path / 'missing'}"],
                            capture_output=True, text=True, env=env_vars, cwd=REPO, timeout=300)
    assert result.returncode != 0
    assert "no such directory" in result.stderr and "Traceback" not in result.stderr
