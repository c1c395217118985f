"""The ``generate`` job: Countdown problems and their search traces, made on device.

Problems are drawn by global index (problem ``i`` depends only on ``config.seed`` and ``i``), in
batches of ``config.batch_size``; each batch is searched in one jitted call (``config.strategy``:
``"sos"``, the Stream-of-Search mix, or ``"ot"``, optimal paths). The job shows a progress bar
(traces/s), prints a summary table per strategy and two decoded traces, and writes into the
workdir ``summary.json`` (headline numbers and the resolved config) and ``token_lengths.png``.

Every row (problem, strategy, heuristic, beam, shuffles) depends only on ``config.seed`` and its
index, so the output does not depend on the batch size or the number of devices; each batch is
split over all local devices (``config.batch_size`` must be a multiple of twice their count).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sos_jax.jobs import ConfigError, WorkdirError, write_atomic

SUMMARY = "summary.json"
PLOT = "token_lengths.png"
SPLITS = ("seen", "unseen", "all")
STRATEGIES = ("sos", "ot")
MIN_MAX_LEN = 64
ENV_FIELDS = ("num_count", "num_min", "num_max", "target_min", "target_max")
# Columns copied to the host for every trace (the token ids stay on device).
STAT_FIELDS = ("length", "total", "solved", "truncated", "strategy", "heuristic", "beam")


# ------------------------------------------------------------------------------------------------
# Config checks (fast: nothing is compiled)
# ------------------------------------------------------------------------------------------------


def _get(config, path: str) -> Any:
    node = config
    for part in path.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(f"config.{path}: missing field") from None
    return node


def _int(config, path: str, lo: int | None = None) -> int:
    value = _get(config, path)
    if type(value) is not int:
        raise ConfigError(f"config.{path}={value!r}: must be an int, got {type(value).__name__}")
    if lo is not None and value < lo:
        raise ConfigError(f"config.{path}={value}: must be >= {lo}")
    return value


def _bool(config, path: str) -> bool:
    value = _get(config, path)
    if type(value) is not bool:
        raise ConfigError(f"config.{path}={value!r}: must be True or False")
    return value


def _choice(config, path: str, choices: tuple[str, ...]) -> str:
    value = _get(config, path)
    if value not in choices:
        raise ConfigError(f"config.{path}={value!r}: must be one of {', '.join(map(repr, choices))}")
    return value


def spec_from_config(config):
    """The validated ``CountdownSpec`` of ``config.env``; ConfigError names the field at fault."""
    from sos_jax.envs import countdown as env

    fields = {name: _int(config, f"env.{name}") for name in ENV_FIELDS}
    extra = sorted(set(_get(config, "env").keys()) - set(ENV_FIELDS))
    if extra:
        raise ConfigError(f"config.env.{extra[0]}: unknown field; config.env has {', '.join(ENV_FIELDS)}")
    try:
        return env.CountdownSpec(**fields).validate()
    except ValueError as e:
        raise ConfigError(f"config.env.{e}") from None


def validate(config, workdir: str | None) -> None:
    """Checks every field the job reads and the workdir; raises ConfigError / WorkdirError."""
    from sos_jax.envs import countdown as env

    if _get(config, "job") != "generate":
        raise ConfigError(f"config.job={config.job!r}: this is the 'generate' job")
    _int(config, "seed", 0)
    _int(config, "num_problems", 1)
    _int(config, "batch_size", 1)
    _int(config, "split_seed", 0)
    _int(config, "max_len", MIN_MAX_LEN)
    _choice(config, "split", SPLITS)
    _choice(config, "strategy", STRATEGIES)
    overwrite = _bool(config, "overwrite")
    _bool(config, "show_examples")
    spec = spec_from_config(config)
    from sos_jax.search.countdown import DFS_MAX_NUMBERS

    if config.strategy == "sos" and spec.num_count > DFS_MAX_NUMBERS:
        raise ConfigError(f"config.env.num_count={spec.num_count}: the SoS mix needs DFS traces, which support up to "
                          f"{DFS_MAX_NUMBERS} numbers; use config.strategy='ot' or fewer numbers")
    try:
        env.split_targets(spec, config.split, seed=config.split_seed)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None

    if not workdir:
        raise WorkdirError("--workdir is required")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir}: exists and is not a folder")
    summary = os.path.join(workdir, SUMMARY)
    if os.path.exists(summary) and not overwrite:
        raise WorkdirError(f"{summary} exists (an earlier run); pass --config.overwrite=True to replace it, "
                           "or choose another --workdir")


# ------------------------------------------------------------------------------------------------
# The on-device generator (shared with benchmarks/countdown_gen.py)
# ------------------------------------------------------------------------------------------------


@dataclass
class Generator:
    """Compiled sampling and search for batches of a fixed size, split over all local devices.

    ``step(key, indices_B, targets_T) -> (Problems, found_B, Traces)`` is an AOT-compiled
    executable; ``compile_s`` is the wall time its compilation took.
    """

    step: Callable
    batch_size: int
    targets: Any
    sharding: Any
    compile_s: float


def build_generator(spec, targets, *, strategy: str, max_len: int, batch_size: int) -> Generator:
    """Compiles ``search.countdown.generate`` for ``batch_size`` problems over the local devices."""
    import functools

    import jax
    import jax.numpy as jnp

    from sos_jax import parallel
    from sos_jax.search import countdown as search

    mesh = parallel.data_mesh()
    if batch_size % (2 * mesh.size):
        raise ConfigError(f"config.batch_size={batch_size}: must be a multiple of {2 * mesh.size} "
                          f"(2 x {mesh.size} devices), so that every device holds whole index pairs")
    fn = functools.partial(search.generate, spec=spec, strategy=strategy, max_len=max_len)
    step = parallel.shard_rows(lambda key, targets_T, indices_B: fn(key, indices_B, targets_T), mesh, n_replicated=2)
    targets = jnp.asarray(targets, jnp.int32)
    sharding = parallel.row_sharding(mesh)
    indices = jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding)
    start = time.perf_counter()
    compiled = step.lower(jax.random.key(0), targets, indices).compile()
    return Generator(step=compiled, batch_size=batch_size, targets=targets, sharding=sharding,
                     compile_s=time.perf_counter() - start)


def run_batches(gen: Generator, seed: int, num_problems: int, on_batch: Callable[[int, int, Any, Any, Any], None]):
    """Generates ``num_problems`` traces batch by batch.

    Batch ``b`` is dispatched before batch ``b-1`` is handed to ``on_batch(start, count, problems,
    found, traces)`` (device arrays, ``count`` real rows first; the last batch is padded with the
    next indices), so host work overlaps device work.
    """
    import jax
    import jax.numpy as jnp

    key = jax.random.key(seed)
    pending = None
    for start in range(0, num_problems, gen.batch_size):
        count = min(gen.batch_size, num_problems - start)
        indices = jax.device_put(jnp.arange(start, start + gen.batch_size, dtype=jnp.int32), gen.sharding)
        problems, found, traces = gen.step(key, gen.targets, indices)
        if pending is not None:
            on_batch(*pending)
        pending = (start, count, problems, found, traces)
    if pending is not None:
        on_batch(*pending)


# ------------------------------------------------------------------------------------------------
# Statistics, table, examples, plot
# ------------------------------------------------------------------------------------------------


def trace_groups(cols: dict[str, np.ndarray], strategy: str) -> dict[str, np.ndarray]:
    """Row masks of the reported groups, finest first; the last group is ``all``."""
    strat, heur, beam = cols["strategy"], cols["heuristic"], cols["beam"]
    groups: dict[str, np.ndarray] = {}
    if strategy == "sos":
        for s, sname in ((0, "dfs"), (1, "bfs")):
            for h, hname in ((0, "sum"), (1, "mult")):
                groups[f"{sname}-{hname}"] = (strat == s) & (heur == h)
        for b in range(1, 6):
            groups[f"bfs-b{b}"] = (strat == 1) & (beam == b)
        groups["dfs"] = strat == 0
        groups["bfs"] = strat == 1
    else:
        groups["ot"] = strat == 2
    groups["all"] = np.ones_like(strat, dtype=bool)
    return groups


def top_level_groups(strategy: str) -> tuple[str, ...]:
    """Groups that partition the traces (their counts sum to the total)."""
    return ("dfs", "bfs") if strategy == "sos" else ("ot",)


def stats(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    """Count, solve rate, token lengths (full trace, before truncation) and truncated share."""
    n = int(mask.sum())
    if n == 0:
        return {"count": 0, "solve_rate": None, "tokens_median": None, "tokens_p95": None, "tokens_max": None,
                "tokens_mean": None, "truncated_share": None}
    total = cols["total"][mask]
    return {
        "count": n,
        "solve_rate": float(cols["solved"][mask].mean()),
        "tokens_median": float(np.median(total)),
        "tokens_p95": float(np.percentile(total, 95)),
        "tokens_max": int(total.max()),
        "tokens_mean": float(total.mean()),
        "truncated_share": float(cols["truncated"][mask].mean()),
    }


def format_table(groups: dict[str, dict[str, Any]]) -> str:
    head = f"{'strategy':<10} {'count':>7} {'solved':>7} {'tok med':>8} {'tok p95':>8} {'tok max':>8} {'trunc':>7}"
    lines = [head, "-" * len(head)]
    for name, s in groups.items():
        if name in ("dfs", "all") and len(lines) > 2:
            lines.append("-" * len(head))
        if s["count"] == 0:
            lines.append(f"{name:<10} {0:>7}")
            continue
        lines.append(f"{name:<10} {s['count']:>7} {s['solve_rate']:>7.1%} {s['tokens_median']:>8.0f} "
                     f"{s['tokens_p95']:>8.0f} {s['tokens_max']:>8} {s['truncated_share']:>7.1%}")
    return "\n".join(lines)


def shorten(text: str, keep: int = 15) -> str:
    """The first and last ``keep`` lines of a long text, with a marker for the lines left out."""
    lines = text.splitlines()
    if len(lines) <= 2 * keep + 1:
        return text
    return "\n".join(lines[:keep] + [f"    ... ({len(lines) - 2 * keep} lines elided) ..."] + lines[-keep:])


def save_plot(path: str, cols: dict[str, np.ndarray], groups: dict[str, np.ndarray], strategy: str,
              max_len: int) -> None:
    """Histogram of full token lengths per strategy (and heuristic), with the max_len cut marked."""
    import io
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font cache notices

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["dfs-sum", "dfs-mult", "bfs-sum", "bfs-mult"] if strategy == "sos" else ["ot"]
    total = cols["total"]
    hi = max(int(total.max()), max_len) if total.size else max_len
    lo = max(1, int(total.min())) if total.size else 1
    bins = np.geomspace(lo, hi * 1.05, 50)  # log-spaced: lengths span two to three orders of magnitude
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name in names:
        mask = groups[name]
        if mask.any():
            ax.hist(total[mask], bins=bins, histtype="step", linewidth=1.6,
                    label=f"{name} (n={int(mask.sum())}, solved {cols['solved'][mask].mean():.0%})")
    ax.axvline(max_len, color="black", linestyle="--", linewidth=1, label=f"max_len={max_len} (cut)")
    ax.set_xscale("log")
    ax.set_xlabel("trace length in tokens (before the cut; log scale)")
    ax.set_ylabel("traces")
    ax.set_title(f"Countdown {strategy} traces: {len(total)} problems")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


# ------------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------------


def run(config, workdir: str) -> dict[str, Any]:
    import jax
    from tqdm import tqdm

    from sos_jax.envs import countdown as env
    from sos_jax.search.countdown import HEURISTIC_NAMES, STRATEGY_NAMES
    from sos_jax.tokenizers import countdown as tok

    validate(config, workdir)
    wall_start = time.perf_counter()
    spec = spec_from_config(config)
    targets = env.split_targets(spec, config.split, seed=config.split_seed)
    n = config.num_problems
    pair_rows = 2 * jax.device_count()  # every device holds whole index pairs
    batch = min(config.batch_size, -(-n // pair_rows) * pair_rows)
    os.makedirs(workdir, exist_ok=True)

    device = jax.devices()[0]
    print(f"generate: {n} Countdown problems ({spec.num_count} numbers in {spec.num_min}..{spec.num_max}, "
          f"{config.split} targets, {len(targets)} of {spec.target_min}..{spec.target_max}), strategy "
          f"{config.strategy}, max_len {config.max_len}, batches of {batch}, on {jax.device_count()} x "
          f"{device.platform} ({device.device_kind})", flush=True)
    print("compiling ...", end=" ", flush=True)
    gen = build_generator(spec, targets, strategy=config.strategy, max_len=config.max_len, batch_size=batch)
    print(f"{gen.compile_s:.1f}s", flush=True)

    cols: dict[str, list[np.ndarray]] = {k: [] for k in STAT_FIELDS + ("nums", "target")}
    examples: dict[bool, dict[str, Any]] = {}

    def on_batch(start, count, problems, found, traces):
        host = jax.device_get({"found": found, "nums": problems.nums, "target": problems.target,
                               **{k: getattr(traces, k) for k in STAT_FIELDS}})
        host = {k: np.asarray(v)[:count] for k, v in host.items()}
        if not host["found"].all():
            i = start + int(np.argmin(host["found"]))
            raise RuntimeError(f"problem {i}: no solvable numbers found for its target; "
                               "the config.env ranges may admit (almost) no solvable problem")
        for k in cols:
            cols[k].append(host[k])
        if config.show_examples:
            for want in (True, False):
                if examples.get(want, {}).get("good"):
                    continue
                rows = np.flatnonzero(host["solved"] == want)
                # Prefer a trace that shows some search and fits the buffer.
                good = rows[(host["length"][rows] >= 100) & ~host["truncated"][rows]]
                if good.size or (rows.size and want not in examples):
                    r = int(good[0] if good.size else rows[0])
                    examples[want] = {"index": start + r, "good": bool(good.size),
                                      "tokens": np.asarray(traces.tokens[r, : host["length"][r]]),
                                      **{k: host[k][r] for k in host}}
        bar.update(count)

    run_start = time.perf_counter()
    with tqdm(total=n, unit="trace", desc="traces", smoothing=0.1, dynamic_ncols=True) as bar:
        run_batches(gen, config.seed, n, on_batch)
    run_s = time.perf_counter() - run_start

    data = {k: np.concatenate(v) for k, v in cols.items()}
    masks = trace_groups(data, config.strategy)
    group_stats = {name: stats(data, mask) for name, mask in masks.items()}
    overall = group_stats["all"]

    print()
    print(format_table(group_stats))
    print(f"{n} traces in {run_s:.2f}s: {n / run_s:,.1f} traces/s (compile {gen.compile_s:.1f}s apart)")

    if config.show_examples:
        for want in (True, False):
            ex = examples.get(want)
            if ex is None:
                continue
            name = STRATEGY_NAMES[int(ex["strategy"])]
            if name != "ot":
                name += f"-{HEURISTIC_NAMES[int(ex['heuristic'])]}"
            if name.startswith("bfs"):
                name += f" beam {int(ex['beam'])}"
            cut = f", cut at max_len from {int(ex['total'])}" if ex["truncated"] else ""
            print(f"\n=== problem {ex['index']}: nums {ex['nums'].tolist()}, target {int(ex['target'])}; {name}, "
                  f"{'solved' if want else 'not solved'}, {int(ex['length'])} tokens{cut} ===")
            print(shorten(tok.decode(ex["tokens"]).rstrip("\n")))

    plot_path = os.path.join(workdir, PLOT)
    save_plot(plot_path, data, masks, config.strategy, config.max_len)
    summary = {
        "job": "generate",
        "num_traces": n,
        "traces_per_s": n / run_s,
        "run_s": run_s,
        "compile_s": gen.compile_s,
        "wall_s": time.perf_counter() - wall_start,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "solve_rate": overall["solve_rate"],
        "truncated_share": overall["truncated_share"],
        "tokens_median": overall["tokens_median"],
        "tokens_p95": overall["tokens_p95"],
        "tokens_max": overall["tokens_max"],
        "tokens_mean": overall["tokens_mean"],
        "num_targets": int(len(targets)),
        "strategies": group_stats,
        "top_level_strategies": list(top_level_groups(config.strategy)),
        "plot": PLOT,
        "config": config.to_dict(),
    }
    summary_path = os.path.join(workdir, SUMMARY)
    write_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {summary_path} and {plot_path}")
    return summary
