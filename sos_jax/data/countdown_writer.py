"""Writing Countdown datasets: ArrayRecord shards in the TFDS layout, split by split, resumable.

``write_form(data_dir, form, params)`` writes one form (``sos`` or ``ot``) of every split into
``DIR/sos_countdown/<form>/incomplete.1.0.0/`` and renames that folder to ``1.0.0/`` when every split
is done, with ``dataset_info.json``, ``features.json`` and ``metadata.json`` (the settings and the
per-split statistics) written by TFDS itself; then ``tfds.data_source`` reads it. Records stream to
disk (nothing is held back in memory) as ``tf.Example`` protos of ``countdown_tfds.features()``,
serialized deterministically, so the same settings give byte-identical files. A finished split is
recorded in ``progress.json``: a rerun after a crash with the same settings keeps the finished
splits and writes only the rest; other settings start the folder afresh. Until the rename, an
earlier dataset in ``1.0.0/`` stays untouched.

``GenerateParams`` splits are drawn by ``countdown_problems`` and traced on device batch by batch
(the next batch is computed while the host writes the last); ``ImportParams`` splits are read by
``countdown_import``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module

from sos_jax.data import DataError
from sos_jax.data import countdown_problems as problems_lib
from sos_jax.data import countdown_tfds as ct
from sos_jax.data import trace_stats
from sos_jax.files import write_atomic

RECORDS_PER_SHARD = 50_000
WRITER_OPTIONS = "group_size:1"  # one record per chunk: fast random access for global shuffles
PARTIAL = "incomplete."  # prefix of the folder a form is written into
PROGRESS = "progress.json"
SCALARS = ("target", "problem", "strategy", "heuristic", "beam", "solved", "length", "total")


def serialize(example: dict[str, Any]) -> bytes:
    """One record: a ``tf.Example`` of ``countdown_tfds.features()``, fields in sorted order."""
    from tensorflow_datasets.proto import tf_example_pb2

    proto = tf_example_pb2.Example()
    feature = proto.features.feature
    feature["tokens"].bytes_list.value.append(np.asarray(example["tokens"], np.uint8).tobytes())
    feature["nums"].int64_list.value.extend(int(x) for x in example["nums"])
    for name in SCALARS:
        feature[name].int64_list.value.append(int(example[name]))
    return proto.SerializeToString(deterministic=True)


def _write_split(folder: str, split: str, examples: Iterator[dict], form: str, context_len: int,
                 progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Writes one split's shards into ``folder``; returns its shard lengths, bytes and statistics."""
    columns: dict[str, list] = {k: [] for k in ("total", "length", "solved", "strategy", "heuristic", "beam", "lines")}
    parts: list[str] = []
    lengths: list[int] = []
    writer = None
    for example in examples:
        if writer is None or lengths[-1] == RECORDS_PER_SHARD:
            if writer is not None:
                writer.close()
            parts.append(os.path.join(folder, f".{split}.part-{len(parts):05d}"))
            writer = array_record_module.ArrayRecordWriter(parts[-1], WRITER_OPTIONS)
            lengths.append(0)
        writer.write(serialize(example))
        lengths[-1] += 1
        for k in columns:
            columns[k].append(example[k] if k != "lines" else _line_count(example["tokens"]))
        if progress is not None:
            progress(1)
    if writer is None:
        raise DataError(f"split {split}: no records to write")
    writer.close()
    template = _template(folder, split)
    paths = [os.fspath(p) for p in template.sharded_filepaths(len(parts))]
    for part, path in zip(parts, paths):
        os.replace(part, path)
    cols = {k: np.asarray(v) for k, v in columns.items()}
    cols["truncated"] = cols["length"] < cols["total"]
    return {"shard_lengths": lengths, "num_bytes": sum(os.path.getsize(p) for p in paths),
            "report": split_report(cols, form, context_len)}


def _template(folder: str, split: str):
    return tfds.core.naming.ShardedFileTemplate(data_dir=folder, dataset_name=ct.NAME, split=split,
                                                filetype_suffix="array_record")


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
    """Writes (or completes) one form of the dataset; returns its metadata (see the module doc).

    ``progress(n)`` is called as records are written.
    """
    final = ct.version_dir(data_dir, form)
    folder = os.path.join(os.path.dirname(final), PARTIAL + ct.VERSION)
    settings = {"params": params.describe(), "context_len": context_len}
    state = _read_progress(folder)
    if state.get("settings") != settings:
        shutil.rmtree(folder, ignore_errors=True)
        state = {"settings": settings, "splits": {}}
    os.makedirs(folder, exist_ok=True)
    for split, make_examples in _split_examples(params, form):
        if split in state["splits"]:
            continue  # finished by an earlier run with the same settings
        state["splits"][split] = _write_split(folder, split, make_examples(), form, context_len, progress)
        write_atomic(os.path.join(folder, PROGRESS), json.dumps(state))

    info = ct.SosCountdown(config=form, data_dir=data_dir).info
    info.set_file_format("array_record", override=True)
    info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=done["shard_lengths"], num_bytes=done["num_bytes"],
                            filename_template=_template(folder, split))
        for split, done in state["splits"].items()]))
    metadata = {**settings, "splits": {split: done["report"] for split, done in state["splits"].items()}}
    info.metadata.update(metadata)
    info.write_to_directory(folder)
    os.remove(os.path.join(folder, PROGRESS))
    if os.path.exists(final):
        shutil.rmtree(final)  # the caller decided to replace it; the new form is complete
    os.rename(folder, final)
    return metadata


def _read_progress(folder: str) -> dict:
    try:
        with open(os.path.join(folder, PROGRESS)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


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
        host = jax.device_get(traces)
        for r in range(min(b, n - start)):
            yield {"tokens": host.tokens[r, : host.length[r]], "nums": nums_NxK[start + r], "target": target_N[start + r],
                   "problem": start + r, "strategy": host.strategy[r], "heuristic": host.heuristic[r],
                   "beam": host.beam[r], "solved": host.solved[r], "length": host.length[r], "total": host.total[r]}


