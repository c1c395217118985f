"""RL rollout throughput on Countdown prompts, rewards included: on device against a host-side reward loop.

    python benchmarks/rollout_throughput.py [--preset tiny | --checkpoint DIR] [--batch 16] [--group 8]
                                            [--new-tokens 128] [--repeats 3] [--seed 0] [--json]

Model: ``--checkpoint DIR`` (a pretrain workdir, its ``checkpoints/`` or one step in it; loaded with
``jobs.evaluate.load_model``) or, without it, a freshly initialised ``--preset`` model (``--seed``).
Mesh: every device on ``data`` (``sharding.make_mesh((devices, 1, 1))``); ``--batch`` must divide
by the device count. Problems: ``--batch`` problems of the ``test_seen`` split drawn by
``data.countdown_problems.select`` (3 numbers in 1..12, targets 10..50: the quickstart's setting);
prompts are ``BOS`` + the root line (``jobs.evaluate.encode_prompts``). Sampling: temperature 1,
``--group`` (G) samples per prompt, up to ``--new-tokens`` tokens, stopping on the goal phrase token
(or EOS). Rows are prompt-major (``row = prompt * G + sample``), ``R = batch * G`` of them.

Two paths at the same batch, with the same key, in one process:

1. ``device``: ``rl.rollout.Rollouts``, one jitted call that samples and judges every row with the
   strict on-device verifier (``search.countdown_verify.verify_tokens``), then
   ``jax.device_get(reward_R)``: timed until the rewards are on the host.
2. ``host`` (the baseline): the same model's compiled ``Sampler`` (``rollouts.sampler``, no rewards),
   ``sampler.as_dict`` to the host, each row's trace (root line + completion, ``evaluate.traces``)
   decoded with ``tokenizers.countdown.decode_batch`` and judged in Python with
   ``envs.countdown_check.check_trace(text, nums, target).solved`` (reward 1.0 / 0.0; note that
   ``check_trace`` also computes the lax verdict of the original code).

Both compile on a first call (``*_compile_s``, excluded); then ``--repeats`` rounds, each timing the
two paths one after the other (interleaved, so both see the same machine load), and the best round
of each counts. End-to-end tokens/s is generated tokens (the sum of the rows' lengths, stop token
included) / seconds. The reward stage alone is timed the same way: on device a jitted
``jax.vmap(verify_tokens)`` over the rollout's ``tokens_RxL`` (lengths ``prompt_lengths_R +
lengths_R``) until its verdicts are on the host; on the host the decode + Python verify of the
host path. ``ratio_end_to_end`` = device tokens/s / host tokens/s; ``ratio_reward_stage`` = host
reward seconds / device reward seconds (both > 1 when the device path is faster).
``rewards_match``: both paths gave the same reward in every row (``rows_matching`` counts those
that agree); ``samples_match``: both sampled the same tokens (same key, same model). With
``--json`` the last line of stdout is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPEC = {"num_count": 3, "num_min": 1, "num_max": 12, "target_min": 10, "target_max": 50}  # the quickstart's
SPLIT_SEED, DRAW_BATCH = 4, 256


def parse_args(argv=None) -> argparse.Namespace:
    from sos_jax.models.gpt import PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="model preset, randomly initialised (default tiny; ignored with --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="a pretrain workdir (or checkpoint) to load instead")
    p.add_argument("--batch", type=int, default=16, help="prompts per rollout (default 16)")
    p.add_argument("--group", type=int, default=8, help="samples per prompt (default 8)")
    p.add_argument("--new-tokens", type=int, default=128, help="most tokens generated per sample (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the best of each path counts (default 3)")
    p.add_argument("--seed", type=int, default=0, help="problems, model init and sampling key")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    args = p.parse_args(argv)
    for name in ("batch", "group", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def load_model(args, mesh) -> tuple[object, object, object]:
    """``(graphdef, state, GPTConfig)`` of the ``--checkpoint`` or a fresh ``--preset`` model."""
    from flax import nnx

    from sos_jax.models import sharding
    from sos_jax.models.gpt import PRESETS

    if args.checkpoint:
        from sos_jax.jobs import evaluate

        loaded = evaluate.load_model(args.checkpoint, mesh)
        return loaded["graphdef"], loaded["state"], loaded["model"]
    config = PRESETS[args.preset]
    graphdef, state = nnx.split(sharding.create_sharded_model(config, mesh, args.seed))
    return graphdef, state, config


def draw_problems(seed: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(nums [batch, 3], target [batch])`` from the quickstart's ``test_seen`` split."""
    from sos_jax.data import countdown_problems
    from sos_jax.envs.countdown import CountdownSpec

    spec = CountdownSpec(**SPEC).validate()
    nums, target = countdown_problems.select(seed, {"test_seen": batch}, spec, SPLIT_SEED, DRAW_BATCH)["test_seen"]
    return np.asarray(nums, np.int32), np.asarray(target, np.int32)


