"""Greedy generation throughput of the KV-cache sampler, against PyTorch (KV cache) on the same device.

    python benchmarks/sample_throughput.py [--preset small] [--batch 8] [--prompt-len 16] [--new-tokens 256]
                                           [--repeats 3] [--torch-model auto|hf|plain] [--no-torch] [--json]

sos_jax: the ``--preset`` model (random init, ``--seed``) built sharded on every device
(``sharding.make_mesh()``: all on ``data``) and ``sos_jax.models.sampler.Sampler``: greedy, exactly
``--new-tokens`` tokens per row (``eos_id=-1`` and no stop phrases, so no row ends early), for a batch
of random prompts of ``--prompt-len`` tokens (ids 3..V-1: no special token). The first call compiles
(``compile_s`` is its wall time: compilation plus one run); then the best of ``--repeats`` calls,
each blocking on its result. tokens/s is ``batch * new_tokens / seconds``.

PyTorch (unless ``--no-torch``; on the CPU, or on the GPU when JAX runs on one, with TF32 matmuls
allowed as in JAX's default precision there; skipped with a reason on a TPU or when torch is not
importable):
the same model with the same weights in float32 (``torch_gpt``), generating the same greedy tokens
with a KV cache under ``torch.inference_mode()`` and ``torch.set_num_threads(os.cpu_count())`` on the CPU;
one warm-up call, then the best of ``--repeats``. ``--torch-model hf``: Hugging Face GPT-2
(``GPT2LMHeadModel.generate``, ``do_sample=False``, ``use_cache=True``; learned positions only);
``plain``: a plain torch model with a preallocated cache; ``auto`` (default): GPT-2 where transformers
imports and the preset has learned positions, else plain (``torch_fallback`` says why).
``tokens_match`` checks that both produced the same tokens in every row (a near-tie of two logits can
flip an argmax between the two float32 implementations; ``rows_matching`` counts the rows that agree).
With ``--json`` the last line of stdout is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIRST_TOKEN_ID = 3  # after PAD, BOS, EOS


def parse_args(argv=None) -> argparse.Namespace:
    from sos_jax.models.gpt import PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model preset (default small)")
    p.add_argument("--batch", type=int, default=8, help="prompts generated for at once (default 8)")
    p.add_argument("--prompt-len", type=int, default=16, help="tokens per prompt (default 16)")
    p.add_argument("--new-tokens", type=int, default=256, help="tokens generated per prompt (default 256)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls; the best counts (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--torch-model", default="auto", choices=("auto", "hf", "plain"),
                   help="auto: Hugging Face GPT-2 if transformers is importable and positions are learned, "
                        "else the plain torch model")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    args = p.parse_args(argv)
    for name in ("batch", "prompt_len", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    config = PRESETS[args.preset]
    if config.positions == "learned" and args.prompt_len + args.new_tokens > config.max_len:
        p.error(f"--prompt-len {args.prompt_len} + --new-tokens {args.new_tokens} exceeds the preset's "
                f"max_len {config.max_len}")
    args.config = config
    return args


def random_prompts(config, batch: int, prompt_len: int, seed: int) -> np.ndarray:
    """``[batch, prompt_len]`` int32 random token ids in ``3..V-1`` (no PAD, BOS or EOS)."""
    rng = np.random.default_rng(seed)
    return rng.integers(FIRST_TOKEN_ID, config.vocab_size, (batch, prompt_len)).astype(np.int32)


def _best_of(repeats: int, call) -> tuple[float, object]:
    """The shortest wall time of ``repeats`` calls of ``call()`` and the last call's result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_jax(args, model, prompts_BxP: np.ndarray) -> tuple[dict, np.ndarray]:
    """Times the sampler on ``model``; returns the results and the generated tokens ``[B, new_tokens]``."""
    import jax
    from flax import nnx

    from sos_jax.models import sampler

    params = sampler.SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0, eos_id=-1)
    graphdef, state = nnx.split(model)
    s = sampler.Sampler(graphdef, state, params, mesh=args.mesh, batch_size=args.batch, prompt_len=args.prompt_len)
    lengths_B = np.full((args.batch,), args.prompt_len, np.int32)
    key = jax.random.key(args.seed)

    def call():
        return jax.block_until_ready(s(state, prompts_BxP, lengths_B, key))

    compile_s, _ = _best_of(1, call)
    seconds, out = _best_of(args.repeats, call)
    host = sampler.as_dict(out)
    if not np.all(host["lengths"] == args.new_tokens):
        raise RuntimeError(f"sos_jax: rows ended before {args.new_tokens} tokens: lengths {host['lengths'].tolist()}")
    return {
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "compile_s": compile_s,
        "seconds": seconds,
        "tokens_per_s": args.batch * args.new_tokens / seconds,
    }, host["tokens"]


