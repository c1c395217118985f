"""The problems of each split of a Countdown dataset, drawn on device and kept apart on the host.

Splits (the reference setup): ``train`` on the seen targets; ``val_seen`` and ``test_seen`` on the
seen targets, with no problem that occurs in ``train`` or in an earlier eval split; ``val_unseen``
and ``test_unseen`` on the held-out targets, with no problem twice. A problem is its multiset of
numbers and its target (the order of the numbers does not make it new).

Split ``s`` draws candidates by index from its own key (``seed`` folded with the split's place in
``SPLITS``): train takes indices ``0..n-1`` as they are; an eval split walks the indices in order
and keeps each candidate not seen before, until it has its size. So the problems depend only on
the seed, the spec, the split sizes and the target split, not on batching or devices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sos_jax import parallel
from sos_jax.envs import countdown as env

# split name -> which targets it draws from; the order fixes each split's key and the dedup order
SPLITS = {"train": "seen", "val_seen": "seen", "test_seen": "seen", "val_unseen": "unseen", "test_unseen": "unseen"}
PROBLEM_KEY, SEARCH_KEY = 0, 1  # streams folded into a split's key


def split_key(seed: int, split: str, stream: int) -> jax.Array:
    """The key of ``split``'s problems (``PROBLEM_KEY``) or of its traces (``SEARCH_KEY``)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: must be one of {', '.join(SPLITS)}")
    base = jax.random.fold_in(jax.random.key(seed), list(SPLITS).index(split))
    return jax.random.fold_in(base, stream)


def problem_codes(nums_NxK: np.ndarray, target_N: np.ndarray, spec: env.CountdownSpec) -> np.ndarray:
    """One int64 per problem, equal exactly for the same multiset of numbers and target."""
    code = np.asarray(target_N, np.int64)
    for column in np.sort(np.asarray(nums_NxK, np.int64), axis=1).T:
        code = code * (spec.num_max + 1) + column
    return code


@functools.lru_cache(maxsize=8)
def _sampler(spec: env.CountdownSpec, batch_size: int):
    mesh = parallel.data_mesh(jax.local_devices())  # each process draws whole splits by itself
    if batch_size % mesh.size:
        raise ValueError(f"batch_size={batch_size}: must be a multiple of the {mesh.size} devices")
    step = parallel.shard_rows(lambda key, targets, idx: env.sample_problems(key, idx, spec, targets), mesh, 2)
    return step, parallel.row_sharding(mesh)


def sample(key: jax.Array, start: int, count: int, spec: env.CountdownSpec, targets: np.ndarray,
           batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Host arrays ``(nums [count, K], target [count])`` of problems ``start .. start+count-1``."""
    step, sharding = _sampler(spec, batch_size)
    targets_T = jnp.asarray(targets, jnp.int32)
    nums, target = [], []
    for first in range(start, start + count, batch_size):
        idx = jax.device_put(jnp.arange(first, first + batch_size, dtype=jnp.int32), sharding)
        problems, found = step(key, targets_T, idx)
        take = min(batch_size, start + count - first)
        if not bool(jnp.all(found[:take])):
            raise RuntimeError(f"problem {first + int(jnp.argmin(found))}: no solvable numbers found for its target; "
                               "the env ranges may admit (almost) no solvable problem")
        nums.append(np.asarray(problems.nums)[:take])
        target.append(np.asarray(problems.target)[:take])
    return np.concatenate(nums), np.concatenate(target)


def select(seed: int, sizes: dict[str, int], spec: env.CountdownSpec, split_seed: int, batch_size: int,
           progress=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (nums [n, K], target [n])}`` for every split with a size > 0 (see the module doc).

    ``progress(split, count)`` is called as problems are drawn, if given.
    """
    unknown = sorted(set(sizes) - set(SPLITS))
    if unknown:
        raise ValueError(f"split {unknown[0]!r}: must be one of {', '.join(SPLITS)}")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seen: dict[str, np.ndarray] = {"seen": np.zeros(0, np.int64), "unseen": np.zeros(0, np.int64)}
    for split, kind in SPLITS.items():
        n = sizes.get(split, 0)
        if n <= 0:
            continue
        targets = env.split_targets(spec, kind, seed=split_seed)
        key = split_key(seed, split, PROBLEM_KEY)
        if split == "train":
            nums, target = sample(key, 0, n, spec, targets, batch_size)
            if progress:
                progress(split, n)
        else:
            nums, target = _fresh(key, n, spec, targets, batch_size, seen[kind], split, progress)
        seen[kind] = np.union1d(seen[kind], problem_codes(nums, target, spec))
        out[split] = (nums, target)
    return out


def _fresh(key, n, spec, targets, batch_size, taken, split, progress):
    """The first ``n`` candidates, in index order, whose problem is not in ``taken`` nor repeated."""
    nums_parts, target_parts, codes_kept = [], [], np.zeros(0, np.int64)
    start, have = 0, 0
    space = len(targets) * (spec.num_max - spec.num_min + 1) ** spec.num_count
    while have < n:
        if start > 64 * n + 100 * batch_size:
            raise RuntimeError(f"split {split}: found only {have} of {n} problems not seen before after {start} draws; "
                               f"the env ranges (about {space} number lists x targets) are too small for the split sizes")
        count = -(-(n - have) * 21 // (20 * batch_size)) * batch_size  # whole batches, 5% spare for duplicates
        nums, target = sample(key, start, count, spec, targets, batch_size)
        start += count
        codes = problem_codes(nums, target, spec)
        _, first = np.unique(codes, return_index=True)  # first occurrence within this draw
        keep = np.zeros(len(codes), bool)
        keep[first] = True
        keep &= ~np.isin(codes, taken) & ~np.isin(codes, codes_kept)
        rows = np.flatnonzero(keep)[: n - have]
        nums_parts.append(nums[rows])
        target_parts.append(target[rows])
        codes_kept = np.concatenate([codes_kept, codes[rows]])
        have += len(rows)
        if progress:
            progress(split, len(rows))
    return np.concatenate(nums_parts), np.concatenate(target_parts)
