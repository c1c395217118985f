"""The KV-cache sampler: jitted prefill, then a ``lax.while_loop`` decode over a donated state.

A batch of prompts of different lengths comes right-padded (``prompts_BxP`` and ``lengths_B``). The
sampler repeats every prompt ``num_samples`` times, left-aligns the prompts so that they all end at
cache slot ``P - 1`` (row ``b`` starts at slot ``P - length_b``; its token positions count from 0
there), runs the prompt through the model once (prefill, filling the cache), and then generates one
token per step for every row at once, writing the new key and value at one slot shared by all rows
(``lax.dynamic_update_slice``, no scatter), in place: the cache lives in the loop carry and is never
copied. Every step attends over the whole cache with a mask (reading a shorter static slice of it
costs a copy of that slice on the CPU, which measured slower than the masked full read).

Per row, generation stops at EOS (``eos_id``), after a stop phrase (a token sequence, e.g. the
Countdown goal line), or at ``max_new_tokens``; the loop ends when every row has stopped. After its
stop a row holds ``pad_id`` and log-probability 0. Nothing returns to the host between tokens.

Decoding: ``temperature == 0`` is greedy (argmax); otherwise the logits are divided by the
temperature, optionally restricted to the ``top_k`` most likely tokens and to the smallest set whose
probability reaches ``top_p``, and sampled. ``logprobs_BxT`` is the log-probability of each sampled
token under the model's softmax at the sampling temperature (temperature 1 when greedy), before the
top-k / top-p restriction: what an RL loss recomputes from the same logits.

Sharding: with a mesh, rows are split over the mesh's batch axes (``data``, ``fsdp``) and the cache
follows the model's logical axes (heads over ``tensor``); the row count ``B * num_samples`` must
divide by the batch axes' size. On a mesh that spans several processes (``sos_jax.distributed``),
every process passes the same whole batch and key; each places its own rows on its devices, and
:func:`as_dict` gathers every row back to every process.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from sos_jax import distributed, parallel
from sos_jax.models.gpt import GPT, KV
from sos_jax.tokenizers.countdown import EOS, PAD

STOP_MAX_TOKENS, STOP_EOS, STOP_PHRASE = 0, 1, 2  # Samples.stop_B codes
RUNNING = -1  # stop code of a row still generating (inside the loop only)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``eos_id=-1`` never stops on EOS; ``stop_phrases`` are token-id tuples."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no top-k restriction
    top_p: float = 1.0  # 1: no nucleus restriction
    num_samples: int = 1  # samples per prompt (rows prompt0 x n, prompt1 x n, ...)
    stop_phrases: tuple[tuple[int, ...], ...] = ()
    eos_id: int = EOS
    pad_id: int = PAD

    def validate(self) -> SamplingParams:
        """``self``, or a ``ValueError`` naming the first bad field."""
        for name, low in (("max_new_tokens", 1), ("num_samples", 1), ("top_k", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"SamplingParams.{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.temperature, (int, float)) or not 0.0 <= self.temperature < float("inf"):
            raise ValueError(f"SamplingParams.temperature must be a finite number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        for phrase in self.stop_phrases:
            if not phrase or not all(isinstance(t, int) and t >= 0 for t in phrase):
                raise ValueError(f"SamplingParams.stop_phrases: {phrase!r} is not a non-empty tuple of token ids")
        return self


@struct.dataclass
class Samples:
    """Generated tokens ``[R, T]`` (``R`` = prompts x samples, ``T`` = max_new_tokens; ``pad_id`` after
    a row's end), how many each row generated (the stop token or phrase included), their
    log-probabilities (0 after the end) and why each row stopped (``STOP_*``)."""

    tokens_BxT: jax.Array
    lengths_B: jax.Array
    logprobs_BxT: jax.Array
    stop_B: jax.Array


@struct.dataclass
class DecodeState:
    """The sampler's loop state between prefill and decode (donated to the decode call)."""

    cache: tuple[KV, ...]
    samples: Samples
    start_B: jax.Array  # first cache slot of each row's prompt
    step: jax.Array  # tokens generated so far (the same for every row)
    key: jax.Array


def choose(logits_BxV: jax.Array, key: jax.Array, params: SamplingParams) -> tuple[jax.Array, jax.Array]:
    """``(token_B, logprob_B)``: the next token of every row and its log-probability (module doc)."""
    logits = logits_BxV.astype(jnp.float32)
    if params.temperature == 0:
        token = jnp.argmax(logits, axis=-1)
        logp_BxV = jax.nn.log_softmax(logits, axis=-1)
    else:
        logits = logits / params.temperature
        logp_BxV = jax.nn.log_softmax(logits, axis=-1)
        masked = logits
        if params.top_k and params.top_k < logits.shape[-1]:
            kth_B = jax.lax.top_k(logits, params.top_k)[0][:, -1:]
            masked = jnp.where(logits < kth_B, -jnp.inf, masked)
        if params.top_p < 1.0:
            sorted_BxV = jnp.sort(masked, axis=-1)[:, ::-1]
            probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
            before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # mass of the more likely tokens
            keep = before_BxV < params.top_p  # the most likely token is always kept
            cutoff_B = jnp.min(jnp.where(keep, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
            masked = jnp.where(masked < cutoff_B, -jnp.inf, masked)
        token = jax.random.categorical(key, masked, axis=-1)
    token = token.astype(jnp.int32)
    return token, jnp.take_along_axis(logp_BxV, token[:, None], axis=-1)[:, 0]


def _record(samples: Samples, step, token_B, logprob_B, params: SamplingParams) -> Samples:
    """Writes token ``step`` of every row still running, and stops the rows that end with it."""
    running_B = samples.stop_B == RUNNING
    token_B = jnp.where(running_B, token_B, params.pad_id)
    logprob_B = jnp.where(running_B, logprob_B, 0.0)
    tokens = jax.lax.dynamic_update_slice(samples.tokens_BxT, token_B[:, None], (0, step))
    logprobs = jax.lax.dynamic_update_slice(samples.logprobs_BxT, logprob_B[:, None], (0, step))
    phrase_B = jnp.zeros_like(running_B)
    for phrase in params.stop_phrases:
        n = len(phrase)
        tail_BxN = jax.lax.dynamic_slice(tokens, (0, jnp.maximum(step + 1 - n, 0)), (tokens.shape[0], n))
        phrase_B = phrase_B | ((step + 1 >= n) & jnp.all(tail_BxN == jnp.asarray(phrase, jnp.int32), axis=-1))
    stop_B = jnp.where(token_B == params.eos_id, STOP_EOS, jnp.where(phrase_B, STOP_PHRASE, RUNNING))
    return Samples(tokens_BxT=tokens, lengths_B=jnp.where(running_B, step + 1, samples.lengths_B),
                   logprobs_BxT=logprobs, stop_B=jnp.where(running_B, stop_B, samples.stop_B))


class Sampler:
    """Compiled prefill and decode for one model, batch size, prompt length and ``SamplingParams``.

    ``Sampler(graphdef, state, params, mesh=mesh, batch_size=B, prompt_len=P)(state, prompts_BxP,
    lengths_B, key) -> Samples`` where ``graphdef, state = nnx.split(model)``. Both steps compile on
    the first call; ``state`` may be any state with the same structure (e.g. updated parameters).
    """

    def __init__(self, graphdef, state, params: SamplingParams, *, mesh=None, batch_size: int, prompt_len: int):
        params.validate()
        config = nnx.merge(graphdef, state).config
        if prompt_len < 1 or batch_size < 1:
            raise ValueError(f"Sampler: batch_size ({batch_size}) and prompt_len ({prompt_len}) must be >= 1")
        if config.positions == "learned" and prompt_len + params.max_new_tokens > config.max_len:
            raise ValueError(f"Sampler: prompt_len {prompt_len} + max_new_tokens {params.max_new_tokens} exceeds the "
                             f"model's context GPTConfig.max_len {config.max_len}")
        rows = batch_size * params.num_samples
        if mesh is not None:
            split = math.prod(dict(mesh.shape).get(axis, 1) for axis in parallel.BATCH_AXES)
            if rows % split:
                raise ValueError(f"Sampler: {rows} rows (batch x num_samples) do not divide over the mesh's batch "
                                 f"axes ({split} shards)")
        self.graphdef, self.params, self.mesh = graphdef, params, mesh
        self.batch_size, self.prompt_len, self.rows = batch_size, prompt_len, rows
        self._prefill = self._decode = None

    def _compile(self, state) -> None:
        mesh = self.mesh
        if mesh is None:
            self._prefill = jax.jit(self._prefill_fn)
            self._decode = jax.jit(self._decode_fn, donate_argnums=1)
            return
        from jax.sharding import NamedSharding, PartitionSpec

        rows = parallel.batch_sharding(mesh)
        replicated = NamedSharding(mesh, PartitionSpec())
        state_shardings = jax.tree.map(lambda x: x.sharding, state)
        self._prefill = jax.jit(self._prefill_fn, in_shardings=(state_shardings, rows, rows, replicated))
        self._decode = jax.jit(self._decode_fn, in_shardings=(state_shardings, None), donate_argnums=1)

    def __call__(self, state, prompts_BxP, lengths_B, key) -> Samples:
        """Samples continuations of the prompts (right-padded ``[B, P]`` ids, ``lengths_B`` >= 1)."""
        if tuple(prompts_BxP.shape) != (self.batch_size, self.prompt_len):
            raise ValueError(f"Sampler: prompts of shape {tuple(prompts_BxP.shape)}, compiled for "
                             f"{(self.batch_size, self.prompt_len)}")
        if self._prefill is None:
            self._compile(state)
        prompts_BxP = jnp.asarray(prompts_BxP, jnp.int32)
        lengths_B = jnp.asarray(lengths_B, jnp.int32)
        if self.mesh is None:
            decode_state = self._prefill(state, prompts_BxP, lengths_B, key)
            return self._decode(state, decode_state).samples
        key, prompts_BxP, lengths_B = place_inputs(self.mesh, key, prompts_BxP, lengths_B)
        with jax.set_mesh(self.mesh):
            decode_state = self._prefill(state, prompts_BxP, lengths_B, key)
            return self._decode(state, decode_state).samples

    def generate(self, state, prompts_BxP, lengths_B, key) -> Samples:
        """Prefill and decode as one traceable function (to compose inside a larger jitted
        function, e.g. an RL rollout with its rewards); ``__call__``'s arguments."""
        return self._decode_fn(state, self._prefill_fn(state, prompts_BxP, lengths_B, key)).samples

    def _prefill_fn(self, state, prompts_BxP, lengths_B, key) -> DecodeState:
        params, n, p = self.params, self.params.num_samples, self.prompt_len
        model = nnx.merge(self.graphdef, state)
        prompts_BxP = jnp.repeat(prompts_BxP, n, axis=0)
        start_B = p - jnp.clip(jnp.repeat(lengths_B, n, axis=0), 1, p)
        slot_P = jnp.arange(p)
        source_BxP = jnp.clip(slot_P[None, :] - start_B[:, None], 0, p - 1)
        tokens_BxP = jnp.where(slot_P[None, :] >= start_B[:, None],
                               jnp.take_along_axis(prompts_BxP, source_BxP, axis=1), params.pad_id)
        cache = model.init_cache(self.rows, p + params.max_new_tokens)
        logits_BxPxV, cache = model.cached(tokens_BxP, source_BxP * (slot_P[None, :] >= start_B[:, None]), start_B,
                                           cache, 0, 0)
        key, first = jax.random.split(key)
        token_B, logprob_B = choose(logits_BxPxV[:, -1], first, params)
        empty = Samples(tokens_BxT=jnp.full((self.rows, params.max_new_tokens), params.pad_id, jnp.int32),
                        lengths_B=jnp.zeros((self.rows,), jnp.int32),
                        logprobs_BxT=jnp.zeros((self.rows, params.max_new_tokens), jnp.float32),
                        stop_B=jnp.full((self.rows,), RUNNING, jnp.int32))
        samples = _record(empty, 0, token_B, logprob_B, params)
        return DecodeState(cache=cache, samples=samples, start_B=start_B, step=jnp.ones((), jnp.int32), key=key)

    def _decode_fn(self, state, decode_state: DecodeState) -> DecodeState:
        params, p = self.params, self.prompt_len
        model = nnx.merge(self.graphdef, state)

        span = p + params.max_new_tokens

        def cond(s: DecodeState):
            return (s.step < params.max_new_tokens) & jnp.any(s.samples.stop_B == RUNNING)

        def body(s: DecodeState) -> DecodeState:
            # Step t feeds token t-1 at slot p + t - 1 and samples token t.
            slot = p + s.step - 1
            last_Bx1 = jax.lax.dynamic_slice(s.samples.tokens_BxT, (0, s.step - 1), (self.rows, 1))
            positions_Bx1 = (slot - s.start_B)[:, None]
            logits_Bx1xV, cache = model.cached(last_Bx1, positions_Bx1, s.start_B, s.cache, slot, span)
            token_B, logprob_B = choose(logits_Bx1xV[:, 0], jax.random.fold_in(s.key, s.step), params)
            samples = _record(s.samples, s.step, token_B, logprob_B, params)
            return DecodeState(cache=cache, samples=samples, start_B=s.start_B, step=s.step + 1, key=s.key)

        decode_state = jax.lax.while_loop(cond, body, decode_state)
        samples = decode_state.samples
        stop_B = jnp.where(samples.stop_B == RUNNING, STOP_MAX_TOKENS, samples.stop_B)
        return decode_state.replace(samples=samples.replace(stop_B=stop_B))


def place_inputs(mesh, key: jax.Array, *rows) -> tuple[jax.Array, ...]:
    """``(key, *rows)`` ready for a call compiled on ``mesh`` (arrays whose leading axis is the
    batch): on a mesh of this process's devices, as they are; on one spanning several processes, as
    global arrays (rows split over the batch axes, the key replicated) built from the same whole
    arrays and key, which every process passes."""
    if all(d.process_index == jax.process_index() for d in mesh.devices.flat):
        return (key, *rows)
    from jax.sharding import NamedSharding, PartitionSpec

    def place(x, sharding):
        if not x.is_fully_addressable:  # already a global array
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    batch = parallel.batch_sharding(mesh)
    data = place(jax.random.key_data(key), NamedSharding(mesh, PartitionSpec()))
    return (jax.random.wrap_key_data(data, impl=jax.random.key_impl(key)), *(place(x, batch) for x in rows))


def sample(model: GPT, prompts_BxP, lengths_B, key: jax.Array, params: SamplingParams, mesh=None) -> Samples:
    """One-off sampling with ``model`` (compiles each call; build a :class:`Sampler` to reuse)."""
    graphdef, state = nnx.split(model)
    batch_size, prompt_len = prompts_BxP.shape
    return Sampler(graphdef, state, params, mesh=mesh, batch_size=batch_size, prompt_len=prompt_len)(
        state, prompts_BxP, lengths_B, key)


def as_dict(samples: Samples) -> dict[str, Any]:
    """The samples as host numpy arrays, keyed ``tokens``, ``lengths``, ``logprobs``, ``stop``: every
    row, on every process (on several processes, every process must call it)."""
    host = distributed.fetch(samples)
    return {"tokens": host.tokens_BxT, "lengths": host.lengths_B, "logprobs": host.logprobs_BxT, "stop": host.stop_B}
