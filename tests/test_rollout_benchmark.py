"""benchmarks/rollout_throughput.py rolls out the tiny preset on 8 devices both ways; one JSON object last."""

from config_util import run_benchmark
from sos_jax.models.gpt import PRESETS

KEYS = ("backend", "device_kind", "device_count", "preset", "checkpoint", "num_params", "batch", "group", "rows",
        "prompt_len", "new_tokens", "repeats", "device_tokens", "host_tokens", "device_seconds", "host_seconds",
        "device_tokens_per_s", "host_tokens_per_s", "device_reward_s", "host_reward_s", "device_compile_s",
        "host_compile_s", "ratio_end_to_end", "ratio_reward_stage", "rewards_match", "rows_matching",
        "samples_match", "solved", "host_solved")


def test_rollout_throughput_json_last_line():
    out, lines = run_benchmark("rollout_throughput.py", "--preset", "tiny", "--batch", "8", "--group", "2",
                               "--new-tokens", "16", "--repeats", "1", devices=8, timeout=120)
    for key in KEYS:
        assert key in out, key
    assert out["preset"] == "tiny" and out["checkpoint"] is None and out["num_params"] == PRESETS["tiny"].num_params()
    assert out["backend"] == "cpu" and out["device_count"] == 8
    assert out["batch"] == 8 and out["group"] == 2 and out["rows"] == 16 and out["new_tokens"] == 16
    assert 16 <= out["device_tokens"] <= 16 * 16 and out["host_tokens"] == out["device_tokens"]
    for path in ("device", "host"):
        assert out[f"{path}_seconds"] > 0 and out[f"{path}_reward_s"] > 0
        assert out[f"{path}_tokens_per_s"] > 0
        assert abs(out[f"{path}_tokens_per_s"] - out[f"{path}_tokens"] / out[f"{path}_seconds"]) < 1e-9 * out[
            f"{path}_tokens_per_s"]
    assert abs(out["ratio_end_to_end"] - out["device_tokens_per_s"] / out["host_tokens_per_s"]) < 1e-9 * out[
        "ratio_end_to_end"]
    assert abs(out["ratio_reward_stage"] - out["host_reward_s"] / out["device_reward_s"]) < 1e-9 * out[
        "ratio_reward_stage"]
    assert out["rewards_match"] is True and out["rows_matching"] == 16
    assert out["samples_match"] is True and out["solved"] == out["host_solved"]
    assert any("end-to-end ratio" in line for line in lines) and any("reward-stage ratio" in line for line in lines)
