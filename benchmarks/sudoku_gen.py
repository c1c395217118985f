"""Sudoku puzzle and trace generation throughput: on device vs plain Python.

    python benchmarks/sudoku_gen.py [--n 16384] [--batch 1024] [--variants 64] [--branch fewest]
        [--techniques full] [--max-tokens 4096] [--minimal] [--python-n 100] [--json]

On device (whatever backend jax picks; set JAX_PLATFORMS=cpu to force the CPU), each stage timed
apart after a warm-up call of the same shape, batches split over all devices:

1. ``fresh``: ``n / variants`` new puzzles with unique solutions (``envs.sudoku.sample_puzzles``:
   a random grid, then clues removed while the solution stays unique, down to 22..28 clues; with
   ``--minimal``, ``sample_minimal_puzzles``: one removal pass, the clue count it reaches);
2. ``variants``: ``variants`` random symmetries of each (``envs.sudoku.equivalent_puzzles``), so
   ``n`` puzzles in all (with ``--variants 1`` each fresh puzzle is replaced by one symmetry of it);
3. ``traces``: the backtracking trace and direct solution of each (``search.sudoku.trace_batch``)
   and the replay check of both (``search.sudoku_verify.replay_token_batch``).

Reported: puzzles per second of each stage, of the whole pipeline, and of the pipeline without
variants (fresh puzzles and their traces: ``1 / (1 / fresh + 1 / traces)``). Plain Python
(``search.sudoku_python``) writes the traces of ``--python-n`` generated puzzles, for the ratio
of trace writing alone. With ``--json`` the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# On the CPU, one JAX device per core: the batch is split over the devices.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))


def parse_args(argv=None) -> argparse.Namespace:
    from sos_jax.search import sudoku as S

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16384, help="puzzles with traces (default 16384)")
    p.add_argument("--batch", type=int, default=1024, help="puzzles per jitted call (default 1024)")
    p.add_argument("--variants", type=int, default=64, help="symmetries drawn per fresh puzzle (default 64)")
    p.add_argument("--branch", choices=S.BRANCH_ORDERS, default="fewest")
    p.add_argument("--techniques", choices=S.TECHNIQUES, default=S.TECHNIQUES[-1])
    p.add_argument("--max-tokens", type=int, default=4096, help="trace buffer (default 4096)")
    p.add_argument("--minimal", action="store_true", help="fresh puzzles from one removal pass")
    p.add_argument("--python-n", type=int, default=100, help="puzzles for plain Python (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    args = p.parse_args(argv)
    for name in ("n", "batch", "variants", "max_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch % args.variants or args.n % args.batch:
        p.error("--batch must be a multiple of --variants, and --n a multiple of --batch")
    if args.python_n < 0:
        p.error("--python-n must be >= 0")
    return args


def _timed(fn, *args):
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def bench_device(args) -> dict:
    import jax
    import jax.numpy as jnp

    from sos_jax import parallel
    from sos_jax.envs import sudoku as env
    from sos_jax.search import sudoku as S
    from sos_jax.search.sudoku_verify import replay_tokens

    mesh = parallel.data_mesh()
    fresh_per_batch = args.batch // args.variants
    lanes = max(1, fresh_per_batch // (16 * jax.device_count()))
    make = env.sample_minimal_puzzles if args.minimal else lambda key, i: env.sample_puzzles(key, i, lanes=lanes)
    fresh = parallel.shard_rows(make, mesh)
    variants = jax.jit(jax.vmap(jax.vmap(env.equivalent_puzzles, in_axes=(0, None, None)), in_axes=(0, 0, 0)))

    def traces_and_check(puzzles_Bx81, solutions_Bx81):
        out = S.trace_batch(puzzles_Bx81, branch=args.branch, techniques=args.techniques, max_tokens=args.max_tokens)
        check = jax.vmap(replay_tokens)
        return out, check(out.trace_BxL, out.length_B, puzzles_Bx81, solutions_Bx81), check(
            out.direct_BxM, out.direct_length_B, puzzles_Bx81, solutions_Bx81)

    traces = parallel.shard_rows(traces_and_check, mesh, n_replicated=0)
    key, variant_key = jax.random.split(jax.random.key(args.seed))

    def batch(b):
        indices = jnp.arange(fresh_per_batch, dtype=jnp.int32) + b * fresh_per_batch
        made, t_fresh = _timed(fresh, key, indices)
        keys = jax.random.split(jax.random.fold_in(variant_key, b), (fresh_per_batch, args.variants))
        (puzzles, solutions), t_variants = _timed(variants, keys, made["puzzle_Bx81"], made["solution_Bx81"])
        puzzles, solutions = puzzles.reshape(-1, 81), solutions.reshape(-1, 81)
        written, t_traces = _timed(traces, puzzles, solutions)
        return written, made, (t_fresh, t_variants, t_traces)

    start = time.perf_counter()
    batch(args.n // args.batch)  # warm-up (compiles), on other puzzles than the measured ones
    warmup_s = time.perf_counter() - start
    times = np.zeros(3)
    cols = {k: [] for k in ("length", "solved", "truncated", "reverts", "trace_ok", "direct_ok")}
    clues = []
    for b in range(args.n // args.batch):
        (out, trace_ok, direct_ok), made, t = batch(b)
        clues.append(np.asarray(made["clues_B"]))
        times += t
        host = jax.device_get({"length": out.length_B, "solved": out.solved_B, "truncated": out.truncated_B,
                               "reverts": out.reverts_B, "trace_ok": trace_ok, "direct_ok": direct_ok})
        for k in cols:
            cols[k].append(np.asarray(host[k]))
    data = {k: np.concatenate(v) for k, v in cols.items()}
    fresh_n = args.n // args.variants
    rate = {"fresh": fresh_n / times[0], "variants": args.n / times[1], "traces": args.n / times[2]}
    complete = ~data["truncated"]
    return {
        "puzzles_with_traces_per_s": args.n / times.sum(),
        "fresh_pipeline_per_s": 1 / (1 / rate["fresh"] + 1 / rate["traces"]),
        "stage_per_s": rate,
        "stage_s": dict(zip(rate, times.tolist())),
        "warmup_s": warmup_s,
        "n": args.n,
        "fresh_n": fresh_n,
        "fresh_clues_mean": float(np.concatenate(clues).mean()),
        # A trace cut by --max-tokens may still replay to the solution by chance (its last writes all
        # right), so the check is on the finished ones.
        "traces_verified": bool(data["trace_ok"][data["solved"]].all()
                                and np.array_equal(data["direct_ok"], data["solved"])),
        "solved_share": float(data["solved"].mean()),
        "truncated_share": float(data["truncated"].mean()),
        "median_tokens_untruncated": float(np.median(data["length"][complete])) if complete.any() else 0.0,
        "revert_share": float((data["reverts"] > 0).mean()),
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
    }


def bench_python(args) -> dict:
    import jax

    from sos_jax.envs import sudoku as env
    from sos_jax.search import sudoku_python as ref

    if not args.python_n:
        return {"traces_per_s": 0.0, "n": 0}
    made = jax.jit(env.sample_puzzles)(jax.random.key(args.seed + 1), np.arange(args.python_n, dtype=np.int32))
    puzzles = np.asarray(made["puzzle_Bx81"])
    start = time.perf_counter()
    for p in puzzles:
        ref.trace(p, args.branch, techniques=args.techniques)
    run_s = time.perf_counter() - start
    return {"traces_per_s": args.python_n / run_s, "run_s": run_s, "n": args.python_n}


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = bench_device(args)
    python = bench_python(args)
    result = {"device": device, "python": python,
              "trace_speedup": device["stage_per_s"]["traces"] / python["traces_per_s"] if python["n"] else None,
              "settings": {k: getattr(args, k) for k in ("n", "batch", "variants", "branch", "techniques",
                                                         "max_tokens", "minimal", "python_n", "seed")}}
    print(f"{device['backend']} x{device['device_count']} ({device['device_kind']}), {args.branch}, "
          f"{args.techniques}, traces up to {args.max_tokens} tokens")
    print(f"fresh puzzles: {'one removal pass' if args.minimal else '22..28 clues asked'}, "
          f"mean {device['fresh_clues_mean']:.1f} clues")
    print(f"{'stage':<22}{'puzzles/s':>12}{'seconds':>10}")
    for name, per_s in device["stage_per_s"].items():
        print(f"{name:<22}{per_s:>12,.0f}{device['stage_s'][name]:>10.2f}")
    per_s = device["puzzles_with_traces_per_s"]
    print(f"{'pipeline':<22}{per_s:>12,.0f}   ({args.variants} variants per fresh puzzle)")
    print(f"{'pipeline, fresh only':<22}{device['fresh_pipeline_per_s']:>12,.0f}")
    if python["n"]:
        print(f"{'python traces':<22}{python['traces_per_s']:>12,.0f}   device traces {result['trace_speedup']:.1f}x")
    print(f"every trace and direct solution verified by replay: {device['traces_verified']}; solved "
          f"{device['solved_share']:.1%}, truncated {device['truncated_share']:.1%}, median "
          f"{device['median_tokens_untruncated']:.0f} tokens, revert {device['revert_share']:.1%}")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
