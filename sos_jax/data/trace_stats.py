"""Statistics of trace batches, on host columns (numpy arrays, one entry per trace).

Columns: ``total`` (the full trace length in tokens), ``solved``, ``truncated``, ``strategy``,
``heuristic``, ``beam`` and, where present, ``lines`` (lines in the trace).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Fixed log-spaced edges of token-length histograms (so that histograms can be stored and merged).
LENGTH_BINS = np.geomspace(8, 2**18, 91)


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


def stats(cols: dict[str, np.ndarray], mask: np.ndarray, context_len: int | None = None) -> dict[str, Any]:
    """Count, solve rate, token lengths (full trace, before any cut) and truncated share of the
    masked rows; with a ``lines`` column also the share of one-line traces, and with
    ``context_len`` the share of traces longer than it."""
    n = int(mask.sum())
    keys = ["solve_rate", "tokens_median", "tokens_p95", "tokens_max", "tokens_mean", "truncated_share"]
    keys += ["one_line_share"] if "lines" in cols else []
    keys += ["over_context_share"] if context_len is not None else []
    if n == 0:
        return {"count": 0, **dict.fromkeys(keys)}
    total = cols["total"][mask]
    out = {
        "count": n,
        "solve_rate": float(cols["solved"][mask].mean()),
        "tokens_median": float(np.median(total)),
        "tokens_p95": float(np.percentile(total, 95)),
        "tokens_max": int(total.max()),
        "tokens_mean": float(total.mean()),
        "truncated_share": float(cols["truncated"][mask].mean()),
    }
    if "lines" in cols:
        out["one_line_share"] = float((cols["lines"][mask] <= 1).mean())
    if context_len is not None:
        out["over_context_share"] = float((total > context_len).mean())
    return out


def length_histogram(total: np.ndarray) -> list[int]:
    """Counts of token lengths over ``LENGTH_BINS`` (lengths outside are put in the end bins)."""
    return np.histogram(np.clip(total, LENGTH_BINS[0], LENGTH_BINS[-1]), LENGTH_BINS)[0].tolist()
