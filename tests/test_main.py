"""The entry point and the generate job: an end-to-end tiny run, overwrite refusal, config errors."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from sos_jax import main as sos_main
from sos_jax.jobs import ConfigError, WorkdirError
from config_util import REPO, config_path, load_config

CONFIG = config_path("countdown_gen")


def _config(preset="tiny"):
    return load_config("countdown_gen", preset)


def _cli(*args, workdir):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "sos_jax.main", f"--config={CONFIG}:tiny", f"--workdir={workdir}", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )


def test_generate_tiny_end_to_end(tmp_path, capsys):
    """One run (compilation dominates, so one test checks everything about it)."""
    workdir = str(tmp_path / "run")
    config = _config()
    summary = sos_main.run(config, workdir)
    printed = capsys.readouterr().out
    assert "traces/s" in printed and "all" in printed and "Current State:" in printed

    # summary.json: the returned summary, with the headline keys and the resolved config
    path = os.path.join(workdir, "summary.json")
    with open(path) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("num_traces", "traces_per_s", "compile_s", "run_s", "backend", "solve_rate", "truncated_share",
                "tokens_median", "tokens_p95", "tokens_max", "strategies", "config"):
        assert key in on_disk, key
    assert on_disk["config"] == json.loads(json.dumps(config.to_dict()))

    # the plot, and no temporary files left behind
    with open(os.path.join(workdir, on_disk["plot"]), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(workdir)) == sorted(["summary.json", on_disk["plot"]])

    # the numbers add up
    groups = on_disk["strategies"]
    n = config.num_problems
    assert on_disk["num_traces"] == n
    assert sum(groups[g]["count"] for g in on_disk["top_level_strategies"]) == n
    assert groups["dfs"]["count"] == groups["bfs"]["count"] == n // 2  # sos_mix splits each batch exactly
    assert groups["dfs-sum"]["count"] + groups["dfs-mult"]["count"] == groups["dfs"]["count"]
    assert groups["bfs-sum"]["count"] + groups["bfs-mult"]["count"] == groups["bfs"]["count"]
    assert sum(groups[f"bfs-b{b}"]["count"] for b in range(1, 6)) == groups["bfs"]["count"]
    assert groups["all"]["count"] == n
    for g in groups.values():
        if g["count"]:
            assert 0.0 <= g["solve_rate"] <= 1.0 and 0.0 <= g["truncated_share"] <= 1.0
            assert g["tokens_median"] <= g["tokens_p95"] <= g["tokens_max"]
    assert on_disk["traces_per_s"] > 0 and on_disk["compile_s"] > 0

    # a second run into the same workdir is refused, in process and from the command line
    before = open(path).read()
    with pytest.raises(WorkdirError, match="overwrite"):
        sos_main.run(config, workdir)
    result = _cli(workdir=workdir)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "summary.json" in result.stderr and "overwrite" in result.stderr
    assert open(path).read() == before


@pytest.mark.parametrize(
    "arg, field",
    [
        ("--config.nope=1", "config.nope"),
        ("--config.env.nums=3", "config.env.nums"),
        ("--config.num_problems=abc", "num_problems"),
        ("--config.split=bogus", "config.split"),
        ("--config.strategy=greedy", "config.strategy"),
        ("--config.env.num_count=9", "config.env.num_count"),
        ("--config.max_len=8", "config.max_len"),
        ("--config.job=train_everything", "config.job"),
    ],
)
def test_cli_config_errors_are_one_line(tmp_path, arg, field):
    result = _cli(arg, workdir=str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert field in lines[0]
    assert not (tmp_path / "run").exists()  # nothing was started


def test_in_process_config_errors_name_the_field(tmp_path):
    config = _config()
    config.batch_size = 0
    with pytest.raises(ConfigError, match="config.batch_size"):
        sos_main.run(config, str(tmp_path))
    config = _config()
    config.env.num_min = 50
    config.env.num_max = 10
    with pytest.raises(ConfigError, match="num_min"):
        sos_main.run(config, str(tmp_path))
    config = _config()
    config.split = "held_out"
    with pytest.raises(ConfigError, match="config.split"):
        sos_main.run(config, str(tmp_path))
    # configs built in code skip the flag parser's type checks; the job checks types itself
    loose = ml_collections.ConfigDict(dict(_config().to_dict(), num_problems=2.5, overwrite="yes"))
    with pytest.raises(ConfigError, match="config.num_problems"):
        sos_main.run(loose, str(tmp_path))
    assert not os.listdir(tmp_path)


def test_presets():
    assert _config("default").num_problems == 1000
    quick = _config("quickstart")
    assert (quick.num_problems, quick.env.num_count, quick.env.num_max, quick.split) == (1000, 4, 99, "seen")
    with pytest.raises(ValueError, match="preset"):
        _config("huge")
