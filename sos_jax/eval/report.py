"""What an evaluation shows: a side-by-side text table of ``metrics.summarize`` dicts and PNG plots
of pass@k and of accuracy against the token budget, one line per (model, split)."""

from __future__ import annotations

import logging

from sos_jax.files import write_figure

# Columns after split and model: (header, width, cell of one summary).
_COLUMNS = (
    ("problems", 8, lambda s: f"{s['problems']}"),
    ("samples", 7, lambda s: f"{s['samples_per_problem']}"),
    ("acc", 6, lambda s: f"{s['accuracy']:.1%}"),
    ("lax acc", 7, lambda s: f"{s['lax_accuracy']:.1%}"),
    ("pass@1", 6, lambda s: _share(s["pass_at_k"].get("1"))),
    ("pass@k (k)", 12, lambda s: _largest_k(s["pass_at_k"])),
    ("tokens", 7, lambda s: "-" if s["mean_tokens_solved"] is None else f"{s['mean_tokens_solved']:.0f}"),
    ("malformed", 9, lambda s: f"{s['malformed']:.1%}"),
    ("cut", 6, lambda s: f"{s['cut']:.1%}"),
)
_WIDTH, _MAX_SPLIT = 110, 16  # longer names are shortened in the middle to keep rows within _WIDTH
_NOTE = "tokens: mean generated tokens of solved samples; pass@k over problems, other shares over samples"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _largest_k(pass_at_k: dict[str, float]) -> str:
    """pass@k at the largest k computed, with that k: ``"41.0% (32)"``; "-" when there is none."""
    if not pass_at_k:
        return "-"
    k = max(pass_at_k, key=int)
    return f"{_share(pass_at_k[k])} ({k})"


def _fit(name: str, width: int) -> str:
    if len(name) <= width:
        return name
    head = (width - 2) // 2
    return name[:head] + ".." + name[len(name) - (width - 2 - head):]


def format_report(results: dict[str, dict[str, dict]]) -> str:
    """A plain-text table of ``results[model][split]`` (``summarize`` dicts): one row per (split,
    model), splits in order of first appearance with a rule between them, shares in percent; pass@1
    and pass@k at the largest k computed; "-" where no sample was solved."""
    splits = list(dict.fromkeys(split for per_split in results.values() for split in per_split))
    columns = " ".join(f"{h:>{w}}" for h, w, _ in _COLUMNS)
    split_w = min(_MAX_SPLIT, max([5] + [len(s) for s in splits]))
    model_w = min(_WIDTH - len(columns) - split_w - 2, max([5] + [len(m) for m in results]))
    head = f"{'split':<{split_w}} {'model':<{model_w}} {columns}"
    rule = "-" * len(head)
    lines = [head]
    for split in splits:
        lines.append(rule)
        for model, per_split in results.items():
            if split in per_split:
                cells = " ".join(f"{cell(per_split[split]):>{w}}" for _, w, cell in _COLUMNS)
                lines.append(f"{_fit(split, split_w):<{split_w}} {_fit(model, model_w):<{model_w}} {cells}")
    lines += [rule, _NOTE]
    return "\n".join(lines)


def figure(panels: int = 1, width: float = 8):
    """A matplotlib figure (Agg backend) with ``panels`` axes side by side: ``(fig, axes)``."""
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font cache notices
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width, 4.5), dpi=110, squeeze=False)
    return fig, list(axes[0])


def draw_curves(ax, curves: dict[str, dict[str, float]], xlabel: str, ylabel: str, title: str = "") -> None:
    """One line per ``curves[label]`` ({str(x): share}) against x on a log2 axis, shares in percent."""
    from matplotlib.ticker import NullFormatter, PercentFormatter, ScalarFormatter

    ticks = set()
    for label, curve in curves.items():
        points = sorted((int(x), y) for x, y in curve.items())
        if points:
            xs, ys = zip(*points)
            ticks.update(xs)
            ax.plot(xs, ys, marker="o", linewidth=1.6, label=label)
    if ticks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def _plot_curves(path: str, results: dict[str, dict[str, dict]], key: str, xlabel: str, title: str) -> None:
    """One line per (model, split) of ``summary[key]`` ({str(x): share}) against x on a log2 axis."""
    fig, (ax,) = figure()
    curves = {f"{model} / {split}": summary[key] for model, per_split in results.items()
              for split, summary in per_split.items()}
    draw_curves(ax, curves, xlabel, "problems solved" if key == "pass_at_k" else "samples solved", title)
    write_figure(path, fig)


def plot_pass_at_k(path: str, results: dict[str, dict[str, dict]]) -> None:
    """A PNG at ``path`` of pass@k against k (log2 axis), one line per (model, split)."""
    _plot_curves(path, results, "pass_at_k", "k (samples per problem; log2 scale)", "Countdown pass@k")


def plot_budgets(path: str, results: dict[str, dict[str, dict]]) -> None:
    """A PNG at ``path`` of accuracy against the token budget (log2 axis), one line per (model, split)."""
    _plot_curves(path, results, "accuracy_at_budget", "token budget (log2 scale)",
                 "Countdown accuracy within a token budget")
