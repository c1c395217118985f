"""Countdown trace generation throughput: on device vs plain Python.

    python benchmarks/countdown_gen.py [--n 20000] [--batch 1000] [--max-len 4096] [--python-n N] [--json]

On device (whatever backend jax picks; set JAX_PLATFORMS=cpu to force the CPU): problem sampling,
the SoS-mix search and the token ids for ``--n`` problems, in batches of ``--batch``, timed end to
end after the compilation (timed apart) and one warm-up batch of the same shape. Plain Python
(``sos_jax.search.countdown_python``): sampling, SoS-mix traces and ``tokenizer.encode`` to ids for
``--python-n`` problems (default ``min(n, 2000)``). Prints a table and the ratio; with ``--json``
the last line of stdout is one JSON object with the results.

Token counts are full trace lengths (before the ``--max-len`` cut); ``truncated_share`` is the
share of traces longer than ``--max-len``.
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="problems on device (default 20000)")
    p.add_argument("--batch", type=int, default=1000, help="problems per jitted call (default 1000)")
    p.add_argument("--max-len", type=int, default=4096, help="token buffer per trace (default 4096)")
    p.add_argument("--python-n", type=int, default=None, help="problems for plain Python (default min(n, 2000))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    args = p.parse_args(argv)
    for name in ("n", "batch", "max_len"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.python_n is None:
        args.python_n = min(args.n, 2000)
    if args.python_n < 0:
        p.error("--python-n must be >= 0")
    return args


def _strategy_stats(cols, mask) -> dict:
    from sos_jax.data import trace_stats

    s = trace_stats.stats(cols, mask)
    return {"count": s["count"], "solve_rate": s["solve_rate"], "median_tokens": s["tokens_median"],
            "p95_tokens": s["tokens_p95"], "max_tokens": s["tokens_max"], "truncated_share": s["truncated_share"]}


def bench_device(args) -> dict:
    import jax
    from tqdm import tqdm

    from sos_jax.data import trace_stats
    from sos_jax.envs import countdown as env
    from sos_jax.jobs import generate

    spec = env.CountdownSpec().validate()
    targets = env.split_targets(spec, "seen")
    batch = min(args.batch, args.n)
    gen = generate.build_generator(spec, targets, strategy="sos", max_len=args.max_len, batch_size=batch)

    # Warm-up: one batch of the same shape (another seed, so other problems than the measured ones).
    start = time.perf_counter()
    indices = jax.device_put(jax.numpy.arange(batch, dtype=jax.numpy.int32), gen.sharding)
    jax.block_until_ready(gen.step(jax.random.key(args.seed + 1), gen.targets, indices))
    warmup_s = time.perf_counter() - start

    cols: dict[str, list] = {k: [] for k in generate.STAT_FIELDS}

    def on_batch(start, count, problems, found, traces):
        traces.tokens.block_until_ready()
        host = jax.device_get({"found": found, **{k: getattr(traces, k) for k in generate.STAT_FIELDS}})
        if not np.asarray(host["found"])[:count].all():
            raise RuntimeError(f"batch at {start}: a problem without solvable numbers")
        for k in cols:
            cols[k].append(np.asarray(host[k])[:count])
        bar.update(count)

    start = time.perf_counter()
    with tqdm(total=args.n, unit="trace", desc=f"{jax.default_backend()}", file=sys.stderr,
              dynamic_ncols=True) as bar:
        generate.run_batches(gen, args.seed, args.n, on_batch)
    run_s = time.perf_counter() - start

    data = {k: np.concatenate(v) for k, v in cols.items()}
    masks = trace_stats.trace_groups(data, "sos")
    overall = _strategy_stats(data, masks["all"])
    return {
        "traces_per_s": args.n / run_s,
        "run_s": run_s,
        "compile_s": gen.compile_s,
        "warmup_s": warmup_s,
        "batch": batch,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "solve_rate": overall["solve_rate"],
        "truncated_share": overall["truncated_share"],
        "median_tokens": overall["median_tokens"],
        "p95_tokens": overall["p95_tokens"],
        "max_tokens": overall["max_tokens"],
        "by_strategy": {name: _strategy_stats(data, masks[name]) for name in ("dfs", "bfs")},
    }


def bench_python(args) -> dict:
    from tqdm import tqdm

    from sos_jax.envs import countdown as env
    from sos_jax.search import countdown_python as ref
    from sos_jax.tokenizers import countdown as tok

    n = args.python_n
    if n == 0:
        return {"python_n": 0, "python_traces_per_s": None, "python_s": 0.0}
    spec = env.CountdownSpec()
    targets = env.split_targets(spec, "seen").tolist()
    ids = []
    chunk = 100
    start = time.perf_counter()
    with tqdm(total=n, unit="trace", desc="python", file=sys.stderr, dynamic_ncols=True) as bar:
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            problems = ref.sample_problems(m, args.seed + i, spec.num_count, spec.num_min, spec.num_max, targets)
            texts = ref.sos_mix_traces(problems, args.seed + i)
            ids.extend(tok.encode(t) for t in texts)
            bar.update(m)
    python_s = time.perf_counter() - start
    lengths = np.array([len(x) for x in ids])
    goal = tok.TOKEN_ID[" equal: Goal Reached\n"]
    return {
        "python_n": n,
        "python_traces_per_s": n / python_s,
        "python_s": python_s,
        "python_solve_rate": float(np.mean([goal in x for x in ids])),
        "python_median_tokens": float(np.median(lengths)),
        "python_p95_tokens": float(np.percentile(lengths, 95)),
    }


def format_report(r: dict) -> str:
    lines = [
        f"Countdown SoS-mix generation, 4 numbers, max_len {r['max_len']}",
        f"{'path':<22} {'traces':>8} {'seconds':>9} {'traces/s':>10}",
        f"{'on device (' + r['backend'] + ')':<22} {r['n']:>8} {r['run_s']:>9.2f} {r['traces_per_s']:>10.1f}",
    ]
    if r["python_traces_per_s"]:
        lines.append(f"{'plain Python':<22} {r['python_n']:>8} {r['python_s']:>9.2f} {r['python_traces_per_s']:>10.1f}")
        lines.append(f"ratio (device / Python): {r['ratio']:.2f}x")
    lines.append(f"compile {r['compile_s']:.1f}s, warm-up batch {r['warmup_s']:.1f}s (both excluded), "
                 f"batch {r['batch']} over {r['device_count']} x {r['device_kind']}")
    lines.append("")
    head = f"{'strategy':<9} {'count':>7} {'solved':>7} {'tok med':>8} {'tok p95':>8} {'trunc':>7}"
    lines += [head, "-" * len(head)]
    rows = [(k, v) for k, v in r["by_strategy"].items()]
    rows.append(("all", {"count": r["n"], "solve_rate": r["solve_rate"], "median_tokens": r["median_tokens"],
                         "p95_tokens": r["p95_tokens"], "truncated_share": r["truncated_share"]}))
    for name, s in rows:
        if not s["count"]:
            lines.append(f"{name:<9} {0:>7}")
            continue
        lines.append(f"{name:<9} {s['count']:>7} {s['solve_rate']:>7.1%} {s['median_tokens']:>8.0f} "
                     f"{s['p95_tokens']:>8.0f} {s['truncated_share']:>7.1%}")
    if r["python_traces_per_s"]:
        lines.append(f"{'python':<9} {r['python_n']:>7} {r['python_solve_rate']:>7.1%} "
                     f"{r['python_median_tokens']:>8.0f} {r['python_p95_tokens']:>8.0f} {'-':>7}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = {"n": args.n, "max_len": args.max_len}
    result.update(bench_device(args))
    result.update(bench_python(args))
    py = result["python_traces_per_s"]
    result["ratio"] = result["traces_per_s"] / py if py else None
    print(format_report(result), flush=True)
    if args.json:
        print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
