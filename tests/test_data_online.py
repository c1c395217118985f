"""The online source against a plain-numpy reference built from the same traces.

The reference samples the same global problem indices with ``search.countdown.generate`` (same
key), turns each trace into ``batch.example`` and packs next-fit in numpy, per device shard.
Compiling the generator dominates the run time, so the iterators are module fixtures and share
one small spec and seq_len (later iterators with the same arguments reuse the compiled step).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sos_jax import parallel
from sos_jax.data import batch as batch_lib
from sos_jax.data import online
from sos_jax.envs import countdown as env
from sos_jax.search import countdown as search
from sos_jax.tokenizers import countdown as tok

SPEC = env.CountdownSpec(num_count=3, num_min=1, num_max=20, target_min=10, target_max=30)
TARGETS = env.split_targets(SPEC, "seen")
SEQ_LEN = 128
B = 16
T_PACKED = 32  # 4 traces per device for 2 rows of 128 tokens: some are dropped
SEED = 7
REF_PROBLEMS = 64  # indices [0, 64): packed steps 0-1, padded steps 0-3


def make(**kw):
    args = dict(strategy="sos", seq_len=SEQ_LEN, global_batch_size=B, packing=True, mask_prompt=True, seed=SEED,
                traces_per_step=T_PACKED)
    args.update(kw)
    return online.online_batches(SPEC, TARGETS, **args)


def host(batch):
    return {k: np.asarray(v) for k, v in batch.items()}


@pytest.fixture(scope="module")
def ref_traces():
    """Token lists of problems [0, REF_PROBLEMS) made by the generator directly, one jitted call."""
    gen = jax.jit(functools.partial(search.generate, spec=SPEC, strategy="sos", max_len=SEQ_LEN))
    _, found, traces = gen(jax.random.key(SEED), jnp.arange(REF_PROBLEMS, dtype=jnp.int32),
                           jnp.asarray(TARGETS))
    assert bool(found.all())
    tokens, length = np.asarray(traces.tokens), np.asarray(traces.length)
    return {"tokens": [tokens[i, : length[i]] for i in range(REF_PROBLEMS)],
            "truncated": np.asarray(traces.truncated)}


def ref_pack(traces, rows, seq_len, *, packing, mask_prompt, first_fit=False):
    """Numpy reference: ``batch.example`` per trace, next-fit / first-fit (or one per row) into ``rows`` rows."""
    out = {k: np.zeros((rows, seq_len), batch_lib.BATCH_DTYPES[k]) for k in batch_lib.BATCH_KEYS}
    used, segments = [0] * rows, [0] * rows
    current, packed = 0, 0
    for i, trace in enumerate(traces):
        ex = batch_lib.example(trace, seq_len=seq_len, mask_prompt=mask_prompt)
        n = len(ex["inputs"])
        if not packing:
            row = i
        elif first_fit:
            row = next((r for r in range(rows) if used[r] + n <= seq_len), rows)
        else:
            if current < rows and used[current] + n > seq_len:
                current += 1
            row = current
        if row >= rows:
            continue
        offset = used[row]
        for k in ("inputs", "targets", "weights"):
            out[k][row, offset: offset + n] = ex[k]
        out["segment_ids"][row, offset: offset + n] = segments[row] + 1
        out["positions"][row, offset: offset + n] = np.arange(n)
        used[row] += n
        segments[row] += 1
        packed += 1
    return out, packed


def ref_batch(ref_traces, step, *, traces_per_step, shards, packing, mask_prompt, first_fit=True):
    """The reference global batch of a step: each shard packs its own consecutive indices (first-fit,
    the online source's default)."""
    per_shard, rows = traces_per_step // shards, B // shards
    parts = [ref_pack(ref_traces["tokens"][step * traces_per_step + d * per_shard:][:per_shard], rows, SEQ_LEN,
                      packing=packing, mask_prompt=mask_prompt, first_fit=first_fit) for d in range(shards)]
    batch = {k: np.concatenate([p[0][k] for p in parts]) for k in batch_lib.BATCH_KEYS}
    return batch, sum(p[1] for p in parts)


def assert_batch_equal(got, want):
    for k in batch_lib.BATCH_KEYS:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.fixture(scope="module")
def packed():
    """Packing, prompt masked, 8 devices: the iterator and its first three batches."""
    it = make()
    batches, stats = [], []
    for _ in range(3):
        batches.append(host(next(it)))
        stats.append(it.stats())
    return it, batches, stats


@pytest.fixture(scope="module")
def padded():
    """Padding (one trace per row), prompt not masked, 8 devices."""
    it = make(packing=False, mask_prompt=False, traces_per_step=None)
    return it, [host(next(it)) for _ in range(2)]


# ------------------------------------------------------------------------------------------------
# pack_traces alone, on synthetic traces (all four modes)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["next_fit", "first_fit", "pad"])
@pytest.mark.parametrize("mask_prompt", [True, False])
def test_pack_traces_matches_numpy(mode, mask_prompt):
    packing, first_fit = mode != "pad", mode == "first_fit"
    rng = np.random.default_rng(0)
    rows, seq_len, width = 4, 32, 40
    # Short, empty (BOS, EOS) and cut traces, a row filled exactly; trace 2 is skipped mid-row.
    lengths = np.array([3, 9, 15, 9, 17, 0, 40, 5, 9, 15, 32, 3] if packing else [3, 40, 15, 0])
    num = len(lengths)
    tokens = rng.integers(tok.DIGIT0, tok.VOCAB_SIZE, size=(num, width)).astype(np.int32)
    tokens[tokens == tok.NEWLINE] = tok.DIGIT0
    for i, n in enumerate(lengths):
        if n > 4:
            tokens[i, rng.integers(1, n - 1)] = tok.NEWLINE  # the prompt ends here
        tokens[i, n:] = tok.PAD
    keep = np.ones(num, bool)
    keep[2] = False  # e.g. a problem with no solvable numbers: skipped, takes no room
    fn = jax.jit(functools.partial(online.pack_traces, rows=rows, seq_len=seq_len, packing=packing,
                                   first_fit=first_fit, mask_prompt=mask_prompt))
    got, packed_T = fn(jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(keep))
    kept = [tokens[i, : lengths[i]] for i in range(num) if keep[i]]
    if packing:
        want, count = ref_pack(kept, rows, seq_len, packing=True, first_fit=first_fit, mask_prompt=mask_prompt)
    else:  # the skipped trace leaves its row empty
        want, _ = ref_pack([tokens[i, : lengths[i]] for i in range(num)], rows, seq_len, packing=False,
                           mask_prompt=mask_prompt)
        for k in want:
            want[k][~keep] = 0
        count = int(keep.sum())
    assert_batch_equal(host(got), want)
    assert int(np.asarray(packed_T).sum()) == count
    assert not np.asarray(packed_T)[~keep].any()
    if packing:
        assert count < int(keep.sum()), "the synthetic traces should overflow the rows (some dropped)"
        other, _ = ref_pack(kept, rows, seq_len, packing=True, first_fit=not first_fit, mask_prompt=mask_prompt)
        assert not np.array_equal(other["inputs"], want["inputs"]), "next-fit and first-fit should differ here"


# ------------------------------------------------------------------------------------------------
# The generator's batches against the reference
# ------------------------------------------------------------------------------------------------


def test_packed_batches_match_reference(packed, ref_traces):
    it, batches, stats = packed
    for step in (0, 1):
        want, count = ref_batch(ref_traces, step, traces_per_step=T_PACKED, shards=8, packing=True,
                                mask_prompt=True)
        assert_batch_equal(batches[step], want)
        s = stats[step]
        assert s["step"] == step and s["traces"] == T_PACKED and s["packed"] == count
        assert s["packed"] + s["dropped"] + s["not_found"] == T_PACKED
        assert s["tokens"] == int((want["segment_ids"] > 0).sum())
        assert s["loss_tokens"] == int((want["weights"] > 0).sum())
        assert s["fill_rate"] == s["tokens"] / (B * SEQ_LEN)
    assert min(s["dropped"] for s in stats) > 0, "T_PACKED should over-supply the rows"
    # Masking the prompt really removed weight, on top of the padding.
    assert all(s["loss_tokens"] < s["tokens"] for s in stats)


def test_padded_batches_match_reference(padded, ref_traces):
    it, batches = padded
    assert it.traces_per_step == B
    for step in (0, 1):
        want, count = ref_batch(ref_traces, step, traces_per_step=B, shards=8, packing=False, mask_prompt=False)
        assert count == B
        assert_batch_equal(batches[step], want)
    assert it.stats()["packed"] == B


def test_segments_are_whole_traces(packed, ref_traces):
    _, batches, stats = packed
    b = batches[0]
    seen, cut = 0, 0
    for r in range(B):
        for s in range(1, b["segment_ids"][r].max() + 1):
            cols = np.flatnonzero(b["segment_ids"][r] == s)
            assert (np.diff(cols) == 1).all(), "a segment is contiguous"
            np.testing.assert_array_equal(b["positions"][r, cols], np.arange(len(cols)))
            inputs, targets = b["inputs"][r, cols], b["targets"][r, cols]
            assert inputs[0] == tok.BOS
            np.testing.assert_array_equal(inputs[1:], targets[:-1])
            assert tok.decode(inputs[1:]).startswith("Current State: ")
            if targets[-1] == tok.EOS:
                assert tok.EOS not in targets[:-1] and len(cols) <= SEQ_LEN
            else:  # no EOS: cut at seq_len
                assert len(cols) == SEQ_LEN
                cut += 1
            seen += 1
    assert seen == stats[0]["packed"] and cut == stats[0]["truncated"]
    assert 0 < cut < seen, "this setting should pack cut and uncut traces"
    padding = b["segment_ids"] == 0
    assert padding.any()
    for k in batch_lib.BATCH_KEYS:
        assert not b[k][padding].any(), f"{k} must be 0 on padding"


# ------------------------------------------------------------------------------------------------
# Determinism and resuming
# ------------------------------------------------------------------------------------------------


def test_steps_differ_and_seeds_repeat(packed):
    _, batches, _ = packed
    assert not np.array_equal(batches[0]["inputs"], batches[1]["inputs"])
    assert_batch_equal(host(next(make())), batches[0])
    assert not np.array_equal(host(next(make(seed=SEED + 1)))["inputs"], batches[0]["inputs"])


def test_resume_from_start_step_and_state(packed):
    _, batches, _ = packed
    it = make(start_step=2)
    assert it.step == 2 and it.compile_s < 1.0, "same arguments: the compiled step is reused"
    assert_batch_equal(host(next(it)), batches[2])
    assert it.get_state() == {"step": 3}
    it.set_state({"step": 1})
    assert_batch_equal(host(next(it)), batches[1])
    assert_batch_equal(host(it.batch_at(0)), batches[0])
    assert it.step == 2, "batch_at does not move the iterator"


def test_orbax_save_and_load(packed, tmp_path):
    from orbax.checkpoint import v1 as ocp

    _, batches, _ = packed
    it = make()
    next(it)
    ocp.save_checkpointables(tmp_path / "ckpt", {"data": it})
    assert it.get_state() == {"step": 1}
    fresh = make()
    ocp.load_checkpointables(tmp_path / "ckpt", {"data": fresh})
    assert fresh.step == 1
    assert_batch_equal(host(next(fresh)), batches[1])
    assert_batch_equal(host(next(fresh)), batches[2])


def test_load_rejects_a_bad_state_file(packed, tmp_path):
    import asyncio

    from etils import epath

    it, _, _ = packed
    (tmp_path / online.STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=online.STATE_FILE):
        asyncio.run(it.load(epath.Path(tmp_path)))
    with pytest.raises(ValueError, match="step"):
        it.set_state({"step": -1})


# ------------------------------------------------------------------------------------------------
# Sharding
# ------------------------------------------------------------------------------------------------


def test_outputs_are_sharded_over_the_batch_axes(packed):
    it, _, _ = packed
    assert jax.device_count() == 8
    batch = it.batch_at(0)
    want = parallel.batch_sharding(it.mesh)
    for k, v in batch.items():
        assert v.shape == (B, SEQ_LEN) and v.sharding.is_equivalent_to(want, 2), k
        assert len(v.addressable_shards) == 8 and v.addressable_shards[0].data.shape == (B // 8, SEQ_LEN)


def test_padded_rows_do_not_depend_on_the_device_count(padded):
    _, batches = padded
    one = make(packing=False, mask_prompt=False, traces_per_step=None, mesh=parallel.data_mesh(jax.devices()[:1]),
               start_step=1)
    assert_batch_equal(host(next(one)), batches[1])


def test_packed_rows_depend_on_the_device_count(ref_traces, packed):
    # Documented: each device packs its own indices. The same step packed as one shard differs.
    _, batches, _ = packed
    one_shard, _ = ref_batch(ref_traces, 0, traces_per_step=T_PACKED, shards=1, packing=True, mask_prompt=True)
    assert not np.array_equal(one_shard["inputs"], batches[0]["inputs"])


# ------------------------------------------------------------------------------------------------
# Bad arguments
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, field", [
    (dict(global_batch_size=12), "global_batch_size=12"),
    (dict(global_batch_size=8, packing=False, traces_per_step=None), "global_batch_size=8"),  # 1 per device: no pair
    (dict(traces_per_step=24), "traces_per_step=24"),  # 3 per device: not whole pairs
    (dict(packing=False, traces_per_step=32), "traces_per_step=32"),
    (dict(seq_len=16), "seq_len=16"),
    (dict(strategy="astar"), "strategy='astar'"),
    (dict(seed=-1), "seed=-1"),
    (dict(seed=2**31), "seed=2147483648"),
    (dict(start_step=-3), "start_step=-3"),
    (dict(start_step=2**31 // T_PACKED), "start_step="),
    (dict(packing="yes"), "packing='yes'"),
    (dict(traces_per_step=32, mix=search.Mix(dfs=1, bfs=2)), "traces_per_step=32: must be a multiple of 3 x 8"),
    (dict(mix=search.Mix(beams=(7,))), "beams"),
])
def test_bad_arguments_raise(kw, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(")) as e:
        make(**kw)
    assert "\n" not in str(e.value)


def test_bad_spec_and_targets_raise():
    with pytest.raises(ValueError, match="num_count=6"):
        online.online_batches(env.CountdownSpec(num_count=6), TARGETS, strategy="sos", seq_len=128,
                              global_batch_size=16, packing=True, mask_prompt=False, seed=0)
    with pytest.raises(ValueError, match="targets"):
        online.online_batches(SPEC, [], strategy="sos", seq_len=128, global_batch_size=16, packing=True,
                              mask_prompt=False, seed=0)
    with pytest.raises(ValueError, match="targets"):
        online.online_batches(SPEC, [5, 99], strategy="sos", seq_len=128, global_batch_size=16, packing=True,
                              mask_prompt=False, seed=0)


def test_default_traces_per_step():
    # Padding: one per row. Packing: even per device, enough for the expected example length.
    assert online.default_traces_per_step(SPEC, "sos", seq_len=4096, global_batch_size=16, packing=False,
                                          num_shards=8) == 16
    spec4 = env.CountdownSpec()
    expected = online.expected_example_length(spec4, "sos", 4096)
    assert 1000 < expected < 4096
    t = online.default_traces_per_step(spec4, "sos", seq_len=4096, global_batch_size=16, packing=True,
                                       num_shards=8)
    assert t % 16 == 0 and t * expected >= 16 * 4096
    assert online.expected_example_length(spec4, "ot", 4096) < 200
    t3 = online.default_traces_per_step(spec4, "sos", seq_len=4096, global_batch_size=16, packing=True,
                                        num_shards=8, block=3)
    assert t3 % 24 == 0 and t3 * expected >= 16 * 4096
