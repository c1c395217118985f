"""What jobs show of trace statistics (``data.trace_stats``): the printed table, shortened
example texts, and the token-length histogram plot."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sos_jax.data.trace_stats import LENGTH_BINS
from sos_jax.files import write_figure

# Table columns: (header, stats key, width, format spec); a column shows when its key is in the stats.
_COLUMNS = (("count", "count", 7, ""), ("solved", "solve_rate", 7, ".1%"), ("tok med", "tokens_median", 8, ".0f"),
            ("tok p95", "tokens_p95", 8, ".0f"), ("tok max", "tokens_max", 8, ""),
            ("trunc", "truncated_share", 7, ".1%"), ("1-line", "one_line_share", 7, ".1%"),
            ("> ctx", "over_context_share", 7, ".1%"))


def format_table(groups: dict[str, dict[str, Any]], label: str = "strategy",
                 rule_before: tuple[str, ...] = ("dfs", "all")) -> str:
    """A text table, one row per group; a rule goes before groups whose last ``/``-part is in
    ``rule_before``."""
    first = next(iter(groups.values()))
    cols = [c for c in _COLUMNS if c[1] in first]
    width = max([len(label), 10] + [len(name) for name in groups])
    head = f"{label:<{width}} " + " ".join(f"{h:>{w}}" for h, _, w, _ in cols)
    lines = [head, "-" * len(head)]
    for name, s in groups.items():
        if name.split("/")[-1] in rule_before and not lines[-1].startswith("-"):
            lines.append("-" * len(head))
        if s["count"] == 0:
            lines.append(f"{name:<{width}} {0:>7}")
            continue
        lines.append(f"{name:<{width}} " + " ".join(f"{s[k]:>{w}{spec}}" for _, k, w, spec in cols))
    return "\n".join(lines)


def shorten(text: str, keep: int = 15) -> str:
    """The first and last ``keep`` lines of a long text, with a marker for the lines left out."""
    lines = text.splitlines()
    if len(lines) <= 2 * keep + 1:
        return text
    return "\n".join(lines[:keep] + [f"    ... ({len(lines) - 2 * keep} lines elided) ..."] + lines[-keep:])


def save_plot(path: str, hists: dict[str, tuple[list[int], str]], cut: int, cut_label: str, title: str) -> None:
    """Token-length histograms (``name -> (counts over LENGTH_BINS, legend label)``) on a log
    axis, with the length ``cut`` marked."""
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font cache notices
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    used = [i for counts, _ in hists.values() for i in np.flatnonzero(counts)]
    for counts, label in hists.values():
        if sum(counts):
            ax.stairs(counts, LENGTH_BINS, linewidth=1.6, label=label)
    ax.axvline(cut, color="black", linestyle="--", linewidth=1, label=f"{cut_label}={cut}")
    if used:
        ax.set_xlim(LENGTH_BINS[min(used)], max(LENGTH_BINS[max(used) + 1], cut * 1.2))
    ax.set_xscale("log")
    ax.set_xlabel("trace length in tokens (before any cut; log scale)")
    ax.set_ylabel("traces")
    ax.set_title(title)
    ax.legend(fontsize=8)
    write_figure(path, fig)
