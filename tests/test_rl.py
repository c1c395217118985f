"""RL rollouts and objectives: the joined sequences, on-device rewards against the text verifier,
the policy's log-probabilities against the sampler's, GRPO on equal rewards, and the losses'
wiring into the trainer."""

import dataclasses
import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sos_jax.envs.countdown_check import NO_EXPLORE, NO_GOAL, NO_STATE, REASONS, check_trace
from sos_jax.jobs import evaluate
from sos_jax.models import sampler, sharding
from sos_jax.models.gpt import PRESETS
from sos_jax.rl import apa, grpo, ppo, rollout, trainer
from sos_jax.rl.policy import ValueModel, sequence_logprobs
from sos_jax.tokenizers import countdown as tok

GOLDEN = [json.loads(line) for line in (Path(__file__).parent / "data" / "countdown_examples.jsonl").open()][:16]


def _traces():
    """The golden records' problems (all with 4 numbers) and their traces as token ids."""
    nums = np.asarray([r["nums"] for r in GOLDEN], np.int32)
    target = np.asarray([r["target"] for r in GOLDEN], np.int32)
    return nums, target, [tok.encode(r["trace"]) for r in GOLDEN]


def test_join_puts_each_completion_right_after_its_prompt():
    prompts = jnp.asarray([[1, 5, 6, 0], [1, 7, 0, 0]])
    new = jnp.asarray([[8, 9, 0], [10, 11, 12]])
    out = rollout.join(prompts, jnp.asarray([3, 2]), new, jnp.asarray([2, 3]))
    assert out.tolist() == [[1, 5, 6, 8, 9, 0, 0], [1, 7, 10, 11, 12, 0, 0]]


def test_rewards_on_device_match_the_text_verifier():
    """Generator traces (solved and not) and corrupted ones, split after the prompt line and joined
    back as a rollout is: the on-device verdict equals ``check_trace`` on the decoded text."""
    nums, target, tokens = _traces()
    prompts, prompt_lengths = evaluate.encode_prompts(nums, target)
    rows, expected, formatted = [], [], []
    for i, trace in enumerate(tokens):
        for variant in (trace, trace[:-3] + tok.encode("99 equal: Goal Reached\n")):
            rows.append(variant[prompt_lengths[i] - 1:])
            verdict = check_trace(tok.decode(variant), list(nums[i]), int(target[i]))
            expected.append(verdict.solved)
            formatted.append(verdict.reason not in (REASONS[NO_GOAL], REASONS[NO_STATE], REASONS[NO_EXPLORE]))
    width = max(len(r) for r in rows)
    new = np.zeros((len(rows), width), np.int32)
    for r, ids in enumerate(rows):
        new[r, :len(ids)] = ids
    rep = np.repeat(np.arange(len(target)), 2)
    joined = rollout.join(jnp.asarray(prompts[rep]), jnp.asarray(prompt_lengths[rep]), jnp.asarray(new),
                          jnp.asarray([len(r) for r in rows]))
    verdict = jax.vmap(rollout.countdown_verdict)(
        joined, jnp.asarray(prompt_lengths[rep] + [len(r) for r in rows]), jnp.asarray(nums[rep]),
        jnp.asarray(target[rep]))
    assert np.asarray(verdict["solved"]).tolist() == expected
    assert np.asarray(verdict["formatted"]).tolist() == formatted
    assert any(expected) and not all(expected)
    lengths = jnp.asarray([len(r) for r in rows])
    plain = rollout.rewards(verdict, lengths, 100, rollout.RewardParams())
    assert np.asarray(plain).tolist() == [float(e) for e in expected]
    shaped = rollout.rewards(verdict, lengths, 100, rollout.RewardParams(format_weight=0.5, length_penalty=0.1))
    np.testing.assert_allclose(shaped, plain + 0.5 * np.asarray(formatted) - 0.1 * np.asarray(lengths) / 100,
                               rtol=1e-6)
    assert any(formatted) and not all(formatted)  # unsolvable problems' traces end without a goal line


