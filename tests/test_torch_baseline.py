"""The PyTorch baselines (benchmarks/torch_gpt.py) compute the same function as the sos_jax GPT.

Skipped when torch (or, for GPT-2, transformers) is not importable: CI does not install them.
"""

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sos_jax.models.gpt import GPT, PRESETS

torch = pytest.importorskip("torch", reason="torch is not installed (the bench extra)")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import torch_gpt  # noqa: E402

TINY = PRESETS["tiny"]
CONFIGS = {"tiny": TINY, "untied": dataclasses.replace(TINY, tie_embeddings=False),
           "rope": dataclasses.replace(TINY, positions="rope")}
NEW_TOKENS = 20


def _need_transformers():
    pytest.importorskip("transformers", reason="transformers is not installed (the bench extra)")


def _build(name: str, kind: str):
    """The sos_jax model of ``CONFIGS[name]`` (seed 0) and its torch copy (``kind``: "plain" or "hf")."""
    config = CONFIGS[name]
    model = GPT(config, rngs=nnx.Rngs(0))
    if kind == "hf":
        _need_transformers()
    build = torch_gpt.plain_gpt_from_sos if kind == "plain" else torch_gpt.hf_gpt2_from_sos
    return model, build(model, config)


def _tokens(shape, seed=0):
    return np.random.default_rng(seed).integers(3, TINY.vocab_size, size=shape).astype(np.int32)


def _torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = model(torch.from_numpy(ids).long())
    return (out if isinstance(out, torch.Tensor) else out.logits).numpy()


def _jax_greedy(model, prompt_BxP: np.ndarray, new_tokens: int) -> np.ndarray:
    """Greedy decoding without a cache: each step runs the full forward pass and takes the argmax at the last token.

    The sequence grows in a fixed buffer of ``P + new_tokens`` tokens (one compilation); the slots not
    yet written hold 0, which causal attention hides from the positions before them.
    """
    graphdef, state = nnx.split(model)
    prompt_len = prompt_BxP.shape[1]

    @jax.jit
    def step(state, ids_BxT, t):
        logits_BxTxV = nnx.merge(graphdef, state)(ids_BxT)
        return ids_BxT.at[:, t].set(jnp.take(logits_BxTxV, t - 1, axis=1).argmax(-1).astype(ids_BxT.dtype))

    ids_BxT = jnp.zeros((prompt_BxP.shape[0], prompt_len + new_tokens), jnp.int32).at[:, :prompt_len].set(prompt_BxP)
    for t in range(prompt_len, prompt_len + new_tokens):
        ids_BxT = step(state, ids_BxT, t)
    return np.asarray(ids_BxT[:, prompt_len:])


@pytest.mark.parametrize("name, kind", [("tiny", "plain"), ("untied", "plain"), ("rope", "plain"),
                                        ("tiny", "hf"), ("untied", "hf")])
def test_logits_match_sos_jax(name, kind):
    model, torch_model = _build(name, kind)
    ids = _tokens((3, 24))
    expected = np.asarray(model(jnp.asarray(ids)))
    np.testing.assert_allclose(_torch_logits(torch_model, ids), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name, kind", [("tiny", "plain"), ("rope", "plain"), ("tiny", "hf")])
def test_greedy_with_kv_cache_matches_naive_jax_greedy(name, kind):
    model, torch_model = _build(name, kind)
    prompt = _tokens((2, 8), seed=1)
    generate = torch_model.greedy if kind == "plain" else lambda ids, n: torch_gpt.hf_greedy(torch_model, ids, n)
    tokens = generate(torch.from_numpy(prompt).long(), NEW_TOKENS).numpy()
    assert tokens.shape == (2, NEW_TOKENS)
    np.testing.assert_array_equal(tokens, _jax_greedy(model, prompt, NEW_TOKENS))


def test_gpt2_has_no_rotary_positions():
    _need_transformers()
    with pytest.raises(ValueError, match="learned positions only"):
        torch_gpt.hf_gpt2_config(CONFIGS["rope"])


def test_plain_model_has_the_sos_jax_parameter_count():
    for config in (TINY, CONFIGS["untied"], CONFIGS["rope"]):
        assert sum(p.numel() for p in torch_gpt.PlainGPT(config).parameters()) == config.num_params()