def host_rewards(prompts_RxP, prompt_lengths_R, tokens_RxT, lengths_R, nums_RxK, target_R) -> np.ndarray:
    """The baseline's reward stage: decode each row's trace and judge it in Python (1.0 solved, else 0.0)."""
    from sos_jax.envs.countdown_check import check_trace
    from sos_jax.jobs import evaluate
    from sos_jax.tokenizers import countdown as tok

    ids, total = evaluate.traces(prompts_RxP, prompt_lengths_R, tokens_RxT, lengths_R)
    texts = tok.decode_batch(ids, total)
    return np.asarray([1.0 if check_trace(t, n, g).solved else 0.0 for t, n, g in zip(texts, nums_RxK, target_R)],
                      np.float32)


def _timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def run(args) -> dict:
    """Builds both paths, times them interleaved and returns the results."""
    import jax
    import jax.numpy as jnp

    from sos_jax import parallel
    from sos_jax.jobs import evaluate
    from sos_jax.models import sampler, sharding
    from sos_jax.rl.rollout import RewardParams, Rollouts
    from sos_jax.search.countdown_verify import verify_tokens
    from sos_jax.tokenizers import countdown as tok

    devices = jax.device_count()
    if args.batch % devices:
        raise SystemExit(f"--batch {args.batch} must be a multiple of the {devices} devices")
    mesh = sharding.make_mesh((devices, 1, 1))
    graphdef, state, config = load_model(args, mesh)
    nums_BxK, target_B = draw_problems(args.seed, args.batch)
    prompts_BxP, lengths_B = evaluate.encode_prompts(nums_BxK, target_B)
    prompt_len, group = prompts_BxP.shape[1], args.group
    if config.positions == "learned" and prompt_len + args.new_tokens > config.max_len:
        raise SystemExit(f"prompts of {prompt_len} tokens + --new-tokens {args.new_tokens} exceed the model's "
                         f"max_len {config.max_len}")
    params = sampler.SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, num_samples=group,
                                    stop_phrases=((tok.GOAL,),))
    rollouts = Rollouts(graphdef, state, params, RewardParams(), mesh=mesh, batch_size=args.batch,
                        prompt_len=prompt_len)
    key = jax.random.key(args.seed)
    prompts_RxP, prompt_lengths_R = np.repeat(prompts_BxP, group, 0), np.repeat(lengths_B, group, 0)
    nums_RxK, target_R = np.repeat(nums_BxK, group, 0), np.repeat(target_B, group, 0)

    def device_path():
        result = jax.block_until_ready(rollouts(state, prompts_BxP, lengths_B, nums_BxK, target_B, key))
        return result, jax.device_get(result.reward_R)

    def host_path():
        host = sampler.as_dict(rollouts.sampler(state, prompts_BxP, lengths_B, key))
        return host, host_rewards(prompts_RxP, prompt_lengths_R, host["tokens"], host["lengths"], nums_RxK, target_R)

    rows = parallel.batch_sharding(mesh)
    verify = jax.jit(lambda ids, prompt_len_R, len_R, nums, target: jax.vmap(verify_tokens)(
        ids, prompt_len_R + len_R, nums, jnp.full(target.shape, nums.shape[1], jnp.int32), target)["solved"])
    nums_dev, target_dev = jax.device_put(nums_RxK, rows), jax.device_put(target_R, rows)

    device_compile_s, (result, _) = _timed(device_path)
    host_compile_s, _ = _timed(host_path)
    verify_args = (result.tokens_RxL, result.prompt_lengths_R, result.lengths_R, nums_dev, target_dev)
    verify_compile_s, _ = _timed(lambda: jax.device_get(verify(*verify_args)))

    best = {"device": float("inf"), "host": float("inf"), "device_reward": float("inf"), "host_reward": float("inf")}
    for _ in range(args.repeats):
        seconds, (result, device_reward_R) = _timed(device_path)
        best["device"] = min(best["device"], seconds)
        seconds, (host, host_reward_R) = _timed(host_path)
        best["host"] = min(best["host"], seconds)
        seconds, verdict_R = _timed(lambda: jax.device_get(verify(*verify_args)))
        best["device_reward"] = min(best["device_reward"], seconds)
        seconds, _ = _timed(lambda: host_rewards(prompts_RxP, prompt_lengths_R, host["tokens"], host["lengths"],
                                                 nums_RxK, target_R))
        best["host_reward"] = min(best["host_reward"], seconds)

    tokens_RxL = np.asarray(jax.device_get(result.tokens_RxL))
    device_lengths_R = np.asarray(jax.device_get(result.lengths_R))
    same_rows = [np.array_equal(tokens_RxL[r, p:p + n], host["tokens"][r, :m])
                 for r, (p, n, m) in enumerate(zip(prompt_lengths_R, device_lengths_R, host["lengths"]))]
    if not np.array_equal(np.asarray(verdict_R, np.float32), device_reward_R):
        raise RuntimeError("the timed reward stage disagrees with the rollout's reward_R")
    agree_R = device_reward_R == host_reward_R
    device_tokens, host_tokens = int(device_lengths_R.sum()), int(np.asarray(host["lengths"]).sum())
    r = {
        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "device_count": devices,
        "preset": None if args.checkpoint else args.preset, "checkpoint": args.checkpoint,
        "num_params": config.num_params(), "batch": args.batch, "group": group, "rows": args.batch * group,
        "prompt_len": prompt_len, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "device_tokens": device_tokens, "host_tokens": host_tokens,
        "device_seconds": best["device"], "host_seconds": best["host"],
        "device_tokens_per_s": device_tokens / best["device"], "host_tokens_per_s": host_tokens / best["host"],
        "device_reward_s": best["device_reward"], "host_reward_s": best["host_reward"],
        "device_compile_s": device_compile_s, "host_compile_s": host_compile_s, "verify_compile_s": verify_compile_s,
    }
    r["ratio_end_to_end"] = r["device_tokens_per_s"] / r["host_tokens_per_s"]
    r["ratio_reward_stage"] = r["host_reward_s"] / r["device_reward_s"]
    r.update({
        "rewards_match": bool(agree_R.all()), "rows_matching": int(agree_R.sum()),
        "samples_match": bool(all(same_rows)), "rows_same_samples": int(sum(same_rows)),
        "solved": int(device_reward_R.sum()), "host_solved": int(host_reward_R.sum()),
        "mean_tokens": device_tokens / (args.batch * group),
    })
    return r


