"""The advantages and losses of sos_jax.rl.losses against hand-computed cases and plain-Python loops."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sos_jax.rl import losses
from sos_jax.tokenizers import countdown as tok

# Toy vocabulary of 6 ids for the action tests: only id 5 ends a line.
TOY_LINE_END_V = np.array([False, False, False, False, False, True])
# Row 0: a prompt token, then a completion of 6 tokens whose first token ends a line, then padding.
# Row 1: a prompt ending with a line end, then a completion of 3 tokens. Row 2: no completion.
TOY_TOKENS_RxL = np.array([[3, 5, 3, 4, 5, 5, 4, 0],
                           [4, 5, 3, 3, 5, 0, 0, 0],
                           [4, 4, 0, 0, 0, 0, 0, 0]])
TOY_COMPLETION_RxL = np.array([[0, 1, 1, 1, 1, 1, 1, 0],
                               [0, 0, 1, 1, 1, 0, 0, 0],
                               [0, 0, 0, 0, 0, 0, 0, 0]], bool)
TOY_TOKEN_IDS_RxL = [[-1, 0, 1, 2, 3, 4, 5, -1],
                     [-1, -1, 0, 1, 2, -1, -1, -1],
                     [-1] * 8]
TOY_OPERATION_IDS_RxL = [[-1, 0, 1, 1, 1, 2, 3, -1],
                         [-1, -1, 0, 0, 0, -1, -1, -1],
                         [-1] * 8]


def test_masked_mean():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, np.nan]])
    mask = np.array([[1, 1, 0], [1, 1, 0]], bool)
    assert float(losses.masked_mean(x, mask)) == pytest.approx((1 + 2 + 4 + 5) / 4)
    np.testing.assert_allclose(losses.masked_mean(x, mask, axis=1), [1.5, 4.5])
    np.testing.assert_allclose(losses.masked_mean(x, mask.astype(np.float32), axis=0), [2.5, 3.5, 0.0])
    assert float(losses.masked_mean(x, np.zeros_like(mask))) == 0.0


def test_whiten():
    x = np.array([[1.0, 3.0, 100.0], [5.0, 7.0, np.inf]])
    mask = np.array([[1, 1, 0], [1, 1, 0]], bool)
    out = np.asarray(losses.whiten(x, mask))
    std = math.sqrt(((1 - 4) ** 2 + (3 - 4) ** 2 + (5 - 4) ** 2 + (7 - 4) ** 2) / 4 + 1e-8)
    np.testing.assert_allclose(out, [[-3 / std, -1 / std, 0.0], [1 / std, 3 / std, 0.0]], rtol=1e-6)


def test_group_advantages_hand_values():
    adv = losses.group_advantages(jnp.array([0.0, 1.0, 0.0, 1.0]), group_size=2)
    np.testing.assert_allclose(adv, [-0.5 / (0.5 + 1e-6), 0.5 / (0.5 + 1e-6)] * 2, rtol=1e-6)
    np.testing.assert_allclose(losses.group_advantages(jnp.array([0.0, 1.0, 0.0, 1.0]), 4, scale=False),
                               [-0.5, 0.5, -0.5, 0.5])
    std = math.sqrt(0.25 * 0.75)  # population std of [0, 0, 0, 1]
    np.testing.assert_allclose(losses.group_advantages(jnp.array([0.0, 0.0, 0.0, 1.0]), 4),
                               [-0.25 / (std + 1e-6)] * 3 + [0.75 / (std + 1e-6)], rtol=1e-6)


def test_group_advantages_equal_groups_are_exactly_zero():
    rewards = jnp.array([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 1.0, 0.0, 0.3])
    adv = np.asarray(losses.group_advantages(rewards, group_size=3))
    assert (adv[:6] == 0.0).all()
    assert (np.asarray(losses.group_advantages(rewards, 3, scale=False))[:6] == 0.0).all()
    assert (adv[6:] != 0.0).all()


def test_group_advantages_rejects_a_partial_group():
    with pytest.raises(ValueError, match="groups"):
        losses.group_advantages(jnp.zeros(5), group_size=2)


def test_kl_estimate_hand_values():
    logp = np.array([-1.0, -2.0, -0.5])
    ref = np.array([-2.0, -1.0, -0.5])
    np.testing.assert_allclose(losses.kl_estimate(logp, ref, "k1"), [1.0, -1.0, 0.0])
    np.testing.assert_allclose(losses.kl_estimate(logp, ref, "k3"),
                               [math.exp(-1) + 1 - 1, math.exp(1) - 1 - 1, 0.0], rtol=1e-6, atol=1e-7)


def test_kl_k3_is_never_negative():
    rng = np.random.default_rng(0)
    logp = rng.normal(size=1000).astype(np.float32) * 3 - 2
    ref = rng.normal(size=1000).astype(np.float32) * 3 - 2
    near = np.nextafter(logp, np.float32(0))  # one float32 step apart: where exp(d) - d - 1 rounds below 0
    k3 = np.concatenate([np.asarray(losses.kl_estimate(logp, ref, "k3")),
                         np.asarray(losses.kl_estimate(logp, near, "k3")),
                         np.asarray(losses.kl_estimate(near, logp, "k3"))])
    assert (k3 >= 0).all()


def test_kl_estimate_rejects_unknown_kind():
    with pytest.raises(ValueError, match="k2"):
        losses.kl_estimate(jnp.zeros(2), jnp.zeros(2), "k2")


def _policy_case():
    """A 2x3 case with eps 0.2 whose last action of row 1 is padding (with a huge log-ratio)."""
    ratio = np.array([[1.5, 0.9, 0.5], [1.1, 0.7, 1.0]])
    logratio = np.log(ratio)
    logratio[1, 2] = 1e4
    adv = np.array([[1.0, -1.0, -1.0], [2.0, 2.0, 0.5]])
    mask = np.array([[1, 1, 1], [1, 1, 0]], bool)
    # -min(r * A, clip(r, 0.8, 1.2) * A) element by element:
    # (0,0) -min(1.5, 1.2) = -1.2 (clipped)     (0,1) -min(-0.9, -0.9) = 0.9
    # (0,2) -min(-0.5, -0.8) = 0.8 (clipped)    (1,0) -min(2.2, 2.2) = -2.2
    # (1,1) -min(1.4, 1.6) = -1.4 (ratio outside the interval, unclipped term active)
    elem_loss = [[-1.2, 0.9, 0.8], [-2.2, -1.4]]
    return logratio, adv, mask, elem_loss


def test_clipped_policy_loss_hand_case():
    logratio, adv, mask, elem_loss = _policy_case()
    loss, metrics = losses.clipped_policy_loss(logratio, adv, mask, clip_eps=0.2, aggregation="token")
    assert float(loss) == pytest.approx((-1.2 + 0.9 + 0.8 - 2.2 - 1.4) / 5, rel=1e-5)
    assert float(metrics["clip_fraction"]) == pytest.approx(3 / 5)  # ratios 1.5, 0.5, 0.7
    assert float(metrics["ratio_mean"]) == pytest.approx((1.5 + 0.9 + 0.5 + 1.1 + 0.7) / 5, rel=1e-6)
    seq_loss, seq_metrics = losses.clipped_policy_loss(logratio, adv, mask, 0.2, aggregation="sequence")
    row0, row1 = (-1.2 + 0.9 + 0.8) / 3, (-2.2 - 1.4) / 2
    assert float(seq_loss) == pytest.approx((row0 + row1) / 2, rel=1e-5)
    assert float(seq_metrics["clip_fraction"]) == pytest.approx(3 / 5)
    float_loss, _ = losses.clipped_policy_loss(logratio, adv, mask.astype(np.float32), 0.2, "sequence")
    assert float(float_loss) == pytest.approx(float(seq_loss))


def test_clipped_policy_loss_sequence_skips_empty_rows():
    logratio, adv, mask, _ = _policy_case()
    with_empty = np.concatenate([mask, np.zeros((1, 3), bool)])
    loss, _ = losses.clipped_policy_loss(np.concatenate([logratio, np.full((1, 3), np.nan)]),
                                         np.concatenate([adv, np.ones((1, 3))]), with_empty, 0.2, "sequence")
    assert float(loss) == pytest.approx(((-1.2 + 0.9 + 0.8) / 3 + (-2.2 - 1.4) / 2) / 2, rel=1e-5)
    for aggregation in ("token", "sequence"):
        empty, metrics = losses.clipped_policy_loss(logratio, adv, np.zeros_like(mask), 0.2, aggregation)
        assert float(empty) == 0.0 and float(metrics["clip_fraction"]) == 0.0


def test_clipped_policy_loss_gradient_ignores_padding():
    logratio, adv, mask, _ = _policy_case()
    logratio[1, 2] = np.inf
    for aggregation in ("token", "sequence"):
        grad = jax.grad(lambda lr: losses.clipped_policy_loss(lr, adv, mask, 0.2, aggregation)[0])(
            jnp.asarray(logratio, jnp.float32))
        assert np.isfinite(grad).all() and grad[1, 2] == 0.0
        assert grad[0, 0] == 0.0 and grad[0, 2] == 0.0  # clipped elements pass no gradient


def test_clipped_policy_loss_rejects_unknown_aggregation():
    with pytest.raises(ValueError, match="aggregation"):
        losses.clipped_policy_loss(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)), 0.2, "row")


def _gae_loop(rewards, values, mask, gamma, lam):
    """Plain-Python GAE: terminal after each row's last real action."""
    rows, num_actions = rewards.shape
    adv = np.zeros((rows, num_actions))
    for r in range(rows):
        next_value, next_adv, next_real = 0.0, 0.0, 0.0
        for t in reversed(range(num_actions)):
            if mask[r, t]:
                delta = rewards[r, t] + gamma * next_value * next_real - values[r, t]
                adv[r, t] = delta + gamma * lam * next_real * next_adv
                next_value, next_adv, next_real = values[r, t], adv[r, t], 1.0
    return adv, np.where(mask, adv + values, 0.0)


