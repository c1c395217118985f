"""The KV-cache sampler against full forward passes without a cache, its stops, sampling and sharding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sos_jax.models import sampler, sharding
from sos_jax.models.gpt import GPT, PRESETS

LENGTHS = np.array([7, 3, 1, 5, 6, 2, 7, 4], np.int32)


def _model(positions="learned", seed=0):
    return GPT(dataclasses.replace(PRESETS["tiny"], positions=positions), rngs=nnx.Rngs(seed))


def _prompts(lengths=LENGTHS, width=7, seed=0):
    rng = np.random.default_rng(seed)
    prompts = np.zeros((len(lengths), width), np.int32)
    for b, n in enumerate(lengths):
        prompts[b, :n] = rng.integers(3, 117, n)
    return prompts


WIDTH = 64  # full forward passes run on sequences padded to this length (causal: padding is never seen)


def _forward(model):
    """A jitted full forward pass (no cache): token list -> log-softmax ``[len, V]``."""
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda ids: jax.nn.log_softmax(nnx.merge(graphdef, state)(ids)[0], axis=-1))

    def forward(tokens, temperature=1.0):
        ids = np.zeros((1, WIDTH), np.int32)
        ids[0, :len(tokens)] = tokens
        logp = np.asarray(run(jnp.asarray(ids)))[:len(tokens)]  # log-softmax is the logits up to a shift per row
        return np.asarray(jax.nn.log_softmax(logp / temperature, axis=-1)) if temperature != 1.0 else logp

    return forward


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_greedy_equals_uncached_forward_passes(positions):
    """Every greedy token is the argmax of a full forward pass over the prompt and the tokens before it,
    and its log-probability is that pass's; prompts of different lengths, 40 new tokens."""
    model, prompts = _model(positions), _prompts()
    out = sampler.sample(model, prompts, LENGTHS, jax.random.key(0), sampler.SamplingParams(max_new_tokens=40,
                                                                                            eos_id=-1))
    tokens, logprobs = np.asarray(out.tokens_BxT), np.asarray(out.logprobs_BxT)
    assert tokens.shape == (8, 40) and (np.asarray(out.lengths_B) == 40).all()
    assert (np.asarray(out.stop_B) == sampler.STOP_MAX_TOKENS).all()
    forward = _forward(model)
    for b, n in enumerate(LENGTHS):
        logp = forward(np.concatenate([prompts[b, :n], tokens[b]]))
        steps = logp[n - 1: n - 1 + 40]  # the prediction for each generated token
        np.testing.assert_array_equal(steps.argmax(-1), tokens[b])
        np.testing.assert_allclose(steps[np.arange(40), tokens[b]], logprobs[b], atol=2e-5)


def test_step_by_step_greedy_loop():
    """The cached sampler's tokens equal a loop of full forward passes appending one argmax at a time."""
    model, prompts = _model(), _prompts(LENGTHS[:3])
    out = sampler.sample(model, prompts, LENGTHS[:3], jax.random.key(0), sampler.SamplingParams(max_new_tokens=12,
                                                                                                eos_id=-1))
    forward = _forward(model)
    for b, n in enumerate(LENGTHS[:3]):
        seq = list(prompts[b, :n])
        for _ in range(12):
            seq.append(int(forward(seq)[-1].argmax()))
        assert seq[n:] == np.asarray(out.tokens_BxT[b]).tolist()


def test_stops_per_row_on_eos_and_phrase():
    model, prompts = _model(), _prompts()
    free = np.asarray(sampler.sample(model, prompts, LENGTHS, jax.random.key(0),
                                     sampler.SamplingParams(max_new_tokens=30, eos_id=-1)).tokens_BxT)
    eos = int(free[1, 4])  # a token row 1 emits at step 4 (maybe earlier too)
    phrase = tuple(int(t) for t in free[0, 6:8])
    params = sampler.SamplingParams(max_new_tokens=30, eos_id=eos, stop_phrases=(phrase,))
    out = sampler.sample(model, prompts, LENGTHS, jax.random.key(0), params)
    tokens, lengths, stops = (np.asarray(x) for x in (out.tokens_BxT, out.lengths_B, out.stop_B))
    logprobs = np.asarray(out.logprobs_BxT)
    for b in range(8):
        row = free[b].tolist()
        ends = [(i + 1, sampler.STOP_EOS) for i, t in enumerate(row) if t == eos]
        ends += [(i + 2, sampler.STOP_PHRASE) for i in range(len(row) - 1) if tuple(row[i:i + 2]) == phrase]
        length, stop = min(ends, default=(30, sampler.STOP_MAX_TOKENS))
        assert lengths[b] == length and stops[b] == stop, b
        assert tokens[b, :length].tolist() == row[:length]
        assert (tokens[b, length:] == 0).all() and (logprobs[b, length:] == 0).all()
        assert (logprobs[b, :length] < 0).all()
    assert lengths[1] <= 5 and lengths[0] <= 8 and stops[1] != sampler.STOP_MAX_TOKENS


