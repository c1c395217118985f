"""The grain pipeline: packed and padded rows hold whole examples of source records, in the batch
layout; the stream is deterministic, covers every record once per epoch, resumes exactly from its
saved state, and arrives as global arrays sharded over the mesh's batch axes."""

import json
import pathlib

import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from orbax.checkpoint import v1 as ocp

from sos_jax import parallel
from sos_jax.data import batch, pipeline
from sos_jax.tokenizers import countdown as tok

SEQ_LEN = 96
B = 16  # global batch rows: 2 per fake device


def _traces(n: int = 64) -> list[str]:
    """``n`` Countdown traces cut after 1 to 7 lines (15 to 150 tokens), distinct in their first
    SEQ_LEN tokens so that every example identifies its record; some are longer than SEQ_LEN."""
    path = pathlib.Path(__file__).parent / "data" / "countdown_examples.jsonl"
    traces = [json.loads(line)["trace"] for line in path.read_text().splitlines()]
    texts = {}
    for i, t in enumerate(traces):
        text = "".join(t.splitlines(keepends=True)[: 1 + i % 7])
        texts.setdefault(tuple(tok.encode(text)[:SEQ_LEN]), text)
    return list(texts.values())[:n]


TEXTS = _traces()
SOURCE = [{"tokens": np.array(tok.encode(t), np.uint8), "id": i, "nums": [1, 2, 3]} for i, t in enumerate(TEXTS)]


def _key(ex) -> tuple:
    return tuple(map(tuple, (ex["inputs"], ex["targets"], ex["weights"])))


def _record_of(mask_prompt: bool) -> dict[tuple, int]:
    """Each record's example (as a hashable key) -> the record's index."""
    return {_key(batch.example(r["tokens"], seq_len=SEQ_LEN, mask_prompt=mask_prompt)): i
            for i, r in enumerate(SOURCE)}


def _check_rows(b, *, packing: bool, mask_prompt: bool) -> list[int]:
    """Asserts every row of a host batch is whole examples of source records; returns their indices."""
    record_of = _record_of(mask_prompt)
    assert set(b) == set(batch.BATCH_KEYS)
    for k, v in b.items():
        assert v.shape == (len(b["inputs"]), SEQ_LEN) and v.dtype == batch.BATCH_DTYPES[k], k
    seen = []
    for r in range(len(b["inputs"])):
        row = {k: np.asarray(v[r]) for k, v in b.items()}
        seg = row["segment_ids"]
        n_segments = seg.max()
        assert n_segments >= 1 and (packing or n_segments == 1)
        # Segments 1, 2, ... lie one after another from the row's start; padding fills the rest.
        used = int((seg > 0).sum())
        assert (seg[used:] == 0).all() and (np.diff(seg[:used]) >= 0).all() and seg[0] == 1
        assert set(np.unique(seg[:used])) == set(range(1, n_segments + 1))
        pad = seg == 0
        assert (row["inputs"][pad] == tok.PAD).all() and (row["targets"][pad] == tok.PAD).all()
        assert (row["weights"][pad] == 0).all() and (row["positions"][pad] == 0).all()
        if not mask_prompt:
            np.testing.assert_array_equal(row["weights"] == 0, pad)
        for s in range(1, n_segments + 1):
            ex = {k: v[seg == s] for k, v in row.items()}
            n = len(ex["inputs"])
            np.testing.assert_array_equal(ex["positions"], np.arange(n))
            i = record_of.get(_key(ex))
            assert i is not None, f"row {r} segment {s} is not the example of any record"
            seen.append(i)
            trace = SOURCE[i]["tokens"].astype(np.int32)
            assert ex["inputs"][0] == tok.BOS
            if len(trace) < SEQ_LEN:  # whole: the targets are the trace, then EOS
                np.testing.assert_array_equal(ex["targets"], np.append(trace, tok.EOS))
            else:  # cut to SEQ_LEN tokens, no EOS
                assert n == SEQ_LEN
                np.testing.assert_array_equal(ex["targets"], trace[:SEQ_LEN])
                np.testing.assert_array_equal(ex["inputs"][1:], trace[: SEQ_LEN - 1])
            prompt = len(tok.encode(TEXTS[i].split("\n")[0] + "\n")) if mask_prompt else 0
            np.testing.assert_array_equal(ex["weights"], np.arange(n) >= prompt)
    return seen


def _pipeline(**kw):
    args = dict(seq_len=SEQ_LEN, global_batch_size=B, packing=True, mask_prompt=True, seed=0)
    return pipeline.batches(SOURCE, **(args | kw))


def _take(it, n: int) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v) for k, v in next(it).items()} for _ in range(n)]


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        for k in batch.BATCH_KEYS:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_source_has_distinct_short_and_cut_traces():
    assert len(SOURCE) == len(_record_of(True)) == 64
    lengths = [len(r["tokens"]) for r in SOURCE]
    assert min(lengths) < SEQ_LEN // 4 and sum(n >= SEQ_LEN for n in lengths) >= 3


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("mask_prompt", [True, False])
def test_rows_are_whole_examples_once_per_epoch(packing, mask_prompt):
    it = _pipeline(packing=packing, mask_prompt=mask_prompt, num_epochs=1)
    seen = [i for b in it for i in _check_rows(b, packing=packing, mask_prompt=mask_prompt)]
    assert len(seen) == len(set(seen)), "a record appeared twice in one epoch"
    if packing:
        # Only the last, partial batch is dropped: the records missing from the epoch fit in B - 1 rows.
        missing = set(range(len(SOURCE))) - set(seen)
        assert sum(min(len(SOURCE[i]["tokens"]) + 1, SEQ_LEN) for i in missing) <= (B - 1) * SEQ_LEN
        assert len(seen) > len(SOURCE) // 2 and len(seen) > 2 * B  # several examples per row
    else:
        assert sorted(seen) == list(range(len(SOURCE)))  # 64 records, 4 full batches