def _prompts(count=8):
    nums, target, _ = _traces()
    prompts, lengths = evaluate.encode_prompts(nums[:count], target[:count])
    return nums[:count], target[:count], prompts, lengths


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_on_8_devices_matches_sampler_and_forward_pass(temperature):
    """The rollout's rows are the sampler's (same key), its completion mask covers the generated
    tokens, and the policy's full forward pass gives the sampler's log-probabilities."""
    mesh = sharding.make_mesh((8, 1, 1))
    model = sharding.create_sharded_model(PRESETS["tiny"], mesh, 0)
    graphdef, state = nnx.split(model)
    nums, target, prompts, lengths = _prompts()
    params = sampler.SamplingParams(max_new_tokens=24, temperature=temperature, num_samples=2,
                                    stop_phrases=((tok.GOAL,),))
    rollouts = rollout.Rollouts(graphdef, state, params, rollout.RewardParams(), mesh=mesh, batch_size=8,
                                prompt_len=prompts.shape[1])
    out = jax.device_get(rollouts(state, prompts, lengths, nums, target, jax.random.key(1)))
    samples = sampler.as_dict(rollouts.sampler(state, prompts, lengths, jax.random.key(1)))
    rep = np.repeat(np.arange(8), 2)
    for r in range(16):
        p, n = lengths[rep[r]], samples["lengths"][r]
        assert out.tokens_RxL[r, :p].tolist() == prompts[rep[r], :p].tolist()
        assert out.tokens_RxL[r, p:p + n].tolist() == samples["tokens"][r, :n].tolist()
        assert (out.tokens_RxL[r, p + n:] == tok.PAD).all()
        assert np.flatnonzero(out.completion_RxL[r]).tolist() == list(range(p, p + n))
    assert out.reward_R.shape == (16,) and out.lengths_R.tolist() == samples["lengths"].tolist()
    with jax.set_mesh(mesh):
        logp, entropy = jax.jit(lambda t: sequence_logprobs(model, t, temperature))(out.tokens_RxL)
    mask = out.completion_RxL
    np.testing.assert_allclose(np.asarray(logp)[mask], out.logprobs_RxL[mask], atol=2e-4)
    assert (np.asarray(entropy)[mask] > 0).all()


def test_value_model_reads_the_state_before_each_token():
    """``values[t]`` depends on tokens ``< t`` only, and column 0 is 0."""
    model = ValueModel(PRESETS["tiny"], rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(3, 100, (2, 10)), jnp.int32)
    values = model(tokens)
    changed = model(tokens.at[:, 6].set(tokens[:, 6] % 90 + 5))
    assert values.shape == (2, 10) and (values[:, 0] == 0).all()
    np.testing.assert_allclose(values[:, :7], changed[:, :7], atol=1e-6)
    assert not np.allclose(values[:, 7:], changed[:, 7:])


def _batch(rewards, group=2, seed=0):
    """A prepared-batch stand-in: random sequences with a completion block per row."""
    rng = np.random.default_rng(seed)
    rows = len(rewards)
    tokens = rng.integers(3, 100, (rows, 12)).astype(np.int32)
    tokens[:, 4] = tok.NEWLINE  # the prompt line ends at column 4
    tokens[:, 8] = tok.NEWLINE  # the completion's first line ends at column 8
    completion = np.zeros((rows, 12), bool)
    completion[:, 5:11] = True
    logp = -rng.uniform(0.1, 2.0, (rows, 12)).astype(np.float32)
    return {"tokens_RxL": jnp.asarray(tokens), "completion_RxL": jnp.asarray(completion),
            "reward_R": jnp.asarray(rewards, jnp.float32), "old_logp_RxL": jnp.asarray(logp),
            "ref_logp_RxL": jnp.asarray(logp - 0.1), "old_values_RxL": jnp.asarray(rng.normal(size=(rows, 12)),
                                                                                  jnp.float32)}


def test_grpo_with_equal_rewards_in_every_group_has_no_policy_gradient():
    settings = types.SimpleNamespace(clip_eps=0.2, aggregation="token", kl_coef=0.0, kl_estimator="k3", scale=True,
                                     group_size=2)
    batch = grpo.targets(_batch([1.0, 1.0, 0.0, 0.0]), settings)
    assert (batch["advantages_R"] == 0).all()

    def objective(logp):
        return grpo.loss({"logp_RxL": logp}, batch, settings)[0]

    grads = jax.grad(objective)(batch["old_logp_RxL"] + 0.05)
    assert float(jnp.abs(grads).max()) == 0.0
    unequal = grpo.targets(_batch([1.0, 0.0, 0.0, 0.0]), settings)
    assert float(jnp.abs(jax.grad(lambda lp: grpo.loss({"logp_RxL": lp}, unequal, settings)[0])(
        unequal["old_logp_RxL"])).max()) > 0