def test_gae_matches_a_python_loop_on_ragged_rows():
    rng = np.random.default_rng(1)
    lengths = np.array([6, 3, 0, 1, 5])
    mask = np.arange(6)[None, :] < lengths[:, None]
    rewards = rng.normal(size=mask.shape).astype(np.float32)
    values = rng.normal(size=mask.shape).astype(np.float32)
    want_adv, want_ret = _gae_loop(rewards, values, mask, gamma=0.9, lam=0.8)
    rewards[~mask] = np.nan  # padding must not leak
    values[~mask] = np.inf
    adv, ret = losses.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-6)


def test_gae_with_gamma_and_lambda_one_is_return_minus_value():
    rewards = np.array([[0.0, 0.0, 1.0, 5.0]])
    values = np.array([[0.2, 0.5, 0.7, 9.0]])
    mask = np.array([[1, 1, 1, 0]], bool)
    adv, ret = losses.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv, [[1 - 0.2, 1 - 0.5, 1 - 0.7, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(ret, [[1.0, 1.0, 1.0, 0.0]], rtol=1e-6)


def test_value_loss_with_and_without_clipping():
    values = np.array([[1.0, 2.0], [3.0, 0.0]])
    returns = np.array([[1.5, 1.0], [2.0, 9.0]])
    old = np.array([[1.2, 1.0], [3.5, 0.0]])
    mask = np.array([[1, 1], [1, 0]], bool)
    # Squared errors 0.25, 1, 1 (the fourth is padding).
    assert float(losses.value_loss(values, returns, mask)) == pytest.approx(0.5 * (0.25 + 1 + 1) / 3)
    # v - old = -0.2, 1.0, -0.5 -> clipped to -0.2, 0.3, -0.3 -> v_clipped 1.0, 1.3, 3.2, squared
    # errors 0.25, 0.09, 1.44; the max with the unclipped ones is 0.25, 1, 1.44.
    clipped = losses.value_loss(values, returns, mask, old_values_RxA=old, clip=0.3)
    assert float(clipped) == pytest.approx(0.5 * (0.25 + 1 + 1.44) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="old_values"):
        losses.value_loss(values, returns, mask, clip=0.3)


def test_apa_loss_hand_case():
    logp = np.array([[-1.0, -2.0, -3.0]])
    ref = np.array([[-1.5, -1.0, -3.0]])
    adv = np.array([[2.0, -1.0, 4.0]])
    mask = np.array([[1, 1, 0]], bool)
    # (-1 - 0.25 * 2 + 1.5)^2 = 0 and (-2 + 0.25 * 1 + 1)^2 = 0.5625
    assert float(losses.apa_loss(logp, ref, adv, mask, coef=0.25)) == pytest.approx((0.0 + 0.5625) / 2)


def test_action_ids_token_and_operation_levels():
    token_ids = losses.action_ids(TOY_TOKENS_RxL, TOY_COMPLETION_RxL, TOY_LINE_END_V, "token")
    assert token_ids.dtype == jnp.int32
    np.testing.assert_array_equal(token_ids, TOY_TOKEN_IDS_RxL)
    op_ids = losses.action_ids(TOY_TOKENS_RxL, TOY_COMPLETION_RxL, TOY_LINE_END_V, "operation")
    assert op_ids.dtype == jnp.int32
    np.testing.assert_array_equal(op_ids, TOY_OPERATION_IDS_RxL)
    with pytest.raises(ValueError, match="level"):
        losses.action_ids(TOY_TOKENS_RxL, TOY_COMPLETION_RxL, TOY_LINE_END_V, "line")


def test_action_starts_and_to_actions_hand_cases():
    ids = jnp.array(TOY_OPERATION_IDS_RxL)
    np.testing.assert_array_equal(losses.action_starts(ids), [[0, 1, 1, 0, 0, 1, 1, 0],
                                                             [0, 0, 1, 0, 0, 0, 0, 0],
                                                             [0] * 8])
    x = np.arange(10.0, 34.0).reshape(3, 8)
    # Row 0 with A = 3: action 0 is x[1], action 1 x[2] + x[3] + x[4], action 2 x[5]; action 3 is dropped.
    np.testing.assert_allclose(losses.to_actions(x, ids, 3), [[11.0, 12 + 13 + 14, 15.0],
                                                              [20 + 21 + 22, 0.0, 0.0],
                                                              [0.0, 0.0, 0.0]])
    # The value at line starts, per line.
    np.testing.assert_allclose(losses.to_actions(x * losses.action_starts(ids), ids, 4),
                               [[11.0, 12.0, 15.0, 16.0], [20.0, 0.0, 0.0, 0.0], [0.0] * 4])


def test_operation_ratio_is_the_product_of_its_token_ratios():
    rng = np.random.default_rng(2)
    rows, length = 4, 24
    tokens = rng.integers(0, 6, size=(rows, length))
    starts, lengths = np.array([0, 3, 5, 10]), np.array([24, 15, 0, 9])
    completion = (np.arange(length) >= starts[:, None]) & (np.arange(length) < (starts + lengths)[:, None])
    ids = np.asarray(losses.action_ids(tokens, completion, TOY_LINE_END_V, "operation"))
    num_actions = int(ids.max()) + 1
    logratio = rng.normal(size=(rows, length)).astype(np.float32) * 0.3
    line_ratio = np.exp(np.asarray(losses.to_actions(logratio, ids, num_actions)))
    want = np.ones((rows, num_actions))
    for r in range(rows):
        for pos in range(length):
            if ids[r, pos] >= 0:
                want[r, ids[r, pos]] *= math.exp(logratio[r, pos])
    np.testing.assert_allclose(line_ratio, want, rtol=1e-5)
    for r in range(rows):  # lines are consecutive and split exactly after line-ending tokens
        real = ids[r][completion[r]]
        assert (np.diff(real) >= 0).all() and (np.diff(real) <= 1).all()
        ends = TOY_LINE_END_V[tokens[r][completion[r]]]
        np.testing.assert_array_equal(np.diff(real) == 1, ends[:-1])


def test_operation_ids_on_a_countdown_trace():
    prompt = tok.encode("Current State: 24:[5, 3, 8], Operations: []\n")
    lines = ["Exploring Operation: 5+3=8, Resulting Numbers: [8, 8]\n",
             "Generated Node #0,0: 24:[8, 8] Operation: 5+3=8\n"]
    completion = tok.encode("".join(lines))
    tokens = np.array([prompt + completion + [tok.EOS, tok.PAD, tok.PAD]])
    mask = np.zeros(tokens.shape, bool)
    mask[0, len(prompt):len(prompt) + len(completion)] = True
    line_end_V = np.array([t.endswith("\n") for t in tok.VOCAB])
    ids = np.asarray(losses.action_ids(tokens, mask, line_end_V, "operation"))[0]
    assert sorted(set(ids[mask[0]].tolist())) == [0, 1]
    assert (ids[~mask[0]] == -1).all()
    assert [tok.decode(tokens[0][ids == a]) for a in (0, 1)] == lines


def test_jit():
    logratio, adv, mask, _ = _policy_case()
    jitted = jax.jit(losses.clipped_policy_loss, static_argnames=("aggregation",))
    for aggregation in ("token", "sequence"):
        loss, metrics = jitted(logratio, adv, mask, 0.2, aggregation=aggregation)
        eager, eager_metrics = losses.clipped_policy_loss(logratio, adv, mask, 0.2, aggregation)
        assert float(loss) == pytest.approx(float(eager), rel=1e-6)
        assert float(metrics["clip_fraction"]) == pytest.approx(float(eager_metrics["clip_fraction"]))
    rewards, values = np.ones((2, 4), np.float32), np.full((2, 4), 0.5, np.float32)
    gae_mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
    adv_j, ret_j = jax.jit(losses.gae)(rewards, values, gae_mask, 0.9, 0.8)
    adv_e, ret_e = losses.gae(rewards, values, gae_mask, 0.9, 0.8)
    np.testing.assert_allclose(adv_j, adv_e, rtol=1e-6)
    np.testing.assert_allclose(ret_j, ret_e, rtol=1e-6)
