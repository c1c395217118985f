"""On-device Countdown trace writers against the golden records and the plain-Python oracle."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from sos_jax import parallel
from sos_jax.envs import countdown as env
from sos_jax.search import countdown as cd
from sos_jax.search import countdown_bfs
from sos_jax.search import countdown_python as ref
from sos_jax.search import countdown_verify as verify
from sos_jax.envs.countdown import check_trace
from sos_jax.tokenizers import countdown as tok

RECORDS = [json.loads(line) for line in (Path(__file__).parent / "data" / "countdown_examples.jsonl").open()]
SPEC = env.CountdownSpec()
MAX_LEN = 2048
OPS = {"+": 0, "*": 1, "-": 2, "/": 3}


def _texts(traces):
    return tok.decode_batch(traces.tokens, traces.length)


def test_replay_reproduces_every_golden_trace():
    texts = cd.replay(RECORDS)
    wrong = [r["id"] for r, text in zip(RECORDS, texts) if text != r["trace"]]
    assert wrong == [], f"records whose replayed trace differs: {wrong}"


def test_replay_rejects_bad_records():
    bfs = next(r for r in RECORDS if r["strategy"] == "bfs")
    with pytest.raises(ValueError, match="beam_size"):
        cd.replay([dict(bfs, beam_size=9)])
    with pytest.raises(ValueError, match="permutation"):
        cd.replay([dict(bfs, bfs_shuffle_perms=[[0, 0]])])
    with pytest.raises(ValueError, match="strategy"):
        cd.replay([dict(bfs, strategy="astar")])


def _solution_fields(solution):
    fields = [re.fullmatch(r"(\d+)([+*/-])(\d+)=(\d+)", op).groups() for op in solution]
    return [[int(f[0]) for f in fields], [OPS[f[1]] for f in fields], [int(f[2]) for f in fields],
            [int(f[3]) for f in fields]]


def test_optimal_path_matches_golden_and_fixes_duplicate_bug():
    problems = {r["problem_id"]: r for r in RECORDS}.values()
    fields = [_solution_fields(r["solution"]) for r in problems]
    traces = cd.ot_traces(
        jnp.asarray([r["nums"] for r in problems]), jnp.asarray([r["target"] for r in problems]),
        *(jnp.asarray([f[i] for f in fields]) for i in range(4)), max_len=512)
    assert bool(traces.solved.all())
    for record, text in zip(problems, _texts(traces)):
        assert text == ref.ot_trace(record["nums"], record["target"], record["solution"])
        if len(set(record["nums"])) == len(record["nums"]):
            assert text == record["optimal_path"]
        else:  # the original deleted both copies of a repeated number
            assert text != record["optimal_path"]


@pytest.fixture(scope="module")
def problems():
    targets = jnp.asarray(env.split_targets(SPEC, "all"))
    sample = jax.jit(env.sample_problems, static_argnames=("spec",))
    probs, found = sample(jax.random.key(7), jnp.arange(96), spec=SPEC, targets_T=targets)
    assert bool(found.all())
    return probs


def test_sampled_problems_are_solvable_and_in_range(problems):
    nums, targets = np.asarray(problems.nums), np.asarray(problems.target)
    assert nums.min() >= SPEC.num_min and nums.max() <= SPEC.num_max
    assert targets.min() >= SPEC.target_min and targets.max() <= SPEC.target_max
    for row, target in zip(nums.tolist(), targets.tolist()):
        assert ref.solve(row, target) is not None


def test_sampling_does_not_depend_on_batching():
    targets = jnp.asarray(env.split_targets(SPEC, "seen"))
    sample = jax.jit(env.sample_problems, static_argnames=("spec",))
    whole, _ = sample(jax.random.key(3), jnp.arange(40), spec=SPEC, targets_T=targets)
    first, _ = sample(jax.random.key(3), jnp.arange(24), spec=SPEC, targets_T=targets)
    second, _ = sample(jax.random.key(3), jnp.arange(24, 40), spec=SPEC, targets_T=targets)
    np.testing.assert_array_equal(whole.nums, np.concatenate([first.nums, second.nums]))
    np.testing.assert_array_equal(whole.target, np.concatenate([first.target, second.target]))
    assert set(np.asarray(whole.target).tolist()) <= set(np.asarray(targets).tolist())


def test_held_out_targets_reproduce_the_reference_split():
    assert env.held_out_targets(4) == [14, 39, 41, 57, 62, 81, 87, 89, 96]
    unseen = env.split_targets(SPEC, "unseen")
    seen = env.split_targets(SPEC, "seen")
    assert len(seen) == 82 and not set(seen) & set(unseen)


@pytest.mark.parametrize("field,value", [("num_count", 7), ("num_count", 2), ("target_min", 1), ("num_max", 1000)])
def test_spec_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        env.CountdownSpec(**{field: value}).validate()


def test_dfs_matches_python_oracle(problems):
    heuristic = jnp.arange(problems.target.shape[0]) % 2
    traces = cd.dfs_traces(problems.nums, problems.target, heuristic, problems.target, spec=SPEC, max_len=MAX_LEN)
    for i, text in enumerate(_texts(traces)):
        nums, target = np.asarray(problems.nums[i]).tolist(), int(problems.target[i])
        full = ref.dfs_trace(nums, target, ("sum", "mult")[int(heuristic[i])], target)
        assert int(traces.total[i]) == len(tok.encode(full))
        assert bool(traces.solved[i]) == ("Goal Reached" in full)
        if bool(traces.truncated[i]):
            assert full.startswith(text) and int(traces.length[i]) <= MAX_LEN
        else:
            assert text == full


class _ShuffleFromPositions:
    """A ``random.Random`` stand-in whose ``shuffle`` applies recorded on-device print positions."""

    def __init__(self, positions):
        self.positions, self.calls = positions, 0

    def shuffle(self, items):
        pos = self.positions[self.calls][: len(items)]
        ranks = [sum(p < q for p in pos) for q in pos]
        items[:] = [items[ranks.index(k)] for k in range(len(items))]
        self.calls += 1


def test_bfs_with_device_shuffles_matches_python_oracle(problems):
    batch = problems.target.shape[0]
    heuristic = jnp.arange(batch) % 2
    beam = 1 + jnp.arange(batch) % 5
    pops = cd.max_pops(SPEC.num_count)
    positions = jax.vmap(lambda k: countdown_bfs.random_positions(k, pops))(jax.random.split(jax.random.key(1), batch))
    traces = cd.bfs_traces(problems.nums, problems.target, heuristic, beam, positions, spec=SPEC, max_len=MAX_LEN)
    for i, text in enumerate(_texts(traces)):
        nums, target = np.asarray(problems.nums[i]).tolist(), int(problems.target[i])
        full, _ = ref.bfs_trace(nums, target, ("sum", "mult")[int(heuristic[i])], int(beam[i]),
                                rng=_ShuffleFromPositions(np.asarray(positions[i]).tolist()))
        assert bool(traces.solved[i]) == ("Goal Reached" in full)
        assert int(traces.total[i]) == len(tok.encode(full))
        assert full.startswith(text) and (text == full) != bool(traces.truncated[i])


def test_optimal_traces_from_device_solver(problems):
    traces = cd.optimal_traces(problems.nums, problems.target, max_len=512)
    assert bool(traces.solved.all()) and not bool(traces.truncated.any())
    for i, text in enumerate(_texts(traces)):
        nums, target = np.asarray(problems.nums[i]).tolist(), int(problems.target[i])
        assert text == ref.ot_trace(nums, target, ref.solve(nums, target))


def test_sos_mix_tokens_are_canonical_and_flags_consistent(problems):
    traces = cd.sos_mix(jax.random.key(0), problems, spec=SPEC, max_len=MAX_LEN)
    strategy = np.asarray(traces.strategy)
    assert abs(int((strategy == cd.DFS).sum()) - int((strategy == cd.BFS).sum())) <= 1
    beams = np.asarray(traces.beam)[strategy == cd.BFS]
    assert beams.min() >= 1 and beams.max() <= 5
    tokens, length = np.asarray(traces.tokens), np.asarray(traces.length)
    for row, n in zip(tokens, length):
        assert tok.encode(tok.decode(row[:n])) == row[:n].tolist()
        assert (row[n:] == tok.PAD).all()
    np.testing.assert_array_equal(np.asarray(traces.truncated), np.asarray(traces.total) > length)


def test_truncated_rows_are_flagged_prefixes(problems):
    small = cd.dfs_traces(problems.nums, problems.target, jnp.zeros_like(problems.target), problems.target, spec=SPEC,
                          max_len=64)
    large = cd.dfs_traces(problems.nums, problems.target, jnp.zeros_like(problems.target), problems.target, spec=SPEC,
                          max_len=MAX_LEN)
    assert bool(small.truncated.any())
    np.testing.assert_array_equal(small.total, large.total)
    for i in range(problems.target.shape[0]):
        n = int(small.length[i])
        assert n <= 64 and (n == int(large.total[i])) != bool(small.truncated[i])
        np.testing.assert_array_equal(small.tokens[i, :n], large.tokens[i, :n])


def test_sos_mix_sharded_over_devices_equals_single_device(problems):
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = jax.device_put(problems, NamedSharding(mesh, PartitionSpec("data")))
    key = jax.random.key(5)
    on_mesh = cd.sos_mix(key, sharded, spec=SPEC, max_len=MAX_LEN)
    single = cd.sos_mix(key, jax.device_put(problems, jax.devices()[0]), spec=SPEC, max_len=MAX_LEN)
    for a, b in zip(jax.tree.leaves(on_mesh), jax.tree.leaves(single)):
        np.testing.assert_array_equal(a, b)


def test_both_verifiers_agree_with_the_writers_on_generated_traces(problems):
    batch = problems.target.shape[0]
    counts = jnp.full((batch,), SPEC.num_count, jnp.int32)
    for traces in (cd.sos_mix(jax.random.key(2), problems, spec=SPEC, max_len=MAX_LEN),
                   cd.optimal_traces(problems.nums, problems.target, max_len=MAX_LEN)):
        device = verify.verify_token_batch(traces.tokens, traces.length, problems.nums, counts, problems.target)
        complete = ~np.asarray(traces.truncated)
        assert complete.sum() > batch // 2
        np.testing.assert_array_equal(np.asarray(device["solved"])[complete], np.asarray(traces.solved)[complete])
        for i, text in enumerate(_texts(traces)):
            verdict = check_trace(text, np.asarray(problems.nums[i]).tolist(), int(problems.target[i]))
            assert verdict.solved == bool(device["solved"][i])
            if complete[i]:
                assert verdict.solved == bool(traces.solved[i])
                assert verdict.lax_solved or not verdict.solved


def _check_against_oracle(spec, batch, max_len, with_dfs=True):
    targets = jnp.asarray(env.split_targets(spec, "all"))
    sample = jax.jit(env.sample_problems, static_argnames=("spec",))
    probs, found = sample(jax.random.key(11), jnp.arange(batch), spec=spec, targets_T=targets)
    assert bool(found.all())
    heuristic = jnp.arange(batch) % 2
    beam = 1 + jnp.arange(batch) % 5
    positions = jax.vmap(lambda k: countdown_bfs.random_positions(k, cd.max_pops(spec.num_count)))(
        jax.random.split(jax.random.key(4), batch))
    bfs_traces = cd.bfs_traces(probs.nums, probs.target, heuristic, beam, positions, spec=spec, max_len=max_len)
    ot_traces = cd.optimal_traces(probs.nums, probs.target, max_len=max_len)
    dfs_traces = (cd.dfs_traces(probs.nums, probs.target, heuristic, probs.target, spec=spec, max_len=max_len)
                  if with_dfs else None)
    for i in range(batch):
        nums, target = np.asarray(probs.nums[i]).tolist(), int(probs.target[i])
        name = ("sum", "mult")[int(heuristic[i])]
        expected = {"ot": ref.ot_trace(nums, target, ref.solve(nums, target)),
                    "bfs": ref.bfs_trace(nums, target, name, int(beam[i]),
                                         rng=_ShuffleFromPositions(np.asarray(positions[i]).tolist()))[0]}
        got = {"ot": ot_traces, "bfs": bfs_traces}
        if with_dfs:
            expected["dfs"], got["dfs"] = ref.dfs_trace(nums, target, name, target), dfs_traces
        for kind, traces in got.items():
            text = tok.decode(np.asarray(traces.tokens[i, : int(traces.length[i])]))
            assert expected[kind].startswith(text), (kind, i)
            assert (text == expected[kind]) != bool(traces.truncated[i]), (kind, i)


@pytest.mark.slow
@pytest.mark.parametrize("num_count,num_max", [(3, 99), (5, 60)])
def test_other_number_counts_match_oracle(num_count, num_max):
    _check_against_oracle(env.CountdownSpec(num_count=num_count, num_max=num_max).validate(), 12, 1024)


@pytest.mark.slow
def test_six_numbers_bfs_and_ot_match_oracle_and_dfs_refuses():
    spec = env.CountdownSpec(num_count=6, num_max=30).validate()
    _check_against_oracle(spec, 8, 1024, with_dfs=False)
    nums = jnp.ones((2, 6), jnp.int32)
    with pytest.raises(ValueError, match="num_count=6"):
        cd.dfs_traces(nums, jnp.full((2,), 10), jnp.zeros((2,), jnp.int32), jnp.full((2,), 10), spec=spec, max_len=64)


@pytest.mark.slow
def test_generate_is_the_same_on_one_device_and_sharded_over_eight():
    targets = jnp.asarray(env.split_targets(SPEC, "seen"))
    fn = lambda key, t, idx: cd.generate(key, idx, t, spec=SPEC, strategy="sos", max_len=512)
    indices = jnp.arange(100, 164)
    mesh = parallel.data_mesh()
    assert mesh.size == 8
    sharded = parallel.shard_rows(fn, mesh, n_replicated=2)(
        jax.random.key(9), targets, jax.device_put(indices, parallel.row_sharding(mesh)))
    single = parallel.shard_rows(fn, parallel.data_mesh(jax.devices()[:1]), n_replicated=2)(
        jax.random.key(9), targets, indices)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
        np.testing.assert_array_equal(a, b)


def test_device_solver_finds_the_golden_solutions():
    problems = list({r["problem_id"]: r for r in RECORDS}.values())
    traces = cd.optimal_traces(jnp.asarray([r["nums"] for r in problems]), jnp.asarray([r["target"] for r in problems]),
                               max_len=512)
    for record, text in zip(problems, _texts(traces)):
        assert text == ref.ot_trace(record["nums"], record["target"], record["solution"])


@pytest.mark.parametrize("mix", [cd.Mix(dfs=1, bfs=2, beams=(2, 4), heuristics=(cd.MULT,)),
                                 cd.Mix(dfs=1, bfs=0), cd.Mix(dfs=0, bfs=1, beams=(5,))])
def test_mix_choices_follow_the_mix(mix):
    """Every block of indices has exactly the mix's DFS rows; beams and heuristics come from its lists."""
    index = jnp.arange(96 * mix.block)
    is_dfs, heuristic, beam, _ = cd.mix_choices(jax.random.key(3), index, 4, mix)
    per_block = np.asarray(is_dfs).reshape(-1, mix.block).sum(axis=1)
    assert (per_block == mix.dfs_per_block).all()
    assert set(np.asarray(beam).tolist()) <= set(mix.beams) and set(np.asarray(heuristic).tolist()) == set(mix.heuristics)
    if 0 < mix.dfs_per_block < mix.block:  # which row of a block is DFS varies from block to block
        assert len({tuple(row) for row in np.asarray(is_dfs).reshape(-1, mix.block).tolist()}) > 1


def test_sos_mix_with_a_custom_mix(problems):
    mix = cd.Mix(dfs=1, bfs=2, beams=(3,), heuristics=(cd.SUM,))
    traces = cd.sos_mix(jax.random.key(0), problems, spec=SPEC, max_len=512, mix=mix)
    strategy = np.asarray(traces.strategy)
    assert (strategy == cd.DFS).sum() == 32 and (strategy == cd.BFS).sum() == 64
    assert set(np.asarray(traces.beam)[strategy == cd.BFS].tolist()) == {3}
    assert set(np.asarray(traces.heuristic).tolist()) == {cd.SUM}
    with pytest.raises(ValueError, match="whole blocks of 3"):
        cd.sos_mix(jax.random.key(0), jax.tree.map(lambda a: a[:94], problems), spec=SPEC, max_len=512, mix=mix)


@pytest.mark.parametrize("kwargs, field", [(dict(dfs=0, bfs=0), "dfs"), (dict(beams=(0,)), "beams"),
                                           (dict(beams=()), "beams"), (dict(heuristics=(2,)), "heuristics")])
def test_mix_validate_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        cd.Mix(**kwargs).validate()