def test_operation_level_ppo_uses_one_action_per_line():
    """Two completion lines: two actions; the line's log-ratio is the sum of its tokens' (the
    ratio, their product); the reward sits on the last line; returns = reward with gamma = lam = 1."""
    settings = types.SimpleNamespace(level="operation", gamma=1.0, lam=1.0, clip_eps=0.2, value_coef=1.0,
                                     value_clip=0.0, whiten=False)
    batch = ppo.targets(_batch([1.0, 0.0]), settings)
    assert batch["mask_RxA"].sum(axis=1).tolist() == [2, 2]
    np.testing.assert_allclose(batch["returns_RxA"][:, :2], [[1.0, 1.0], [0.0, 0.0]], atol=1e-6)
    values = batch["old_values_RxL"]
    np.testing.assert_allclose(batch["old_values_RxA"][:, :2], np.stack([values[:, 5], values[:, 9]], 1), rtol=1e-6)
    shift = jnp.zeros((2, 12)).at[:, 5:9].set(0.01).at[:, 9:11].set(-0.02)
    action_ids, num = ppo.actions(batch, "operation")
    logratio = ppo.per_action(shift, action_ids, num)
    np.testing.assert_allclose(np.exp(logratio[:, :2]), [[np.exp(0.04), np.exp(-0.04)]] * 2, rtol=1e-6)


def test_apa_loss_is_zero_at_the_reference_shifted_by_half_the_advantage():
    settings = types.SimpleNamespace(coef=0.5, gamma=1.0, lam=0.95, value_coef=0.0, whiten=False)
    batch = apa.targets(_batch([1.0, 0.0]), settings)
    action_ids, num = ppo.actions(batch, "token")
    adv_RxL = jnp.where(action_ids >= 0, jnp.take_along_axis(batch["advantages_RxA"], jnp.maximum(action_ids, 0),
                                                             axis=1), 0.0)
    at_target = batch["ref_logp_RxL"] + 0.5 * adv_RxL
    loss, _ = apa.loss({"logp_RxL": at_target, "values_RxL": batch["old_values_RxL"]}, batch, settings)
    assert float(loss) < 1e-10
    moved, _ = apa.loss({"logp_RxL": at_target + 0.1, "values_RxL": batch["old_values_RxL"]}, batch, settings)
    np.testing.assert_allclose(float(moved), 0.01, rtol=1e-4)


def test_trainer_update_on_8_devices_moves_the_policy_and_keeps_the_reference():
    """prepare + one update of PPO on a tiny model: the policy and value parameters change, the
    reference parameters (given to prepare) do not, and the metrics are finite."""
    import optax

    mesh = sharding.make_mesh((8, 1, 1))
    policy = sharding.create_sharded_model(PRESETS["tiny"], mesh, 0)
    graphdef, params = nnx.split(policy)
    reference = jax.tree.map(jnp.copy, params)
    value_graphdef, value = nnx.split(sharding.create_sharded_model(PRESETS["tiny"], mesh, 1, module=ValueModel))
    tx = optax.adam(1e-3)
    state = trainer.init_state(jax.tree.map(jnp.copy, params), value, tx, tx, 0, mesh)
    settings = types.SimpleNamespace(level="operation", gamma=1.0, lam=1.0, clip_eps=0.2, value_coef=1.0,
                                     value_clip=0.0, whiten=True)
    steps = trainer.make_trainer(ppo, settings, policy_graphdef=graphdef, value_graphdef=value_graphdef,
                                 tx_policy=tx, tx_value=tx, temperature=1.0, mesh=mesh)
    nums, target, prompts, lengths = _prompts()
    rollouts = rollout.Rollouts(graphdef, params, sampler.SamplingParams(max_new_tokens=16, temperature=1.0,
                                                                         num_samples=2), rollout.RewardParams(),
                                mesh=mesh, batch_size=8, prompt_len=prompts.shape[1])
    out = rollouts(state["params"], prompts, lengths, nums, target, jax.random.key(0))
    out = out.replace(reward_R=jnp.asarray(np.arange(16) % 3 == 0, jnp.float32))  # a reward signal to follow
    before = jax.device_get((state["params"], state["value"]))
    batch = steps.prepare(state, reference, out)
    state, metrics = steps.update(state, batch, jnp.arange(8))
    after = jax.device_get((state["params"], state["value"]))
    assert all(np.isfinite(float(v)) for v in jax.device_get(metrics).values())
    for old, new in zip(before, after):
        assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))
    for a, b in zip(jax.tree.leaves(jax.device_get(reference)), jax.tree.leaves(before[0])):
        np.testing.assert_array_equal(a, b)
    assert int(state["step"]) == 1


