"""benchmarks/train_throughput.py runs the real train step on the tiny preset and prints one JSON object last.

Passes with or without torch installed: without it the PyTorch fields are None and a reason is given.
"""

import importlib.util

from config_util import run_benchmark

KEYS = ("preset", "num_params", "seq_len", "global_batch_size", "steps", "backend", "device_count", "compile_s",
        "step_s", "tokens_per_s", "tokens_per_s_per_device", "mfu", "peak_flops_per_device", "peak_source",
        "matmul_peak_share", "torch_tokens_per_s", "torch_model", "torch_num_params", "ratio_vs_torch")


def test_train_throughput_json_last_line():
    out, _ = run_benchmark("train_throughput.py", "--preset", "tiny", "--seq-len", "64", "--batch", "8", "--steps", "2",
                           devices=2)
    for key in KEYS:
        assert key in out, key
    assert out["preset"] == "tiny" and out["seq_len"] == 64 and out["global_batch_size"] == 8 and out["steps"] == 2
    assert out["backend"] == "cpu" and out["device_count"] == 2
    from sos_jax.models.gpt import PRESETS

    assert out["num_params"] == PRESETS["tiny"].num_params()
    for key in ("compile_s", "step_s", "tokens_per_s", "tokens_per_s_per_device", "mfu", "peak_flops_per_device",
                "matmul_peak_share"):
        assert out[key] > 0, key
    assert abs(out["tokens_per_s_per_device"] * 2 - out["tokens_per_s"]) < 1e-6 * out["tokens_per_s"]
    assert abs(out["step_s"] - 64 * 8 / out["tokens_per_s"]) < 1e-6 * out["step_s"]
    assert out["peak_source"].startswith("measured")
    if importlib.util.find_spec("torch") is None:
        assert out["torch_tokens_per_s"] is None and out["ratio_vs_torch"] is None
        assert "torch" in out["torch_reason"]
    else:
        assert out["torch_tokens_per_s"] > 0
        assert abs(out["ratio_vs_torch"] - out["tokens_per_s"] / out["torch_tokens_per_s"]) < 1e-9 * out["ratio_vs_torch"]
        if out["torch_model"] == "plain":
            assert out["torch_num_params"] == out["num_params"]
