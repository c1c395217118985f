"""Writing Countdown datasets: both forms of every split, ArrayRecord shards in the TFDS layout,
resumable (``records.write_form``: written into ``DIR/sos_countdown/<form>/incomplete.1.0.0/`` and
renamed to ``1.0.0/`` when complete; a rerun with the same settings writes only the splits not yet
finished). Records are ``tf.Example`` protos of ``countdown_tfds.features()``.

``GenerateParams`` splits are drawn by ``countdown_problems`` and traced on device batch by batch
(the next batch is computed while the host writes the last); ``ImportParams`` splits are read by
``countdown_import``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import numpy as np

from sos_jax import distributed
from sos_jax.data import countdown_problems as problems_lib
from sos_jax.data import countdown_tfds as ct
from sos_jax.data import records, trace_stats

SCALARS = ("target", "problem", "strategy", "heuristic", "beam", "solved", "length", "total")
LAYOUT = {"tokens": records.BYTES, "nums": records.INTS, **dict.fromkeys(SCALARS, records.INT)}


def serialize(example: dict[str, Any]) -> bytes:
    """One record: a ``tf.Example`` of ``countdown_tfds.features()``."""
    return records.serialize(example, LAYOUT)


def _split_examples(params, form: str) -> Iterator[tuple[str, Callable[[], Iterator[dict]]]]:
    """``(split, make_examples)`` in split order; ``make_examples()`` starts the split's examples."""
    if isinstance(params, ct.ImportParams):
        from sos_jax.data import countdown_import

        for split, path in params.files:
            yield split, functools.partial(countdown_import.examples, path, form)
        return
    chosen = problems(params)
    for split in chosen:
        yield split, functools.partial(_generated, params, form, split, *chosen[split])


def write_form(data_dir: str, form: str, params, *, context_len: int,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Writes (or completes) one form of the dataset; returns its metadata (the settings and
    per-split statistics). ``progress(n)`` is called as records are written."""
    settings = {"params": params.describe(), "context_len": context_len}

    def report(rows: list[dict]) -> dict[str, Any]:
        cols = {k: np.asarray([r[k] for r in rows]) for k in ("total", "length", "solved", "strategy", "heuristic",
                                                               "beam")}
        cols["lines"] = np.asarray([_line_count(r["tokens"]) for r in rows])
        cols["truncated"] = cols["length"] < cols["total"]
        return split_report(cols, form, context_len)

    return records.write_form(ct.version_dir(data_dir, form), ct.SosCountdown(config=form, data_dir=data_dir),
                              settings, _split_examples(params, form), LAYOUT, report, progress)


def split_report(cols: dict[str, np.ndarray], form: str, context_len: int) -> dict[str, Any]:
    """Statistics per group and token-length histograms (over ``trace_stats.LENGTH_BINS``) of one split."""
    groups = trace_stats.trace_groups(cols, form)
    top = trace_stats.top_level_groups(form) + ("all",)
    return {
        "groups": {name: trace_stats.stats(cols, mask, context_len) for name, mask in groups.items() if name in top},
        "hist": {name: trace_stats.length_histogram(cols["total"][groups[name]]) for name in top},
    }


def _line_count(tokens: np.ndarray) -> int:
    from sos_jax.data.batch import LINE_END_IDS

    return int(np.isin(tokens, LINE_END_IDS).sum())


_DRAWN: dict = {}  # the problems of the last GenerateParams drawn (shared by both forms)


def problems(params: ct.GenerateParams, progress: Callable[[int], None] | None = None):
    """``{split: (nums, target)}`` of every split, drawn once per settings and kept for the next form;
    ``progress(n)`` is called as problems are drawn."""
    if params not in _DRAWN:
        _DRAWN.clear()
        _DRAWN[params] = problems_lib.select(params.seed, dict(params.sizes), params.spec, params.split_seed,
                                             params.batch_size, progress and (lambda split, n: progress(n)))
    return _DRAWN[params]


@functools.lru_cache(maxsize=4)
def _tracer(spec, form: str, max_len: int, mix, batch_size: int):
    """Jitted ``(key, nums, target, index) -> Traces`` (tokens as uint8), rows over all devices."""
    import jax.numpy as jnp

    from sos_jax import parallel
    from sos_jax.envs import countdown as env
    from sos_jax.search import countdown as search

    def trace(key, nums, target, index):
        if form == "sos":
            traces = search.sos_mix(key, env.Problems(nums=nums, target=target, index=index), spec=spec,
                                    max_len=max_len, mix=mix)
        else:
            traces = search.optimal_traces(nums, target, max_len=max_len)
        return traces.replace(tokens=traces.tokens.astype(jnp.uint8))

    mesh = parallel.data_mesh()
    rows = (mix.block if form == "sos" else 1) * mesh.size
    if batch_size % rows:
        raise ValueError(f"batch_size={batch_size}: must be a multiple of {rows} (whole mix blocks on every device)")
    return parallel.shard_rows(trace, mesh, 1), parallel.row_sharding(mesh)


def _generated(params: ct.GenerateParams, form: str, split: str, nums_NxK: np.ndarray, target_N: np.ndarray):
    """Examples of one split, traced on device batch by batch (the next batch runs while the host
    hands out the last one)."""
    import jax

    step, sharding = _tracer(params.spec, form, params.max_len, params.mix, params.batch_size)
    key = problems_lib.split_key(params.seed, split, problems_lib.SEARCH_KEY)
    n, b = len(target_N), params.batch_size

    def dispatch(start):
        rows = np.minimum(np.arange(start, start + b), n - 1)  # the last batch repeats the last problem
        index = np.arange(start, start + b, dtype=np.int32)
        args = [jax.device_put(np.ascontiguousarray(a, dtype=np.int32), sharding)
                for a in (nums_NxK[rows], target_N[rows], index)]
        return start, step(key, *args)

    pending = dispatch(0)
    for nxt in range(b, n + b, b):
        start, traces = pending
        if nxt < n:
            pending = dispatch(nxt)
        host = distributed.fetch(traces)
        for r in range(min(b, n - start)):
            yield {"tokens": host.tokens[r, : host.length[r]], "nums": nums_NxK[start + r], "target": target_N[start + r],
                   "problem": start + r, "strategy": host.strategy[r], "heuristic": host.heuristic[r],
                   "beam": host.beam[r], "solved": host.solved[r], "length": host.length[r], "total": host.total[r]}


