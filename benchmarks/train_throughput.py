"""Pretraining throughput of the real compiled train step, against PyTorch on the same device.

    python benchmarks/train_throughput.py [--preset small] [--seq-len 1024] [--batch 8] [--steps 5]
                                          [--attention xla|manual] [--no-torch] [--json]

sos_jax: the ``--preset`` model built sharded on every device (``sharding.make_mesh()``: all on
``data``), the real optimizer (``optim.make_optimizer``: clipping + masked AdamW) and the real train
step (``step.compile_steps``, accum 1, no dropout), fed one fixed random batch in the
``sos_jax.data.batch`` layout (every weight and segment id 1, positions ``0..L-1``). The step
donates the state, so each step's output state is the next step's input. Compilation is timed apart,
then 2 warm-up steps, then ``--steps`` timed steps (blocking on the last step's metrics).

MFU is ``tokens/s * flops_per_token(L) / (peak * devices)`` with ``metrics.peak_flops_per_device``
(on TPU/GPU the bf16 table peak; on the CPU a measured float32 1024x1024 matmul);
``matmul_peak_share`` is the same ratio against the measured float32 matmul peak on every backend.

PyTorch (unless ``--no-torch``; on the CPU, or on the GPU when JAX runs on one, with TF32 matmuls
allowed as in JAX's default precision there; skipped with a reason on a TPU or when torch is not
importable):
the same architecture and size in float32 (``torch_gpt.PlainGPT``: pre-LayerNorm GPT, token
embeddings with learned positions or RoPE as the preset, fused qkv Linear with bias, causal
``scaled_dot_product_attention``, GELU(tanh) MLP, tied embeddings as the preset), the same batch
shape, ``clip_grad_norm_`` + AdamW with the same hyperparameters and decay mask,
``torch.set_num_threads(os.cpu_count())`` on the CPU; the same warm-up and number of timed steps (forward +
backward + optimizer step). Hugging Face GPT-Neo is used instead only where
``transformers`` is already importable (``--torch-model auto``). With ``--json`` the last line of
stdout is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The PyTorch baseline shares a GPU with JAX: JAX allocates as it goes rather than taking 75% upfront.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

WARMUP_STEPS = 2
# Optimizer hyperparameters: the pretrain job's defaults (sos_jax.jobs.pretrain).
LR, B1, B2, WEIGHT_DECAY, CLIP_NORM, END_FRACTION = 3e-4, 0.9, 0.95, 0.1, 1.0, 0.1


def parse_args(argv=None) -> argparse.Namespace:
    from sos_jax.models.gpt import ATTENTIONS, PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model preset (default small)")
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per row (default 1024)")
    p.add_argument("--batch", type=int, default=8, help="global batch size, rows (default 8)")
    p.add_argument("--steps", type=int, default=5, help="timed train steps (default 5)")
    p.add_argument("--attention", default=None, choices=ATTENTIONS, help="override the preset's attention path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--torch-model", default="auto", choices=("auto", "plain", "gpt-neo"),
                   help="auto: Hugging Face GPT-Neo if transformers is importable, else the plain torch model")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    args = p.parse_args(argv)
    for name in ("seq_len", "batch", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    config = PRESETS[args.preset]
    if args.attention:
        config = dataclasses.replace(config, attention=args.attention)
    if config.positions == "learned" and args.seq_len > config.max_len:
        p.error(f"--seq-len {args.seq_len} exceeds the preset's max_len {config.max_len}")
    args.config = config
    return args


def random_batch(config, batch: int, seq_len: int, seed: int) -> dict[str, np.ndarray]:
    """A fixed batch in the ``sos_jax.data.batch`` layout: random ids, every token weighted, one segment."""
    from sos_jax.data.batch import BATCH_DTYPES

    rng = np.random.default_rng(seed)
    shape = (batch, seq_len)
    out = {
        "inputs": rng.integers(0, config.vocab_size, shape),
        "targets": rng.integers(0, config.vocab_size, shape),
        "weights": np.ones(shape),
        "segment_ids": np.ones(shape),
        "positions": np.broadcast_to(np.arange(seq_len), shape),
    }
    return {k: np.ascontiguousarray(out[k], dtype=dtype) for k, dtype in BATCH_DTYPES.items()}


def bench_jax(args) -> dict:
    import jax

    from sos_jax import parallel
    from sos_jax.models import sharding
    from sos_jax.train import metrics, optim, step

    config = args.config
    total = WARMUP_STEPS + args.steps
    mesh = sharding.make_mesh()
    if args.batch % mesh.devices.size:
        raise SystemExit(f"--batch {args.batch} must be a multiple of the {mesh.devices.size} devices")
    model = sharding.create_sharded_model(config, mesh, args.seed)
    opt = dict(learning_rate=LR, warmup_steps=1, total_steps=total, end_fraction=END_FRACTION)
    tx = optim.make_optimizer(**opt, b1=B1, b2=B2, weight_decay=WEIGHT_DECAY, clip_norm=CLIP_NORM)
    lr = optim.schedule(peak=LR, warmup_steps=1, total_steps=total, end_fraction=END_FRACTION)
    graphdef, rest, state = step.init_state(model, tx, args.seed, mesh)
    del model

    start = time.perf_counter()
    steps = step.compile_steps(graphdef, rest, state, tx, lr, mesh, batch_shape=(args.batch, args.seq_len),
                               accum=1, dropout=False)
    compile_s = time.perf_counter() - start

    batch = jax.device_put(random_batch(config, args.batch, args.seq_len, args.seed), parallel.batch_sharding(mesh))
    for _ in range(WARMUP_STEPS):
        state, out = steps.train(state, batch)
    jax.block_until_ready((state, out))
    first_loss = float(out["loss"])
    start = time.perf_counter()
    for _ in range(args.steps):
        state, out = steps.train(state, batch)
    jax.block_until_ready(out)
    run_s = time.perf_counter() - start
    last_loss = float(out["loss"])
    if not math.isfinite(last_loss):
        raise RuntimeError(f"sos_jax: non-finite loss {last_loss}")
    del state

    devices = jax.device_count()
    tokens_per_s = args.steps * args.batch * args.seq_len / run_s
    flops_per_token = config.flops_per_token(args.seq_len)
    peak, peak_source = metrics.peak_flops_per_device(0.0)
    matmul_peak = peak if peak_source.startswith("measured") else metrics.measured_matmul_peak()
    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": devices,
        "compile_s": compile_s,
        "run_s": run_s,
        "step_s": run_s / args.steps,
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_per_device": tokens_per_s / devices,
        "flops_per_token": flops_per_token,
        "mfu": tokens_per_s * flops_per_token / (peak * devices),
        "peak_flops_per_device": peak,
        "peak_source": peak_source,
        "matmul_peak_flops": matmul_peak,
        "matmul_peak_share": tokens_per_s * flops_per_token / (matmul_peak * devices),
        "memory_bytes": steps.memory_bytes,
        "loss_warmup": first_loss,
        "loss_last": last_loss,
    }


def _gpt_neo_model(config):
    """Hugging Face GPT-Neo with the preset's shape (separate bias-free q/k/v, unscaled attention)."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    hf = GPTNeoConfig(vocab_size=config.vocab_size, max_position_embeddings=config.max_len,
                      hidden_size=config.d_model, num_layers=config.num_layers,
                      attention_types=[[["global"], config.num_layers]], num_heads=config.num_heads,
                      intermediate_size=config.d_ff, activation_function="gelu_new", resid_dropout=0.0,
                      embed_dropout=0.0, attention_dropout=0.0, layer_norm_epsilon=1e-5,
                      tie_word_embeddings=config.tie_embeddings, use_cache=False)
    return GPTNeoForCausalLM(hf)