def _torch_generator(args, model, device):
    """``(name, generate(ids_BxP, n) -> [B, n], fallback)`` of the baseline ``--torch-model`` picks.

    Raises ``RuntimeError`` (the reason) when the requested baseline cannot be built.
    """
    import torch_gpt

    config, fallback = args.config, None
    if args.torch_model in ("auto", "hf"):
        try:
            hf = torch_gpt.hf_gpt2_from_sos(model, config).to(device)
            return "hf", lambda ids, n: torch_gpt.hf_greedy(hf, ids, n), None
        except (ImportError, ValueError) as e:  # transformers missing, or RoPE (no GPT-2 equivalent)
            fallback = f"hf unavailable ({type(e).__name__}: {e})".splitlines()[0][:200]
            if args.torch_model == "hf":
                raise RuntimeError(fallback) from e
    plain = torch_gpt.plain_gpt_from_sos(model, config).to(device)
    return "plain", plain.greedy, fallback


def bench_torch(args, model, prompts_BxP: np.ndarray) -> tuple[dict, np.ndarray | None]:
    """Times the PyTorch baseline (or says why there is none); returns the results and its tokens or None."""
    none = {"torch_model": None, "torch_device": None, "torch_version": None, "torch_threads": None,
            "torch_seconds": None, "torch_tokens_per_s": None, "torch_reason": None, "torch_fallback": None}
    if args.no_torch:
        return {**none, "torch_reason": "--no-torch"}, None
    try:
        import torch
    except ImportError as e:
        return {**none, "torch_reason": f"torch not importable ({e})"}, None
    import torch_gpt

    device, why_not = torch_gpt.baseline_device(args.backend)
    base = {**none, "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_device": None if device is None else str(device)}
    if device is None:
        return {**base, "torch_reason": why_not}, None
    try:
        name, generate, fallback = _torch_generator(args, model, device)
    except RuntimeError as e:
        return {**base, "torch_reason": str(e)}, None
    ids_BxP = torch.from_numpy(prompts_BxP).long().to(device)

    def timed_call():
        out = generate(ids_BxP, args.new_tokens)
        torch_gpt.synchronize(device)
        return out

    timed_call()  # warm-up
    seconds, tokens = _best_of(args.repeats, timed_call)
    tokens = tokens.cpu().numpy()
    if tokens.shape != (args.batch, args.new_tokens):
        raise RuntimeError(f"torch ({name}): generated {tokens.shape}, expected {(args.batch, args.new_tokens)}")
    return {**base, "torch_model": name, "torch_seconds": seconds, "torch_fallback": fallback,
            "torch_tokens_per_s": args.batch * args.new_tokens / seconds}, tokens


def format_report(r: dict) -> str:
    """The human-readable summary table of one run's results."""
    lines = [
        f"greedy sampling, preset {r['preset']} ({r['num_params']:,} parameters), batch {r['batch']}, "
        f"prompt {r['prompt_len']} + {r['new_tokens']} new tokens, best of {r['repeats']} after a warm-up",
        f"{'path':<26} {'seconds':>9} {'tokens/s':>10}",
        f"{'sos_jax (' + r['backend'] + ' x' + str(r['device_count']) + ')':<26} {r['seconds']:>9.3f} "
        f"{r['tokens_per_s']:>10.0f}",
    ]
    if r["torch_tokens_per_s"]:
        lines.append(f"{'torch (' + r['torch_model'] + ', ' + str(r['torch_threads']) + ' threads)':<26} "
                     f"{r['torch_seconds']:>9.3f} {r['torch_tokens_per_s']:>10.0f}")
        lines.append(f"ratio (sos_jax / torch): {r['ratio_vs_torch']:.2f}x; greedy tokens match: "
                     f"{'yes' if r['tokens_match'] else 'no'} ({r['rows_matching']}/{r['batch']} rows)")
        if r["torch_fallback"]:
            lines.append(f"torch: plain model, {r['torch_fallback']}")
    else:
        lines.append(f"torch: skipped ({r['torch_reason']})")
    lines.append(f"compile {r['compile_s']:.1f}s (first call: compilation and one run; excluded)")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Runs the benchmark, prints the report (and with ``--json`` the JSON line) and returns the results."""
    import jax

    from sos_jax.models import sharding

    args = parse_args(argv)
    config = args.config
    args.mesh = sharding.make_mesh()
    args.backend = jax.default_backend()
    if args.batch % args.mesh.devices.size:
        raise SystemExit(f"--batch {args.batch} must be a multiple of the {args.mesh.devices.size} devices")
    model = sharding.create_sharded_model(config, args.mesh, args.seed)
    prompts_BxP = random_prompts(config, args.batch, args.prompt_len, args.seed)
    result = {"preset": args.preset, "num_params": config.num_params(), "batch": args.batch,
              "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "repeats": args.repeats}
    jax_result, jax_tokens = bench_jax(args, model, prompts_BxP)
    result.update(jax_result)
    torch_result, torch_tokens = bench_torch(args, model, prompts_BxP)
    result.update(torch_result)
    t = result["torch_tokens_per_s"]
    result["ratio_vs_torch"] = result["tokens_per_s"] / t if t else None
    if torch_tokens is None:
        result["tokens_match"] = result["rows_matching"] = None
    else:
        rows = np.all(jax_tokens == torch_tokens, axis=1)
        result["tokens_match"], result["rows_matching"] = bool(rows.all()), int(rows.sum())
    print(format_report(result), flush=True)
    if args.json:
        print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
