"""The bench job (configs/bench.py): the report's table, summary and chart, device fields, failed and
timed-out benchmarks, reruns that keep finished benchmarks, and config errors."""

import json
import os
import subprocess
import sys

import pytest

from config_util import REPO, config_path, load_config
from sos_jax import main as sos_main
from sos_jax.jobs import ConfigError, WorkdirError
from sos_jax.jobs import bench

BENCHMARKS = ("countdown_gen", "sudoku_gen", "data_throughput", "train_throughput", "sample_throughput",
              "rollout_throughput")


def _config(preset="tiny", **overrides):
    return load_config("bench", preset, **overrides)


def _expected_devices():
    return int(os.environ["JAX_NUM_CPU_DEVICES"])


def _check_device(device):
    assert device["backend"] == "cpu" and device["device_kind"] == "cpu"
    assert device["device_count"] == _expected_devices() and device["process_count"] == 1
    assert device["jax"] and device["jaxlib"] and device["host"] and device["date"].endswith("UTC")


def test_report_with_a_failed_benchmark_then_rerun(tmp_path, capsys):
    """sample_throughput gets a bad flag value (the script exits 2 at once), countdown_gen runs: the
    failure is a row with its log and stderr tail, the other one a full row; a rerun keeps it."""
    workdir = str(tmp_path / "bench")
    config = _config(**{"benchmarks": ("countdown_gen", "sample_throughput"), "args.sample_throughput.repeats": 0})
    summary = sos_main.run(config, workdir)
    printed = capsys.readouterr().out

    rows = {r["benchmark"]: r for r in summary["rows"]}
    assert list(rows) == ["countdown_gen", "sample_throughput"]
    assert summary["failed"] == ["sample_throughput"]
    ok, failed = rows["countdown_gen"], rows["sample_throughput"]
    assert failed["status"] == "failed" and "exit status 2" in failed["error"]
    assert "--repeats must be >= 1" in failed["error"]
    assert failed["log"] == os.path.join(workdir, "logs", "sample_throughput.log")
    with open(failed["log"]) as f:
        assert "--repeats must be >= 1" in f.read()

    raw = summary["results"]["countdown_gen"]
    assert ok["status"] == "ok" and ok["unit"] == "traces/s" and ok["value"] == raw["traces_per_s"] > 0
    assert ok["baseline_value"] == raw["python_traces_per_s"] > 0 and ok["ratio"] == raw["ratio"]
    assert abs(ok["ratio"] - ok["value"] / ok["baseline_value"]) < 1e-9 * ok["ratio"]
    assert ok["wall_s"] > 0 and not ok["reused"] and ok["note"] == ""
    assert raw["n"] == 64 and raw["max_len"] == 512 and raw["python_n"] == 16
    assert raw["backend"] == "cpu" and raw["device_count"] == _expected_devices()
    _check_device(summary["device"])

    # stdout: the table with the device header, the failure and where its log is
    assert f"backend cpu: {_expected_devices()} x cpu, 1 process" in printed
    assert "sample_throughput FAILED" in printed and "--repeats must be >= 1" in printed and failed["log"] in printed
    assert "Countdown SoS-mix traces on device" in printed and "plain-Python traces" in printed
    with open(os.path.join(workdir, "summary.json")) as f:
        on_disk = json.load(f)
    assert on_disk["rows"] == json.loads(json.dumps(summary["rows"]))
    assert on_disk["config"]["args"]["sample_throughput"]["repeats"] == 0
    with open(os.path.join(workdir, "report.md")) as f:
        md = f.read()
    assert "| countdown_gen | Countdown SoS-mix" in md and "| sample_throughput | FAILED |" in md
    with open(os.path.join(workdir, "bench.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.exists(os.path.join(workdir, "results", "countdown_gen.json"))
    assert not os.path.exists(os.path.join(workdir, "results", "sample_throughput.json"))

    # The finished report is not replaced without overwrite.
    with pytest.raises(WorkdirError, match="overwrite"):
        sos_main.run(config, workdir)

    # After a crash (no summary.json) a rerun keeps the finished benchmark and retries the failed one.
    os.remove(os.path.join(workdir, "summary.json"))
    log = os.path.join(workdir, "logs", "countdown_gen.log")
    stamp = os.stat(log).st_mtime_ns
    again = sos_main.run(config, workdir)
    printed = capsys.readouterr().out
    rows2 = {r["benchmark"]: r for r in again["rows"]}
    assert rows2["countdown_gen"]["reused"] and rows2["countdown_gen"]["value"] == ok["value"]
    assert again["results"]["countdown_gen"] == raw
    assert rows2["sample_throughput"]["status"] == "failed"
    assert os.stat(log).st_mtime_ns == stamp  # not run again
    assert "countdown_gen: kept from an earlier run" in printed and "countdown_gen *" in printed

    # Overwrite starts afresh: the configured benchmarks' kept results are dropped first, so a run
    # that fails leaves none of them.
    broken = _config(**{"benchmarks": ("countdown_gen",), "args.countdown_gen.n": 0, "overwrite": True})
    third = sos_main.run(broken, workdir)
    assert third["failed"] == ["countdown_gen"] and "--n must be >= 1" in third["rows"][0]["error"]
    assert not os.path.exists(os.path.join(workdir, "results", "countdown_gen.json"))


def test_kept_result_needs_the_same_flags_and_devices(tmp_path):
    device = {"backend": "cpu", "device_kind": "cpu", "device_count": 8, "process_count": 1, "jax": "1",
              "jaxlib": "1"}
    path = str(tmp_path / "r.json")
    with open(path, "w") as f:
        json.dump({"row": {}, "result": {}, "argv": ["--json", "--n", "4"], "device": device}, f)
    assert bench._load_kept(path, ["--json", "--n", "4"], device) is not None
    assert bench._load_kept(path, ["--json", "--n", "5"], device) is None
    assert bench._load_kept(path, ["--json", "--n", "4"], {**device, "device_count": 2}) is None
    assert bench._load_kept(str(tmp_path / "missing.json"), ["--json"], device) is None


def test_timeout_stops_the_benchmark(tmp_path, capsys):
    workdir = str(tmp_path / "bench")
    summary = sos_main.run(_config(**{"benchmarks": ("countdown_gen",), "timeout_s": 1}), workdir)
    (row,) = summary["rows"]
    assert row["status"] == "timeout" and summary["failed"] == ["countdown_gen"]
    assert 1 <= row["wall_s"] < 30
    assert "TIMED OUT" in capsys.readouterr().out
    with open(row["log"]) as f:
        assert "stopped after config.timeout_s=1" in f.read()


def test_fail_fast_skips_the_rest(tmp_path):
    config = _config(**{"benchmarks": ("countdown_gen", "sample_throughput"), "args.countdown_gen.n": 0,
                        "fail_fast": True})
    summary = sos_main.run(config, str(tmp_path / "bench"))
    assert [r["status"] for r in summary["rows"]] == ["failed", "not run"]
    assert summary["failed"] == ["countdown_gen", "sample_throughput"]


def test_cli_writes_the_report(tmp_path):
    """The command line, with one benchmark that fails at once: exit 0, the failure in the table."""
    workdir = tmp_path / "bench"
    env = dict(os.environ, PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "sos_jax.main", f"--config={config_path('bench')}:tiny", f"--workdir={workdir}",
           "--config.benchmarks=('countdown_gen',)", "--config.args.countdown_gen.batch=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "countdown_gen FAILED" in proc.stdout and "--batch must be >= 1" in proc.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    _check_device(summary["device"])
    assert summary["failed"] == ["countdown_gen"] and (workdir / "bench.png").exists()

    bad = subprocess.run(cmd[:4] + ["--config.args.countdown_gen.nn=3"], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "config.args.countdown_gen.nn" in bad.stderr


@pytest.mark.parametrize("overrides, message", [
    ({"benchmarks": ("countdown_gen", "nope")}, "unknown benchmark 'nope'"),
    ({"benchmarks": ()}, "non-empty tuple"),
    ({"benchmarks": "countdown_gen"}, "non-empty tuple"),
    ({"benchmarks": ("countdown_gen", "countdown_gen")}, "named twice"),
    ({"args.countdown_gen.n": "many"}, r"config.args.countdown_gen.n='many': --n takes an int"),
    ({"args.sudoku_gen.minimal": 1}, r"--minimal is a switch"),
    ({"args.train_throughput.preset": 3}, r"--preset takes a string"),
    ({"timeout_s": 0}, "timeout_s=0"),
    ({"fail_fast": "yes"}, "fail_fast"),
])
def test_config_errors(tmp_path, overrides, message):
    config = _config()
    config.unlock()
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        del node[leaf]  # a new field: ConfigDict keeps a field's type otherwise
        node[leaf] = value
    with pytest.raises(ConfigError, match=message):
        bench.validate(config, str(tmp_path))


def test_unknown_flag_and_unknown_benchmark_args(tmp_path):
    config = _config()
    config.unlock()
    config.args.train_throughput.stepz = 3
    with pytest.raises(ConfigError, match=r"config.args.train_throughput.stepz: train_throughput.py has no flag "
                                          r"--stepz; its flags: .*steps"):
        bench.validate(config, str(tmp_path))
    config = _config()
    config.unlock()
    config.args.other = {"n": 1}
    with pytest.raises(ConfigError, match="config.args.other: unknown benchmark"):
        bench.validate(config, str(tmp_path))


def test_missing_benchmarks_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "benchmarks_dir", lambda: tmp_path / "benchmarks")
    with pytest.raises(ConfigError, match="no benchmarks folder at .*source checkout"):
        bench.validate(_config(), str(tmp_path / "w"))


@pytest.mark.parametrize("preset", ["default", "cpu", "tiny"])
def test_presets_list_every_flag_of_every_script(preset):
    """Each preset passes validation, runs all six, and names every flag of every script."""
    config = _config(preset)
    assert tuple(config.benchmarks) == BENCHMARKS == tuple(bench.HEADLINES)
    argvs = bench.commands(config)
    for name in BENCHMARKS:
        flags = bench.script_flags(bench.benchmarks_dir() / f"{name}.py")
        assert set(config.args[name].keys()) == set(flags), name
        assert argvs[name][0] == "--json"


def test_script_flags_reads_types():
    flags = bench.script_flags(bench.benchmarks_dir() / "sudoku_gen.py")
    assert flags["max_tokens"] == "int" and flags["minimal"] == "bool" and flags["branch"] == "str"
    assert "json" not in flags


def test_row_without_baseline_and_chart(tmp_path):
    """A GPU-like train result (no torch baseline there): the row says why, and the table and chart
    handle the missing ratio next to a failed row."""
    result = {"tokens_per_s": 1.5e6, "torch_tokens_per_s": None, "ratio_vs_torch": None, "mfu": 0.41,
              "torch_reason": "torch baseline runs on the CPU backend only (backend gpu)", "backend": "gpu",
              "device_count": 1}
    device = {"backend": "gpu", "device_kind": "NVIDIA H100 80GB HBM3", "device_count": 1, "process_count": 1,
              "jax": "0.11.2", "jaxlib": "0.11.2", "host": "h", "host_cpus": 16, "date": "2026-01-01 00:00 UTC"}
    row = bench.make_row("train_throughput", result, device)
    assert row["status"] == "ok" and row["ratio"] is None and row["value"] == 1.5e6
    assert row["note"] == "no baseline: torch baseline runs on the CPU backend only (backend gpu)"
    assert row["extras_text"] == "MFU 41.0%"
    row.update(wall_s=12.0, log="l", error="", reused=False)
    failed = {"benchmark": "countdown_gen", "status": "failed", "wall_s": 1.0, "log": "x.log", "error": "boom"}
    table = bench.format_table([row, failed], device)
    assert "backend gpu: 1 x NVIDIA H100 80GB HBM3, 1 process; jax 0.11.2" in table
    assert "1.50 M tokens/s" in table and "CPU backend only" in table and "countdown_gen FAILED: log x.log" in table
    mismatch = bench.make_row("train_throughput", {**result, "device_count": 2}, device)
    assert "ran with device_count 2, the probe saw 1" in mismatch["note"]
    assert bench.make_row("train_throughput", {"torch_tokens_per_s": 3.0}, device)["status"] == "failed"
    sudoku = {"device": {"stage_per_s": {"traces": 8.0, "fresh": 2.0}, "puzzles_with_traces_per_s": 4.0,
                         "backend": "cpu", "device_count": 1}, "python": {"traces_per_s": 2.0}, "trace_speedup": 4.0}
    sudoku_row = bench.make_row("sudoku_gen", sudoku, device)
    assert (sudoku_row["value"], sudoku_row["baseline_value"], sudoku_row["ratio"]) == (8.0, 2.0, 4.0)
    assert sudoku_row["extras_text"] == "pipeline 4.0 puzzles/s, fresh puzzles 2.0 puzzles/s"
    assert sudoku_row["note"] == "ran with backend 'cpu', the probe saw 'gpu'"
    path = str(tmp_path / "bench.png")
    bench.save_chart(path, [row, failed], device)
    assert os.path.getsize(path) > 1000


@pytest.mark.slow
def test_all_six_tiny(tmp_path, capsys, monkeypatch):
    """Every benchmark at the tiny preset, on 2 CPU devices (the benchmarks' environment, not this
    process's 8): each row finished with a positive headline throughput, and the headline and
    baseline keys were found in its JSON."""
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "2")
    summary = sos_main.run(_config(), str(tmp_path / "bench"))
    assert summary["failed"] == [], summary["table"]
    assert [r["benchmark"] for r in summary["rows"]] == list(BENCHMARKS)
    for row in summary["rows"]:
        assert row["status"] == "ok" and row["value"] > 0, row
        if row["benchmark"] in ("countdown_gen", "sudoku_gen", "data_throughput", "rollout_throughput"):
            assert row["baseline_value"] > 0 and row["ratio"] > 0, row
    for name, raw in summary["results"].items():
        assert (raw["device"] if name == "sudoku_gen" else raw)["device_count"] == _expected_devices(), name
    printed = capsys.readouterr().out
    for name in BENCHMARKS:
        assert name in printed