def bench_torch(args) -> dict:
    none = {"torch_tokens_per_s": None, "torch_model": None, "torch_device": None, "torch_num_params": None,
            "torch_version": None, "torch_threads": None, "torch_step_s": None, "torch_reason": None}
    if args.no_torch:
        return {**none, "torch_reason": "--no-torch"}
    try:
        import torch
    except ImportError as e:
        return {**none, "torch_reason": f"torch not importable ({e})"}
    from torch.nn import functional as F

    import torch_gpt

    device, why_not = torch_gpt.baseline_device(args.backend)
    if device is None:
        return {**none, "torch_version": torch.__version__, "torch_reason": why_not}
    config = args.config
    torch.manual_seed(args.seed)
    kind, reason = "plain", None
    model = None
    if args.torch_model in ("auto", "gpt-neo"):
        try:
            hf = _gpt_neo_model(config)
            kind = "gpt-neo"
            model = lambda ids, hf=hf: hf(input_ids=ids).logits  # noqa: E731
            params_module = hf
        except Exception as e:  # transformers missing (the usual case) or incompatible
            reason = f"gpt-neo unavailable ({type(e).__name__}: {e})".splitlines()[0][:200]
            if args.torch_model == "gpt-neo":
                return {**none, "torch_version": torch.__version__, "torch_reason": reason}
    if model is None:
        params_module = model = torch_gpt.PlainGPT(config)
    params_module.to(device).train()
    params = [p for p in params_module.parameters() if p.requires_grad]
    num_params = sum(p.numel() for p in params)
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=(B1, B2))

    host = random_batch(config, args.batch, args.seq_len, args.seed)
    inputs = torch.from_numpy(host["inputs"]).long().to(device)
    targets = torch.from_numpy(host["targets"]).long().to(device)
    weights = torch.from_numpy(host["weights"]).to(device)

    def train_step():
        logits = model(inputs)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        loss = (losses * weights.reshape(-1)).sum() / weights.sum().clamp_min(1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
        optimizer.step()
        return loss

    for _ in range(WARMUP_STEPS):
        train_step()
    torch_gpt.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step()
    torch_gpt.synchronize(device)
    run_s = time.perf_counter() - start
    loss = float(loss.detach())
    return {
        "torch_tokens_per_s": args.steps * args.batch * args.seq_len / run_s,
        "torch_step_s": run_s / args.steps,
        "torch_model": kind,
        "torch_device": str(device),
        "torch_num_params": num_params,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_loss_last": loss,
        "torch_reason": reason,
    }


def format_report(r: dict) -> str:
    lines = [
        f"train step, preset {r['preset']} ({r['num_params']:,} parameters, attention {r['attention']}), "
        f"batch {r['global_batch_size']} x {r['seq_len']}, {r['steps']} timed steps after {WARMUP_STEPS} warm-up",
        f"{'path':<26} {'step s':>8} {'tokens/s':>10} {'tok/s/dev':>10}",
        f"{'sos_jax (' + r['backend'] + ' x' + str(r['device_count']) + ')':<26} {r['step_s']:>8.3f} "
        f"{r['tokens_per_s']:>10.0f} {r['tokens_per_s_per_device']:>10.0f}",
    ]
    if r["torch_tokens_per_s"]:
        lines.append(f"{'torch (' + r['torch_model'] + ', ' + str(r['torch_threads']) + ' threads)':<26} "
                     f"{r['torch_step_s']:>8.3f} {r['torch_tokens_per_s']:>10.0f}")
        lines.append(f"ratio (sos_jax / torch): {r['ratio_vs_torch']:.2f}x; parameters sos_jax {r['num_params']:,}, "
                     f"torch {r['torch_num_params']:,}")
    else:
        lines.append(f"torch: skipped ({r['torch_reason']})")
    lines.append(f"MFU {r['mfu']:.1%} of {r['peak_flops_per_device']:.3g} FLOP/s per device ({r['peak_source']}); "
                 f"{r['matmul_peak_share']:.1%} of the measured f32 matmul peak {r['matmul_peak_flops']:.3g} FLOP/s; "
                 f"{r['flops_per_token']:.3g} FLOPs/token")
    lines.append(f"compile {r['compile_s']:.1f}s (excluded); loss {r['loss_warmup']:.3f} -> {r['loss_last']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = args.config
    result = {"preset": args.preset, "num_params": config.num_params(), "attention": config.attention,
              "dtype": config.dtype, "seq_len": args.seq_len, "global_batch_size": args.batch, "steps": args.steps}
    result.update(bench_jax(args))
    result.update(bench_torch(argparse.Namespace(**vars(args), backend=result["backend"])))
    t = result["torch_tokens_per_s"]
    result["ratio_vs_torch"] = result["tokens_per_s"] / t if t else None
    print(format_report(result), flush=True)
    if args.json:
        print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