def test_grpo_runs_on_sudoku_with_the_replay_reward():
    """Sudoku rollouts (board prompts, ``END`` as EOS) judged by replay: the on-device verdict
    equals ``replay_text`` on golden and broken answers, and one GRPO update on a tiny model with
    the Sudoku vocabulary moves the policy."""
    import optax

    from sos_jax.data import sudoku_test
    from sos_jax.envs.sudoku_check import replay_text
    from sos_jax.search import sudoku as sudoku_search
    from sos_jax.tokenizers import sudoku as stok

    puzzles, solutions = (x[:8].astype(np.int32) for x in sudoku_test.load())
    written = sudoku_search.trace_batch(puzzles, techniques="full", max_tokens=4096)
    assert np.asarray(written.solved_B).all()
    sequences = jax.jit(jax.vmap(sudoku_search.sequences, in_axes=(0, 0, 0, None)), static_argnums=3)
    full, length, prompt = (np.asarray(x) for x in sequences(puzzles, written.direct_BxM, written.direct_length_B, 512))
    # Judge each answer whole, and cut after its first 30 fills (not solved, not closed by SOL_E).
    rows = np.concatenate([full, np.where(np.arange(512) < (prompt + 120)[:, None], full, stok.MASK)])
    lengths = np.concatenate([length, prompt + 120])
    verdict = jax.vmap(rollout.sudoku_verdict)(rows, lengths, np.tile(puzzles, (2, 1)), np.tile(solutions, (2, 1)))
    expected = [replay_text(stok.decode(r[:n]), p, s) for r, n, p, s in zip(rows, lengths, np.tile(puzzles, (2, 1)),
                                                                           np.tile(solutions, (2, 1)))]
    assert np.asarray(verdict["solved"]).tolist() == expected == [True] * 8 + [False] * 8
    assert np.asarray(verdict["formatted"]).tolist() == [True] * 8 + [False] * 8

    mesh = sharding.make_mesh((8, 1, 1))
    config = dataclasses.replace(PRESETS["tiny"], vocab_size=stok.VOCAB_SIZE, max_len=512)
    graphdef, params = nnx.split(sharding.create_sharded_model(config, mesh, 0))
    reference = jax.tree.map(jnp.copy, params)
    tx = optax.adam(1e-3)
    state = trainer.init_state(jax.tree.map(jnp.copy, params), {}, tx, tx, 0, mesh)
    settings = types.SimpleNamespace(clip_eps=0.2, aggregation="token", kl_coef=0.0, kl_estimator="k3", scale=True,
                                     group_size=2)
    steps = trainer.make_trainer(grpo, settings, policy_graphdef=graphdef, value_graphdef=None, tx_policy=tx,
                                 tx_value=tx, temperature=1.0, mesh=mesh)
    width = int(prompt.max())
    rollouts = rollout.Rollouts(graphdef, params, sampler.SamplingParams(max_new_tokens=24, temperature=1.0,
                                                                         num_samples=2, eos_id=stok.END),
                                rollout.RewardParams(), mesh=mesh, batch_size=8, prompt_len=width,
                                judge=rollout.sudoku_verdict)
    out = rollouts(state["params"], full[:, :width], prompt, puzzles, solutions, jax.random.key(0))
    host = jax.device_get(out)
    for r in range(16):  # the reward is the replay verdict of the row's own text
        text = stok.decode(host.tokens_RxL[r, : host.prompt_lengths_R[r] + host.lengths_R[r]])
        assert host.reward_R[r] == float(replay_text(text, puzzles[r // 2], solutions[r // 2]))
    out = out.replace(reward_R=jnp.asarray(np.arange(16) % 3 == 0, jnp.float32))  # a reward signal to follow
    batch = steps.prepare(state, reference, out)
    state, metrics = steps.update(state, batch, jnp.arange(16))
    assert all(np.isfinite(float(v)) for v in jax.device_get(metrics).values())
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(reference)),
                                                     jax.tree.leaves(jax.device_get(state["params"]))))