def format_report(r: dict) -> str:
    """The human-readable summary table of one run's results."""
    model = f"checkpoint {r['checkpoint']}" if r["checkpoint"] else f"preset {r['preset']} (random init)"
    lines = [
        f"RL rollouts, {model}, {r['num_params']:,} parameters; {r['batch']} prompts x {r['group']} samples "
        f"= {r['rows']} rows, prompts of {r['prompt_len']} tokens + up to {r['new_tokens']} new "
        f"(mean {r['mean_tokens']:.1f}); {r['backend']} x{r['device_count']} ({r['device_kind']}); "
        f"best of {r['repeats']} interleaved rounds after a compiling call",
        f"{'path':<44} {'tokens':>8} {'seconds':>9} {'tokens/s':>10} {'reward stage s':>15}",
        f"{'device: Rollouts (sample + verify, one jit)':<44} {r['device_tokens']:>8} {r['device_seconds']:>9.3f} "
        f"{r['device_tokens_per_s']:>10.0f} {r['device_reward_s']:>15.4f}",
        f"{'host: Sampler + decode + check_trace':<44} {r['host_tokens']:>8} {r['host_seconds']:>9.3f} "
        f"{r['host_tokens_per_s']:>10.0f} {r['host_reward_s']:>15.4f}",
        f"end-to-end ratio (device tokens/s / host tokens/s): {r['ratio_end_to_end']:.2f}x",
        f"reward-stage ratio (host decode + Python verify s / device verify s): {r['ratio_reward_stage']:.2f}x",
        f"rewards match: {'yes' if r['rewards_match'] else 'no'} ({r['rows_matching']}/{r['rows']} rows; solved "
        f"{r['solved']} on device, {r['host_solved']} on host); samples match: "
        f"{'yes' if r['samples_match'] else 'no'} ({r['rows_same_samples']}/{r['rows']} rows)",
        f"compile (excluded): device {r['device_compile_s']:.1f}s, host sampler {r['host_compile_s']:.1f}s, "
        f"verifier alone {r['verify_compile_s']:.1f}s",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Runs the benchmark, prints the report (and with ``--json`` the JSON line) and returns the results."""
    args = parse_args(argv)
    result = run(args)
    print(format_report(result), flush=True)
    if args.json:
        print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
