"""The GPT model, its loss and its sharding (CPU, 8 fake devices, tiny configs)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from sos_jax import parallel
from sos_jax.models import sharding
from sos_jax.models.gpt import GPT, PRESETS, GPTConfig, loss_and_metrics

TINY = dataclasses.replace(PRESETS["tiny"], max_len=64)


def _forward_fn(model):
    """A jitted pure forward over the model's split state (as the trainer does)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, inputs, segment_ids, positions):
        return nnx.merge(graphdef, state)(inputs, segment_ids_BxL=segment_ids, positions_BxL=positions)

    return lambda inputs, segment_ids=None, positions=None: forward(state, inputs, segment_ids, positions)


def _tokens(shape, seed=0, vocab=TINY.vocab_size):
    return jnp.asarray(np.random.default_rng(seed).integers(3, vocab, size=shape), jnp.int32)


def _count(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logits_shape_and_dtype(dtype):
    model = GPT(dataclasses.replace(TINY, dtype=dtype), rngs=nnx.Rngs(0))
    logits = _forward_fn(model)(_tokens((2, 16)))
    assert logits.shape == (2, 16, TINY.vocab_size) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("config", [
    PRESETS["tiny"], PRESETS["small"], dataclasses.replace(TINY, positions="rope", tie_embeddings=False),
    PRESETS["bt-3m"]], ids=["tiny", "small", "rope-untied", "bt-3m"])
def test_num_params_is_exact(config):
    abstract = nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0)))
    assert _count(abstract) == config.num_params()


@pytest.mark.parametrize("name, low, high", [
    ("tiny", 0, 1e6), ("small", 15e6, 25e6), ("sos-250m", 190e6, 260e6), ("bt-3m", 2e6, 4e6),
    ("bt-17m", 15e6, 19e6), ("bt-38m", 34e6, 42e6), ("bt-144m", 130e6, 155e6)])
def test_preset_sizes(name, low, high):
    assert low <= PRESETS[name].validate().num_params() <= high


def test_flops_per_token():
    c = PRESETS["small"]
    n = c.num_params() - c.max_len * c.d_model  # tied: the embedding counts once (as the unembedding)
    assert c.flops_per_token(1024) == 6 * n + 12 * c.num_layers * c.d_model * 1024
    untied = dataclasses.replace(c, tie_embeddings=False)
    assert untied.flops_per_token(1024) == c.flops_per_token(1024)


@pytest.mark.parametrize("attention", ["xla", "manual"])
def test_causal(attention):
    forward = _forward_fn(GPT(dataclasses.replace(TINY, attention=attention), rngs=nnx.Rngs(0)))
    inputs = _tokens((2, 24))
    changed = inputs.at[:, 10:].set((inputs[:, 10:] + 7) % TINY.vocab_size)
    a, b = forward(inputs), forward(changed)
    np.testing.assert_array_equal(a[:, :10], b[:, :10])
    assert not np.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("positions", ["learned", "rope"])
@pytest.mark.parametrize("attention", ["xla", "manual"])
def test_packed_segment_equals_segment_alone(positions, attention):
    """The key packing property: a packed trace sees only itself, with its own positions."""
    config = dataclasses.replace(TINY, positions=positions, attention=attention)
    forward = _forward_fn(GPT(config, rngs=nnx.Rngs(1)))
    first, second, length = 5, 7, 16
    packed = _tokens((1, length), seed=3)
    segment_ids = jnp.asarray([[1] * first + [2] * second + [0] * (length - first - second)], jnp.int32)
    positions_ = jnp.asarray([list(range(first)) + list(range(second)) + [0] * (length - first - second)], jnp.int32)
    logits = forward(packed, segment_ids, positions_)

    alone = jnp.zeros((1, length), jnp.int32).at[0, :second].set(packed[0, first:first + second])
    alone_segments = jnp.asarray([[1] * second + [0] * (length - second)], jnp.int32)
    alone_positions = jnp.asarray([list(range(second)) + [0] * (length - second)], jnp.int32)
    expected = forward(alone, alone_segments, alone_positions)
    np.testing.assert_allclose(logits[0, first:first + second], expected[0, :second], atol=1e-5, rtol=1e-5)
    # the first segment matches the unpacked prefix too, and the default positions are arange(L)
    np.testing.assert_allclose(logits[0, :first], forward(packed[:, :first])[0], atol=1e-5, rtol=1e-5)
    assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("bfloat16", 5e-2)])
