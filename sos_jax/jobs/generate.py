"""The ``generate`` job: Countdown problems and their search traces, made on device.

Problems are drawn by global index (problem ``i`` depends only on ``config.seed`` and ``i``), in
batches of ``config.batch_size``; each batch is searched in one jitted call (``config.strategy``:
``"sos"``, the Stream-of-Search mix, or ``"ot"``, optimal paths). The job shows a progress bar
(traces/s), prints a summary table per strategy and two decoded traces, and writes into the
workdir ``summary.json`` (headline numbers and the resolved config) and ``token_lengths.png``.

Every row (problem, strategy, heuristic, beam, shuffles) depends only on ``config.seed`` and its
index, so the output does not depend on the batch size or the number of devices; each batch is
split over all devices (``config.batch_size`` must be a multiple of twice their count). On several
processes (``--distributed``) those are the devices of every process; the main process reports and
writes the files, and the numbers are those of one process.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sos_jax import distributed
from sos_jax.data import trace_stats
from sos_jax.jobs import ConfigError, fields, report, write_atomic

SUMMARY = "summary.json"
PLOT = "token_lengths.png"
SPLITS = ("seen", "unseen", "all")
STRATEGIES = ("sos", "ot")
MIN_MAX_LEN = 64
# Columns copied to the host for every trace (the token ids stay on device).
STAT_FIELDS = ("length", "total", "solved", "truncated", "strategy", "heuristic", "beam")


# ------------------------------------------------------------------------------------------------
# Config checks (fast: nothing is compiled)
# ------------------------------------------------------------------------------------------------


def validate(config, workdir: str | None) -> None:
    """Checks every field the job reads and the workdir; raises ConfigError / WorkdirError."""
    from sos_jax.envs import countdown as env

    if fields.get(config, "job") != "generate":
        raise ConfigError(f"config.job={config.job!r}: this is the 'generate' job")
    fields.integer(config, "seed", 0)
    fields.integer(config, "num_problems", 1)
    fields.integer(config, "batch_size", 1)
    fields.integer(config, "split_seed", 0)
    fields.integer(config, "max_len", MIN_MAX_LEN)
    fields.choice(config, "split", SPLITS)
    fields.choice(config, "strategy", STRATEGIES)
    overwrite = fields.boolean(config, "overwrite")
    fields.boolean(config, "show_examples")
    spec = fields.spec_from_config(config)
    fields.mix_from_config(config)
    from sos_jax.search.countdown import DFS_MAX_NUMBERS

    if config.strategy == "sos" and spec.num_count > DFS_MAX_NUMBERS:
        raise ConfigError(f"config.env.num_count={spec.num_count}: the SoS mix needs DFS traces, which support up to "
                          f"{DFS_MAX_NUMBERS} numbers; use config.strategy='ot' or fewer numbers")
    try:
        env.split_targets(spec, config.split, seed=config.split_seed)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None

    fields.workdir_free(workdir, SUMMARY, overwrite)


# ------------------------------------------------------------------------------------------------
# The on-device generator (shared with benchmarks/countdown_gen.py)
# ------------------------------------------------------------------------------------------------


@dataclass
class Generator:
    """Compiled sampling and search for batches of a fixed size, split over all devices.

    ``step(key, indices_B, targets_T) -> (Problems, found_B, Traces)`` is an AOT-compiled
    executable; ``compile_s`` is the wall time its compilation took.
    """

    step: Callable
    batch_size: int
    targets: Any
    sharding: Any
    compile_s: float


def build_generator(spec, targets, *, strategy: str, max_len: int, batch_size: int, mix=None) -> Generator:
    """Compiles ``search.countdown.generate`` for ``batch_size`` problems over all devices
    (``mix``: the SoS ``search.countdown.Mix``, default the published one)."""
    import functools

    import jax
    import jax.numpy as jnp

    from sos_jax import parallel
    from sos_jax.search import countdown as search

    mix = search.Mix() if mix is None else mix
    mesh = parallel.data_mesh()
    rows = mix.block * mesh.size
    if batch_size % rows:
        raise ConfigError(f"config.batch_size={batch_size}: must be a multiple of {rows} ({mix.block} x {mesh.size} "
                          f"devices), so that every device holds whole blocks of the SoS mix")
    fn = functools.partial(search.generate, spec=spec, strategy=strategy, max_len=max_len, mix=mix)
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

    key = jax.random.key(seed)
    pending = None
    for start in range(0, num_problems, gen.batch_size):
        count = min(gen.batch_size, num_problems - start)
        indices = jax.device_put(np.arange(start, start + gen.batch_size, dtype=np.int32), gen.sharding)
        problems, found, traces = gen.step(key, gen.targets, indices)
        if pending is not None:
            on_batch(*pending)
        pending = (start, count, problems, found, traces)
    if pending is not None:
        on_batch(*pending)


# ------------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------------


def run(config, workdir: str) -> dict[str, Any]:
    """Generates the traces, prints the table and examples, writes ``summary.json`` and the plot."""
    import jax
    from tqdm import tqdm

    from sos_jax.envs import countdown as env
    from sos_jax.search.countdown import HEURISTIC_NAMES, STRATEGY_NAMES
    from sos_jax.tokenizers import countdown as tok

    validate(config, workdir)
    wall_start = time.perf_counter()
    spec = fields.spec_from_config(config)
    mix = fields.mix_from_config(config)
    targets = env.split_targets(spec, config.split, seed=config.split_seed)
    n = config.num_problems
    block_rows = mix.block * jax.device_count()  # every device holds whole blocks of the mix
    batch = min(config.batch_size, -(-n // block_rows) * block_rows)
    os.makedirs(workdir, exist_ok=True)

    device = jax.devices()[0]
    main = distributed.is_main_process()  # the only one that writes files and reports
    distributed.say(f"generate: {n} Countdown problems ({spec.num_count} numbers in {spec.num_min}..{spec.num_max}, "
                    f"{config.split} targets, {len(targets)} of {spec.target_min}..{spec.target_max}), strategy "
                    f"{config.strategy}, max_len {config.max_len}, batches of {batch}, on {jax.device_count()} x "
                    f"{device.platform} ({device.device_kind})")
    distributed.say("compiling ...", end=" ")
    gen = build_generator(spec, targets, strategy=config.strategy, max_len=config.max_len, batch_size=batch, mix=mix)
    distributed.say(f"{gen.compile_s:.1f}s")

    cols: dict[str, list[np.ndarray]] = {k: [] for k in STAT_FIELDS + ("nums", "target")}
    examples: dict[bool, dict[str, Any]] = {}

    def on_batch(start, count, problems, found, traces):
        host = distributed.fetch({"found": found, "nums": problems.nums, "target": problems.target,
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
                                      "tokens": distributed.fetch(traces.tokens[r])[: host["length"][r]],
                                      **{k: host[k][r] for k in host}}
        bar.update(count)

    run_start = time.perf_counter()
    with tqdm(total=n, unit="trace", desc="traces", smoothing=0.1, dynamic_ncols=True, disable=not main) as bar:
        run_batches(gen, config.seed, n, on_batch)
    run_s = time.perf_counter() - run_start

    data = {k: np.concatenate(v) for k, v in cols.items()}
    masks = trace_stats.trace_groups(data, config.strategy)
    group_stats = {name: trace_stats.stats(data, mask) for name, mask in masks.items()}
    overall = group_stats["all"]

    distributed.say()
    distributed.say(report.format_table(group_stats))
    distributed.say(f"{n} traces in {run_s:.2f}s: {n / run_s:,.1f} traces/s (compile {gen.compile_s:.1f}s apart)")

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
            distributed.say(f"\n=== problem {ex['index']}: nums {ex['nums'].tolist()}, target {int(ex['target'])}; "
                            f"{name}, {'solved' if want else 'not solved'}, {int(ex['length'])} tokens{cut} ===")
            distributed.say(report.shorten(tok.decode(ex["tokens"]).rstrip("\n")))

    plot_path = os.path.join(workdir, PLOT)
    plotted = ["dfs-sum", "dfs-mult", "bfs-sum", "bfs-mult"] if config.strategy == "sos" else ["ot"]
    hists = {name: (trace_stats.length_histogram(data["total"][masks[name]]),
                    f"{name} (n={group_stats[name]['count']}, solved {group_stats[name]['solve_rate'] or 0:.0%})")
             for name in plotted}
    if main:
        report.save_plot(plot_path, hists, config.max_len, "max_len (cut)",
                         f"Countdown {config.strategy} traces: {n} problems")
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
        "top_level_strategies": list(trace_stats.top_level_groups(config.strategy)),
        "plot": PLOT,
        "config": config.to_dict(),
    }
    summary_path = os.path.join(workdir, SUMMARY)
    if main:
        write_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    distributed.say(f"\nwrote {summary_path} and {plot_path}")
    return summary
