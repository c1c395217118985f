"""benchmarks/sample_throughput.py runs the sampler on the tiny preset and prints one JSON object last.

Passes with or without torch installed: without it the PyTorch fields are None and a reason is given;
with torch (and transformers, or the plain fallback) the greedy tokens of both must agree.
"""

import importlib.util

from config_util import run_benchmark
from sos_jax.models.gpt import PRESETS

KEYS = ("preset", "num_params", "batch", "prompt_len", "new_tokens", "backend", "device_count", "compile_s",
        "seconds", "tokens_per_s", "torch_model", "torch_version", "torch_seconds", "torch_tokens_per_s",
        "ratio_vs_torch", "tokens_match", "torch_reason")


def test_sample_throughput_json_last_line():
    out, _ = run_benchmark("sample_throughput.py", "--preset", "tiny", "--batch", "4", "--new-tokens", "16",
                           "--repeats", "1", devices=2)
    for key in KEYS:
        assert key in out, key
    assert out["preset"] == "tiny" and out["num_params"] == PRESETS["tiny"].num_params()
    assert out["batch"] == 4 and out["prompt_len"] == 16 and out["new_tokens"] == 16
    assert out["backend"] == "cpu" and out["device_count"] == 2
    assert out["compile_s"] > 0 and out["seconds"] > 0
    assert abs(out["tokens_per_s"] - 4 * 16 / out["seconds"]) < 1e-9 * out["tokens_per_s"]
    if importlib.util.find_spec("torch") is None:
        assert out["torch_tokens_per_s"] is None and out["ratio_vs_torch"] is None and out["tokens_match"] is None
        assert "torch" in out["torch_reason"]
        return
    assert out["torch_reason"] is None
    expected_model = "hf" if importlib.util.find_spec("transformers") else "plain"
    assert out["torch_model"] == expected_model and out["torch_version"]
    assert abs(out["torch_tokens_per_s"] - 4 * 16 / out["torch_seconds"]) < 1e-9 * out["torch_tokens_per_s"]
    assert abs(out["ratio_vs_torch"] - out["tokens_per_s"] / out["torch_tokens_per_s"]) < 1e-9 * out["ratio_vs_torch"]
    assert out["tokens_match"] is True