def test_epochs_are_reshuffled():
    it = _pipeline(packing=False, num_epochs=2)
    epochs = [[_check_rows(b, packing=False, mask_prompt=True) for b in _take(it, 4)] for _ in range(2)]
    for batches_of_epoch in epochs:
        assert sorted(sum(batches_of_epoch, [])) == list(range(len(SOURCE)))
    assert epochs[0][0] != sorted(epochs[0][0])
    assert [set(b) for b in epochs[0]] != [set(b) for b in epochs[1]]  # not just rows swapped in a batch
    with pytest.raises(StopIteration):
        next(it)


def test_without_shuffle_records_come_in_order():
    it = _pipeline(packing=False, shuffle=False)
    seen = [i for b in _take(it, 2) for i in _check_rows(b, packing=False, mask_prompt=True)]
    assert seen == list(range(2 * B))


def test_deterministic_and_seeded():
    _assert_same(_take(_pipeline(packing_bins=3 * B), 4), _take(_pipeline(packing_bins=3 * B), 4))
    a, b = _take(_pipeline(), 2), _take(_pipeline(seed=1), 2)
    assert any((x["inputs"] != y["inputs"]).any() for x, y in zip(a, b))


@pytest.mark.parametrize("packing", [True, False])
def test_resume_from_orbax_checkpoint(tmp_path, packing):
    # More packing bins than rows: the saved state sits inside a packed group of rows.
    kw = dict(packing=packing, packing_bins=2 * B + 3, seed=3)
    it = _pipeline(**kw)
    _take(it, 3)
    ocp.save_checkpointables(tmp_path / "ckpt", {"data": it})
    expected = _take(it, 4)
    fresh = _pipeline(**kw)
    ocp.load_checkpointables(tmp_path / "ckpt", {"data": fresh})
    _assert_same(_take(fresh, 4), expected)


def test_resume_from_get_state():
    it = _pipeline(packing_bins=2 * B + 3)
    _take(it, 2)
    state = it.get_state()
    expected = _take(it, 3)
    it.set_state(state)
    _assert_same(_take(it, 3), expected)
    fresh = _pipeline(packing_bins=2 * B + 3)
    fresh.set_state(json.loads(json.dumps(state)))  # as written to and read from a checkpoint
    _assert_same(_take(fresh, 3), expected)


def test_global_arrays_split_rows_over_8_devices():
    assert jax.device_count() == 8
    mesh = parallel.data_mesh()
    b = next(_pipeline(mesh=mesh))
    local = _pipeline(mesh=mesh).next_local()
    for k, v in b.items():
        assert isinstance(v, jax.Array) and v.shape == (B, SEQ_LEN) and v.dtype == batch.BATCH_DTYPES[k]
        assert v.sharding == parallel.batch_sharding(mesh)
        assert sorted(s.device.id for s in v.addressable_shards) == list(range(8))
        assert all(s.data.shape == (B // 8, SEQ_LEN) for s in v.addressable_shards)
        np.testing.assert_array_equal(np.asarray(v), local[k])


def test_2d_mesh_splits_rows_over_data_only():
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(AxisType.Auto, AxisType.Auto))
    b = next(_pipeline(mesh=mesh, global_batch_size=4))  # 4 rows: divisible by the data axis only
    v = b["inputs"]
    assert v.sharding == parallel.batch_sharding(mesh) and v.sharding.spec[0] in ("data", ("data",))
    for s in v.addressable_shards:
        assert s.data.shape == (1, SEQ_LEN)
        np.testing.assert_array_equal(np.asarray(s.data), np.asarray(v)[s.index])


def test_worker_processes_give_the_same_kind_of_batches():
    it = _pipeline(worker_count=2)
    try:
        seen = [i for b in _take(it, 2) for i in _check_rows(b, packing=True, mask_prompt=True)]
    finally:
        it.close()
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("kw, field", [
    (dict(global_batch_size=12), "global_batch_size"),  # 8 devices
    (dict(global_batch_size=0), "global_batch_size"),
    (dict(seq_len=1), "seq_len"),
    (dict(num_epochs=0), "num_epochs"),
    (dict(worker_count=-1), "worker_count"),
    (dict(packing_bins=0), "packing_bins"),
])
def test_bad_arguments(kw, field):
    with pytest.raises(ValueError, match=field):
        _pipeline(**kw)


def test_bad_source_and_process_count(monkeypatch):
    with pytest.raises(ValueError, match="source"):
        pipeline.batches([], seq_len=SEQ_LEN, global_batch_size=B, packing=True, mask_prompt=False, seed=0)
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    with pytest.raises(ValueError, match=r"global_batch_size.*process count \(3\)"):
        _pipeline()


def test_each_host_reads_its_own_slice(monkeypatch):
    """Two processes (simulated): each reads a disjoint half of the records, together all of them."""
    seen = []
    for index in range(2):
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        it = _pipeline(packing=False, mask_prompt=False, num_epochs=1, global_batch_size=16)
        local = [it.next_local() for _ in range(len(SOURCE) // 2 // 8)]
        assert all(b["inputs"].shape == (8, SEQ_LEN) for b in local)  # half of the global batch per host
        seen.append({i for b in local for i in _check_rows(b, packing=False, mask_prompt=False)})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(len(SOURCE)))
