"""The Sudoku side of the ``eval`` job: test puzzles, prompts, scoring, and the study's table and plot.

The prompt is the training sequence up to the answer: ``START original : n <clue lines> solving n
SOL_S n``; the model writes a trace (or a direct solution), ``n SOL_E`` and ``END``, where the
sampler stops. A sample is solved when its fills, replayed last-write-wins onto the puzzle, give the
solution (``rl.rollout.sudoku_verdict``, the RL reward); one that stopped without ``SOL_E`` and was
not cut by the token limit is malformed. As in the backtracking study, backtracking models are read
at token budgets (greedy decoding; solved within ``b`` generated tokens) and direct models at pass@k
(samples at temperature 0.7): ``format_study`` and ``plot_study`` put both, for every model, in one
table and one figure.
"""

from __future__ import annotations

import functools

import numpy as np

from sos_jax.files import write_figure
from sos_jax.tokenizers import sudoku as tok

TEST = "test"  # the split name of the 200 test puzzles (``data.sudoku_test``)


def prompt_ids(puzzle_81) -> list[int]:
    """The prompt of a puzzle: ``START``, its board, ``n SOL_S n``."""
    return [tok.START] + tok.encode(tok.puzzle_board_text(puzzle_81)) + [tok.NEWLINE, tok.SOL_S, tok.NEWLINE]


def encode_prompts(puzzles_Px81: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded prompt ids ``[P, W]`` (``MASK`` after the end) and their lengths."""
    ids = [prompt_ids(p) for p in puzzles_Px81]
    out = np.full((len(ids), max(len(i) for i in ids)), tok.MASK, np.int32)
    for row, i in enumerate(ids):
        out[row, :len(i)] = i
    return out, np.asarray([len(i) for i in ids], np.int32)


@functools.cache
def _judge():
    """Jitted ``(prompts, prompt_lengths, tokens, lengths, puzzles, solutions) -> verdict``: each
    prompt joined to its sample and replayed, in one compiled call per batch shape."""
    import jax

    from sos_jax.rl.rollout import join, sudoku_verdict

    def judge(prompts_RxW, prompt_lengths_R, tokens_RxT, lengths_R, puzzles_Rx81, solutions_Rx81):
        rows = join(prompts_RxW, prompt_lengths_R, tokens_RxT, lengths_R, fill=tok.MASK)
        return jax.vmap(sudoku_verdict)(rows, prompt_lengths_R + lengths_R, puzzles_Rx81, solutions_Rx81)

    return jax.jit(judge)


def score(puzzles_Rx81, solutions_Rx81, prompts_RxW, prompt_lengths_R, tokens_RxT, lengths_R,
          cut_R) -> dict[str, np.ndarray]:
    """Per-sample verdicts: ``solved`` (replay), ``lax_solved`` (the same: Sudoku has one verifier),
    ``malformed`` (stopped without ``SOL_E``, not by the token limit) and ``tokens`` (generated)."""
    import jax

    verdict = jax.device_get(_judge()(*(np.asarray(x, np.int32) for x in (
        prompts_RxW, prompt_lengths_R, tokens_RxT, lengths_R, puzzles_Rx81, solutions_Rx81))))
    solved = np.asarray(verdict["solved"], bool)
    cut = np.asarray(cut_R, bool)
    return {"solved": solved, "lax_solved": solved, "malformed": ~np.asarray(verdict["formatted"], bool) & ~cut,
            "tokens": np.asarray(lengths_R, np.int64)}


def _cell(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_study(results: dict[str, dict[str, dict[str, dict]]], split: str) -> str:
    """The study's table for ``split``: per model, greedy accuracy (%) at each token budget and
    pass@k (%) of the sampled pass, from ``results[pass][model][split]`` (``metrics.summarize``)."""
    greedy, sampled = results.get("greedy", {}), results.get("sampled", {})
    models = list(dict.fromkeys([*greedy, *sampled]))
    budgets = sorted({int(b) for m in greedy.values() if split in m for b in m[split]["accuracy_at_budget"]})
    ks = sorted({int(k) for m in sampled.values() if split in m for k in m[split]["pass_at_k"]})
    width = max([5] + [len(m) for m in models])
    head = f"{'model':<{width}} " + " ".join(f"{'@' + str(b):>6}" for b in budgets)
    head += "  |" + " ".join(f"{'pass@' + str(k):>8}" for k in ks)
    lines = [head, "-" * len(head)]
    for model in models:
        at = greedy.get(model, {}).get(split, {}).get("accuracy_at_budget", {})
        passk = sampled.get(model, {}).get(split, {}).get("pass_at_k", {})
        lines.append(f"{model:<{width}} " + " ".join(f"{_cell(at.get(str(b))):>6}" for b in budgets)
                     + "  |" + " ".join(f"{_cell(passk.get(str(k))):>8}" for k in ks))
    lines.append("left: % solved by greedy decoding within b generated tokens; right: pass@k of the sampled pass")
    return "\n".join(lines)


def plot_study(path: str, results: dict[str, dict[str, dict[str, dict]]], split: str) -> None:
    """One PNG at ``path``, two panels: greedy accuracy against the token budget and pass@k
    against k, one line per model (both axes log2)."""
    from sos_jax.eval.report import draw_curves, figure

    fig, axes = figure(panels=2, width=11)
    panels = (("greedy", "accuracy_at_budget", "token budget (greedy decoding)"),
              ("sampled", "pass_at_k", "k (samples per puzzle)"))
    for ax, (kind, key, xlabel) in zip(axes, panels):
        curves = {model: per_split.get(split, {}).get(key, {}) for model, per_split in results.get(kind, {}).items()}
        draw_curves(ax, curves, xlabel, "puzzles solved")
    fig.suptitle(f"Sudoku {split} puzzles: backtracking at token budgets, direct at pass@k")
    write_figure(path, fig)
