"""benchmarks/countdown_gen.py runs with a tiny --n and prints one parseable JSON object last."""

import pytest
from config_util import run_benchmark


def test_benchmark_json_last_line():
    out, _ = run_benchmark("countdown_gen.py", "--n", "48", "--batch", "32", "--max-len", "256", "--python-n", "8")
    for key in ("traces_per_s", "python_traces_per_s", "ratio", "compile_s", "n", "backend", "max_len",
                "truncated_share", "solve_rate", "median_tokens", "p95_tokens", "by_strategy"):
        assert key in out, key
    assert out["n"] == 48 and out["max_len"] == 256 and out["backend"] == "cpu"
    assert out["traces_per_s"] > 0 and out["python_traces_per_s"] > 0 and out["compile_s"] > 0
    assert abs(out["ratio"] - out["traces_per_s"] / out["python_traces_per_s"]) < 1e-9 * out["ratio"]
    by = out["by_strategy"]
    assert set(by) == {"dfs", "bfs"}
    assert by["dfs"]["count"] + by["bfs"]["count"] == 48
    for s in by.values():
        assert {"median_tokens", "p95_tokens", "solve_rate", "truncated_share"} <= set(s)


@pytest.mark.slow
def test_data_throughput_json_last_line():
    out, lines = run_benchmark("data_throughput.py", "--problems", "64", "--seq-len", "256", "--batch", "8",
                               "--batches", "2", "--records", "32", devices=8, timeout=600)
    assert any(line.startswith("grain pipeline") for line in lines)
    assert out["seq_len"] == 256 and out["global_batch_size"] == 8 and out["records"] == 32
    assert out["device_count"] == 8  # the built-in dataset's batch fits any device count
    for key in ("baseline_tokens_per_s", "grain_host_tokens_per_s", "grain_device_tokens_per_s",
                "online_tokens_per_s"):
        assert out[key] > 0, key
    assert abs(out["grain_device_ratio"] - out["grain_device_tokens_per_s"] / out["baseline_tokens_per_s"]) < 1e-9
    assert 0 < out["grain_fill_rate"] <= 1 and 0 < out["online_fill_rate"] <= 1
