"""The unbiased pass@k estimator (Chen et al. 2021) over a grid of per-sample verdicts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(num_samples: int, num_correct: np.ndarray, k: int) -> np.ndarray:
    """Per problem, the chance that k of ``num_samples`` samples drawn without replacement include
    a correct one: ``1 - C(n-c, k) / C(n, k)``, in the stable product form
    ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``; float64, shaped like ``num_correct``; 1.0 where n - c < k."""
    n = int(num_samples)
    c = np.asarray(num_correct)
    if c.dtype.kind not in "iub":
        raise ValueError(f"pass_at_k: num_correct must hold integers, got dtype {c.dtype}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in 1..num_samples={n}, got k={k}")
    if c.size and (c.min() < 0 or c.max() > n):
        raise ValueError(f"pass_at_k: num_correct must be in 0..num_samples={n}, got values in "
                         f"{int(c.min())}..{int(c.max())}")
    c = c.astype(np.int64)
    # none_correct[c] = prod_{i=n-c+1}^{n} (1 - k/i): the chance that all k draws miss the c correct.
    none_correct = np.concatenate([[1.0], np.cumprod(1.0 - k / np.arange(n, 0, -1, dtype=np.float64))])
    return np.where(n - c < k, 1.0, 1.0 - none_correct[c])


def pass_at_k_curve(correct_PxN: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Mean pass@k over problems (rows of the bool grid ``correct_PxN``) for each k in ``ks`` with
    k <= N; larger ks are left out."""
    correct_PxN = np.asarray(correct_PxN, dtype=bool)
    if correct_PxN.ndim != 2 or correct_PxN.shape[0] == 0 or correct_PxN.shape[1] == 0:
        raise ValueError(f"pass_at_k_curve: need a [problems, samples] grid with at least one of each, "
                         f"got shape {correct_PxN.shape}")
    n = correct_PxN.shape[1]
    num_correct = correct_PxN.sum(axis=1)
    return {int(k): float(pass_at_k(n, num_correct, int(k)).mean()) for k in ks if k <= n}
