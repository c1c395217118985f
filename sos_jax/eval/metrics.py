"""Headline numbers of an evaluation: accuracy, pass@k, accuracy within token budgets, token
counts, and the shares of malformed and cut samples, as a JSON-ready dict (``summary.json``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sos_jax.eval.passk import pass_at_k_curve

DEFAULT_KS = (1, 2, 4, 8, 16, 32)


def summarize(*, solved_PxN: np.ndarray, lax_solved_PxN: np.ndarray, tokens_PxN: np.ndarray,
              malformed_PxN: np.ndarray, cut_PxN: np.ndarray, budgets: Sequence[int],
              ks: Sequence[int] = DEFAULT_KS) -> dict:
    """The summary of a [problems P, samples N] grid of per-sample results.

    ``solved_PxN`` / ``lax_solved_PxN``: strict and lax verdicts; ``tokens_PxN``: generated tokens,
    counting until and including the stop; ``malformed_PxN``: text outside the line grammar;
    ``cut_PxN``: stopped by the token limit. Keys: problems, samples_per_problem, accuracy (=
    pass@1), lax_accuracy, pass_at_k ({str(k): value} for k <= N), accuracy_at_budget ({str(b):
    share of samples solved within b tokens}), mean_tokens, mean_tokens_solved (None when none
    solved), malformed, cut (shares of all samples)."""
    grids = {"solved_PxN": solved_PxN, "lax_solved_PxN": lax_solved_PxN, "tokens_PxN": tokens_PxN,
             "malformed_PxN": malformed_PxN, "cut_PxN": cut_PxN}
    shapes = {name: np.shape(grid) for name, grid in grids.items()}
    if len(set(shapes.values())) != 1 or len(shapes["solved_PxN"]) != 2:
        raise ValueError(f"summarize: need [problems, samples] grids of one shape, got {shapes}")
    solved = np.asarray(solved_PxN, dtype=bool)
    tokens = np.asarray(tokens_PxN, dtype=np.int64)
    problems, samples = solved.shape
    return {
        "problems": int(problems),
        "samples_per_problem": int(samples),
        "accuracy": float(solved.mean()),
        "lax_accuracy": float(np.asarray(lax_solved_PxN, dtype=bool).mean()),
        "pass_at_k": {str(k): v for k, v in pass_at_k_curve(solved, ks).items()},
        "accuracy_at_budget": {str(int(b)): float((solved & (tokens <= b)).mean()) for b in budgets},
        "mean_tokens": float(tokens.mean()),
        "mean_tokens_solved": float(tokens[solved].mean()) if solved.any() else None,
        "malformed": float(np.asarray(malformed_PxN, dtype=bool).mean()),
        "cut": float(np.asarray(cut_PxN, dtype=bool).mean()),
    }