def test_sampling_restrictions_and_samples_per_prompt():
    model, prompts = _model(), _prompts()
    greedy = sampler.sample(model, prompts, LENGTHS, jax.random.key(0),
                            sampler.SamplingParams(max_new_tokens=16, eos_id=-1))
    for params in (sampler.SamplingParams(max_new_tokens=16, eos_id=-1, temperature=1.0, top_k=1),
                   sampler.SamplingParams(max_new_tokens=16, eos_id=-1, temperature=1.0, top_p=1e-6)):
        out = sampler.sample(model, prompts, LENGTHS, jax.random.key(1), params)
        np.testing.assert_array_equal(out.tokens_BxT, greedy.tokens_BxT)
    params = sampler.SamplingParams(max_new_tokens=16, eos_id=-1, temperature=0.7, num_samples=3)
    out = sampler.sample(model, prompts, LENGTHS, jax.random.key(2), params)
    tokens, logprobs = np.asarray(out.tokens_BxT), np.asarray(out.logprobs_BxT)
    assert tokens.shape == (24, 16)
    assert len({tuple(r) for r in tokens}) > 20  # samples differ
    forward = _forward(model)
    for row in (0, 4, 23):  # rows are prompt 0 x 3, prompt 1 x 3, ...
        b = row // 3
        logp = forward(np.concatenate([prompts[b, :LENGTHS[b]], tokens[row]]), temperature=0.7)
        steps = logp[LENGTHS[b] - 1: LENGTHS[b] - 1 + 16]
        np.testing.assert_allclose(steps[np.arange(16), tokens[row]], logprobs[row], atol=2e-5)


def test_top_k_samples_only_the_k_most_likely():
    model, prompts = _model(), _prompts()
    params = sampler.SamplingParams(max_new_tokens=1, eos_id=-1, temperature=5.0, top_k=3, num_samples=16)
    out = np.asarray(sampler.sample(model, prompts, LENGTHS, jax.random.key(3), params).tokens_BxT)[:, 0]
    forward = _forward(model)
    for b, n in enumerate(LENGTHS):
        top3 = np.argsort(forward(prompts[b, :n])[-1])[-3:]
        assert set(out[b * 16:(b + 1) * 16]) <= set(top3.tolist())


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2)])
def test_sharded_sampler_matches_single_device(shape):
    """On 8 devices (data, or data x fsdp x tensor) the sampled tokens equal the unsharded ones."""
    mesh = sharding.make_mesh(shape)
    config = dataclasses.replace(PRESETS["tiny"], num_heads=4)
    reference = GPT(config, rngs=nnx.Rngs(0))
    prompts = _prompts()
    params = sampler.SamplingParams(max_new_tokens=12, eos_id=-1, temperature=1.0, num_samples=2)
    expected = sampler.sample(reference, prompts, LENGTHS, jax.random.key(4), params)
    model = sharding.create_sharded_model(config, mesh, 0)
    graphdef, state = nnx.split(model)
    run = sampler.Sampler(graphdef, state, params, mesh=mesh, batch_size=8, prompt_len=7)
    out = run(state, prompts, LENGTHS, jax.random.key(4))
    assert len(out.tokens_BxT.sharding.device_set) == 8
    np.testing.assert_array_equal(out.tokens_BxT, expected.tokens_BxT)
    np.testing.assert_allclose(out.logprobs_BxT, expected.logprobs_BxT, atol=2e-5)


def test_bad_arguments_are_clear_errors():
    model = _model()
    graphdef, state = nnx.split(model)
    for bad, field in ((dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=-1.0), "temperature"),
                       (dict(top_p=0.0), "top_p"), (dict(stop_phrases=((),)), "stop_phrases"),
                       (dict(num_samples=0), "num_samples")):
        with pytest.raises(ValueError, match=field):
            sampler.SamplingParams(**bad).validate()
    with pytest.raises(ValueError, match="max_len"):
        sampler.Sampler(graphdef, state, sampler.SamplingParams(max_new_tokens=600), batch_size=2, prompt_len=8)
    run = sampler.Sampler(graphdef, state, sampler.SamplingParams(max_new_tokens=4), batch_size=2, prompt_len=8)
    with pytest.raises(ValueError, match="compiled for"):
        run(state, np.zeros((3, 8), np.int32), np.ones(3, np.int32), jax.random.key(0))
    with pytest.raises(ValueError, match="divide"):
        sampler.Sampler(graphdef, state, sampler.SamplingParams(), mesh=sharding.make_mesh(), batch_size=3,
                        prompt_len=8)