def test_xla_and_manual_attention_agree(dtype, tol):
    base = dataclasses.replace(TINY, positions="rope", dtype=dtype)
    inputs = _tokens((2, 20), seed=5)
    segment_ids = jnp.asarray([[1] * 8 + [2] * 10 + [0] * 2, [1] * 20], jnp.int32)
    positions = jnp.asarray([list(range(8)) + list(range(10)) + [0, 0], list(range(20))], jnp.int32)
    out = {}
    for attention in ("xla", "manual"):
        forward = _forward_fn(GPT(dataclasses.replace(base, attention=attention), rngs=nnx.Rngs(2)))
        out[attention] = (forward(inputs, segment_ids, positions), forward(inputs))
    for a, b in zip(out["xla"], out["manual"]):
        np.testing.assert_allclose(a, b, atol=tol, rtol=tol)


def _batch(batch_size=8, length=16, seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(3, TINY.vocab_size, size=(batch_size, length)).astype(np.int32)
    segment_ids = np.ones((batch_size, length), np.int32)
    segment_ids[:, length // 2:] = 2
    segment_ids[:, -3:] = 0
    segment_ids[-1] = 0  # one fully padded row
    positions = np.where(segment_ids == 2, np.arange(length) - length // 2, np.arange(length)).astype(np.int32)
    positions[segment_ids == 0] = 0
    return {"inputs": inputs, "targets": np.roll(inputs, -1, axis=1), "weights": (segment_ids > 0).astype(np.float32),
            "segment_ids": segment_ids, "positions": positions}


def _loss_fn(graphdef):
    def loss(params, batch):
        model = nnx.merge(graphdef, params)
        logits = model(batch["inputs"], segment_ids_BxL=batch["segment_ids"], positions_BxL=batch["positions"])
        return loss_and_metrics(logits, batch["targets"], batch["weights"])[0]
    return loss


@pytest.mark.parametrize("shape", [(8, 1, 1), (1, 8, 1), (1, 1, 8), (2, 2, 2)], ids=str)
def test_sharded_loss_equals_single_device_loss(shape):
    config = dataclasses.replace(TINY, d_model=64, num_heads=8)  # 8 heads: tensor=8 really splits them
    batch = _batch()
    graphdef, params = nnx.split(GPT(config, rngs=nnx.Rngs(0)))
    single = jax.jit(_loss_fn(graphdef))(params, batch)

    mesh = sharding.make_mesh(shape)
    sharded_model = sharding.create_sharded_model(config, mesh, seed=0)
    sharded_params = nnx.state(sharded_model, nnx.Param)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(sharded_params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # same init, sharded or not
    batch_sharded = jax.device_put(batch, parallel.batch_sharding(mesh))
    shardings = sharding.param_shardings(sharded_model)
    with jax.set_mesh(mesh):
        loss = jax.jit(_loss_fn(nnx.graphdef(sharded_model)), in_shardings=(shardings, parallel.batch_sharding(mesh)))(
            sharded_params, batch_sharded)
    np.testing.assert_allclose(loss, single, rtol=1e-5)


def test_parameters_are_sharded_by_the_rules():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = sharding.create_sharded_model(TINY, mesh, seed=0)
    block = model.blocks[0]
    assert block.mlp.fc1.kernel[...].sharding.spec == P("fsdp", "tensor")
    assert block.mlp.fc2.kernel[...].sharding.spec == P("tensor", "fsdp")
    assert block.attn.qkv.kernel[...].sharding.spec == P("fsdp", None, "tensor", None)
    assert block.attn.out.kernel[...].sharding.spec == P("tensor", None, "fsdp")
    # 117 rows do not split over tensor=2: the vocabulary axis stays whole, d_model is split on fsdp
    assert model.embed.embedding[...].sharding.spec == P(None, "fsdp")
    assert block.ln1.scale[...].sharding.is_fully_replicated
    kernel = block.mlp.fc1.kernel[...]
    assert kernel.addressable_shards[0].data.shape == (TINY.d_model // 2, TINY.d_ff // 2)
    predicted = sharding.param_shardings(model, mesh)
    actual = sharding.param_shardings(model)
    assert jax.tree.leaves(predicted) == jax.tree.leaves(actual)


def test_make_mesh():
    assert sharding.make_mesh().shape == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(sharding.make_mesh({"tensor": 8}).shape) == {"data": 1, "fsdp": 1, "tensor": 8}
    with pytest.raises(ValueError, match="does not match the 8 devices"):
        sharding.make_mesh((2, 2, 1))
    with pytest.raises(ValueError, match="unknown axis 'model'"):
        sharding.make_mesh({"model": 8})


def test_logical_to_mesh_drops_axes_that_do_not_fit():
    mesh = sharding.make_mesh((2, 2, 2))
    spec = sharding.logical_to_spec(("batch", "act_length", "act_vocab"), mesh, (8, 4, 117))
    assert spec == P(("data", "fsdp"), None, None)  # 117 does not split over tensor=2
    assert sharding.logical_to_spec(("batch", "embed"), mesh) == P(("data", "fsdp"), None)  # fsdp used once
    assert sharding.logical_to_mesh(("embed", "mlp"), mesh).spec == P("fsdp", "tensor")
    assert sharding.logical_to_spec(("embed", "mlp"), sharding.make_mesh()) == P(None, None)
    with pytest.raises(ValueError, match="'nope'"):
        sharding.logical_to_spec(("nope",), mesh)


def test_tiny_model_overfits_one_batch():
    batch = _batch(batch_size=4, length=32, seed=1)
    model = GPT(TINY, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamw(3e-3, weight_decay=0.0)
    loss_fn = _loss_fn(graphdef)

    @jax.jit
    def train_steps(params, opt_state):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss
        return jax.lax.scan(step, (params, opt_state), length=80)

    _, losses = train_steps(params, tx.init(params))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


def test_loss_ignores_zero_weight_positions():
    logits = jax.random.normal(jax.random.key(0), (2, 6, 11))
    targets = jnp.asarray([[1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5]])
    weights = jnp.asarray([[1, 1, 1, 0, 0, 0], [1, 0, 1, 0, 1, 0]], jnp.float32)
    loss, metrics = loss_and_metrics(logits, targets, weights)
    other_targets = jnp.where(weights > 0, targets, 10)
    other_logits = jnp.where(weights[..., None] > 0, logits, 1e4)
    loss2, _ = loss_and_metrics(other_logits, other_targets, weights)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    np.testing.assert_allclose(loss, jnp.sum(per_token * weights) / 6, rtol=1e-6)
    assert float(metrics["tokens"]) == 6.0 and 0.0 <= float(metrics["accuracy"]) <= 1.0
    # nothing weighted: zeros, not NaN, and finite gradients
    zero = jnp.zeros_like(weights)
    loss0, metrics0 = loss_and_metrics(logits, targets, zero)
    grads = jax.grad(lambda lg: loss_and_metrics(lg, targets, zero)[0])(logits)
    assert float(loss0) == 0.0 and float(metrics0["accuracy"]) == 0.0 and bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize("attention", ["xla", "manual"])
def test_fully_padded_rows_have_no_nan(attention):
    model = GPT(dataclasses.replace(TINY, attention=attention), rngs=nnx.Rngs(0))
    batch = _batch()
    batch["segment_ids"][:] = 0
    batch["weights"][:] = 0.0
    batch["weights"][0, 0] = 1.0  # one counted token so the loss has a gradient at all
    graphdef, params = nnx.split(model, nnx.Param)
    loss, grads = jax.jit(jax.value_and_grad(_loss_fn(graphdef)))(params, batch)
    assert np.isfinite(float(loss))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_dropout_needs_rngs_and_changes_output():
    model = GPT(dataclasses.replace(TINY, dropout=0.5), rngs=nnx.Rngs(0))
    inputs = _tokens((2, 8))
    np.testing.assert_array_equal(model(inputs), model(inputs))
    with pytest.raises(ValueError, match="rngs"):
        model(inputs, deterministic=False)
    noisy = model(inputs, deterministic=False, rngs=nnx.Rngs(dropout=1))
    assert not np.allclose(noisy, model(inputs))


@pytest.mark.parametrize("field, value", [
    ("d_model", 65), ("num_heads", 0), ("num_layers", -1), ("vocab_size", 0), ("d_ff", 0), ("max_len", 0),
    ("positions", "alibi"), ("dtype", "float16"), ("param_dtype", "int8"), ("attention", "flash"), ("dropout", 1.0)])
def test_validate_names_the_field(field, value):
    config = dataclasses.replace(TINY, **{field: value})
    with pytest.raises(ValueError, match=f"GPTConfig.{field}"):
        config.validate()
    with pytest.raises(ValueError, match=f"GPTConfig.{field}"):
        GPT(config, rngs=nnx.Rngs(0))


def test_rope_needs_even_head_dim():
    with pytest.raises(ValueError, match="GPTConfig.d_model"):
        GPTConfig(num_layers=1, num_heads=4, d_model=36, d_ff=8, positions="rope").validate()
    GPTConfig(num_layers=1, num_heads=4, d_model=36, d_ff=8).validate()  # 9-dim heads are fine when learned
