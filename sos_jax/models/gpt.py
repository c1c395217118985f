"""A decoder-only transformer (GPT) in Flax NNX, its presets, and the weighted cross-entropy loss.

Architecture (GPT-2 / GPT-Neo style, as the Stream of Search reference model):

- token embedding + (``positions="learned"``) a learned position table of ``max_len`` rows, or
  (``positions="rope"``) rotary embeddings on queries and keys (half-split / NeoX layout, base
  10000; the Qwen2-style models of the backtracking study use RoPE);
- ``num_layers`` pre-norm blocks: ``x + Dropout(Attn(LN(x)))`` then ``x + Dropout(MLP(LN(x)))``,
  LayerNorm (scale and bias, eps 1e-5; statistics in float32 whatever the compute dtype), fused
  q/k/v projection, GELU (tanh approximation) MLP, biases on every projection;
- a final LayerNorm and the output head, tied to the token embedding by default.

Attention is causal and never crosses a segment boundary (``segment_ids``: 1, 2, ... per packed
trace, 0 on padding). A query always sees itself (padding tokens, segment 0, attend to earlier
padding), so no softmax row is ever empty and fully padded rows give finite logits.

Parameters carry logical axis names (``out_sharding`` metadata, with eager sharding off so a model
can also be built without a mesh); :mod:`sos_jax.models.sharding` maps them onto a mesh. Init is
GPT-2's: normal(0.02) everywhere, output projections of each block scaled by ``1/sqrt(2 * layers)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sos_jax.models.sharding import constrain
from sos_jax.tokenizers.countdown import VOCAB_SIZE

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
POSITIONS = ("learned", "rope")
ATTENTIONS = ("auto", "xla", "manual")
ROPE_BASE = 10000.0
LN_EPS = 1e-5
INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Model hyperparameters. ``dtype`` is the compute dtype; logits and the loss are always float32."""

    vocab_size: int = VOCAB_SIZE
    num_layers: int = 2
    num_heads: int = 4
    d_model: int = 64
    d_ff: int = 256
    max_len: int = 4096  # context length (rows of the learned position table)
    positions: str = "learned"  # "learned" or "rope"
    tie_embeddings: bool = True
    dropout: float = 0.0  # residual (and embedding) dropout, applied when not deterministic
    param_dtype: str = "float32"
    dtype: str = "float32"  # "float32" or "bfloat16"
    attention: str = "auto"  # "xla": jax.nn.dot_product_attention; "manual": einsum + softmax; "auto": manual on
    # CPU (about 1.5x faster there in benchmarks/train_throughput.py), xla elsewhere

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.num_heads

    def validate(self) -> GPTConfig:
        """``self``, or a ``ValueError`` naming the first bad field."""
        for name in ("vocab_size", "num_layers", "num_heads", "d_model", "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"GPTConfig.d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.positions not in POSITIONS:
            raise ValueError(f"GPTConfig.positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"GPTConfig.d_model: rope needs an even head dimension, got {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"GPTConfig.{name} must be one of {tuple(DTYPES)}, got {getattr(self, name)!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"GPTConfig.attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"GPTConfig.tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        return self

    def num_params(self) -> int:
        """Exact number of parameters of ``GPT(self)``."""
        d, f, v = self.d_model, self.d_ff, self.vocab_size
        per_layer = (2 * d  # ln1
                     + d * 3 * d + 3 * d  # fused q/k/v
                     + d * d + d  # attention output
                     + 2 * d  # ln2
                     + d * f + f + f * d + d)  # MLP
        total = v * d + self.num_layers * per_layer + 2 * d  # embedding, blocks, final norm
        if self.positions == "learned":
            total += self.max_len * d
        if not self.tie_embeddings:
            total += d * v
        return total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), PaLM's formula ``6 N + 12 L d T``.

        ``N`` counts the parameters used in matmuls: every parameter except the learned position
        table and the input embedding lookup, but with the unembedding (``d x V``) counted once,
        tied or not (nanoGPT's convention). ``12 L d T`` is the attention score and value matmuls
        over the full (not causally halved) ``T = seq_len`` context, forward and backward.
        """
        n = self.num_params() - self.vocab_size * self.d_model * (0 if self.tie_embeddings else 1)
        if self.positions == "learned":
            n -= self.max_len * self.d_model
        return float(6 * n + 12 * self.num_layers * self.d_model * seq_len)


# Presets. Parameter counts with the 117-token Countdown vocabulary (exact: GPTConfig.num_params):
#   tiny       2 x  64, 4 heads, ff  256, learned 512                 ~0.14M
#   small      6 x 512, 8 heads, ff 2048, learned 4096                ~21.1M
#   sos-250m  16 x 1024, 16 heads, ff 4096, learned 4096, dropout 0.1 ~205.9M (the reference is
#             ~250M with GPT-2's 50k BPE vocabulary; same shape, smaller embedding)
# Backtracking study (Qin et al. 2025: 3M..144M Qwen2-style models, so RoPE, tied embeddings, no
# position table, 4096-token context; widths chosen for 64-dim heads where possible, ff = 4 d):
#   bt-3m      4 x 256, 4 heads                                       ~3.2M
#   bt-17m    10 x 384, 6 heads                                       ~17.8M
#   bt-38m    12 x 512, 8 heads                                       ~37.9M
#   bt-144m   20 x 768, 12 heads                                      ~141.8M
PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(num_layers=2, num_heads=4, d_model=64, d_ff=256, max_len=512),
    "small": GPTConfig(num_layers=6, num_heads=8, d_model=512, d_ff=2048, max_len=4096),
    "sos-250m": GPTConfig(num_layers=16, num_heads=16, d_model=1024, d_ff=4096, max_len=4096, dropout=0.1),
    "bt-3m": GPTConfig(num_layers=4, num_heads=4, d_model=256, d_ff=1024, positions="rope"),
    "bt-17m": GPTConfig(num_layers=10, num_heads=6, d_model=384, d_ff=1536, positions="rope"),
    "bt-38m": GPTConfig(num_layers=12, num_heads=8, d_model=512, d_ff=2048, positions="rope"),
    "bt-144m": GPTConfig(num_layers=20, num_heads=12, d_model=768, d_ff=3072, positions="rope"),
}


ACT_HEADS = ("batch", "act_length", "act_heads", "act_kv")  # logical names of [B, L, N, H] activations
ACT_EMBED = ("batch", "act_length", "act_embed")  # and of [B, L, D] ones
CACHE = ("batch", "act_heads", "act_length", "act_kv")  # and of the key-value cache [B, N, S, H]


class KV(NamedTuple):
    """One layer's key-value cache: keys and values ``[B, N, S, H]`` (batch, heads, slots, head dim)."""

    k: jax.Array
    v: jax.Array


def logical_axes(*names: str | None) -> dict:
    """Variable metadata: logical axis names; sharded later (create_sharded_model), not eagerly."""
    return {"out_sharding": names, "eager_sharding": False}


def _normal(std: float):
    return jax.nn.initializers.normal(stddev=std)


def rope(x_BxLxNxH: jax.Array, positions_BxL: jax.Array) -> jax.Array:
    """Rotary position embedding (half-split layout), computed in float32, returned in x's dtype."""
    half = x_BxLxNxH.shape[-1] // 2
    inv_freq = ROPE_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BxLx1xK = (positions_BxL.astype(jnp.float32)[..., None] * inv_freq)[:, :, None, :]
    sin, cos = jnp.sin(angles_BxLx1xK), jnp.cos(angles_BxLx1xK)
    x = x_BxLxNxH.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxLxNxH.dtype)


def attention_mask(segment_ids_BxL: jax.Array | None, length: int) -> jax.Array:
    """Boolean ``[B or 1, 1, L, L]``: causal, and (with segments) query and key in the same segment."""
    causal_LxL = jnp.tril(jnp.ones((length, length), jnp.bool_))
    if segment_ids_BxL is None:
        return causal_LxL[None, None]
    same_BxLxL = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
    return (same_BxLxL & causal_LxL)[:, None]


def manual_attention(q_BxLxNxH, k_BxLxNxH, v_BxLxNxH, mask_Bx1xLxL) -> jax.Array:
    """Softmax attention by einsums (scores and softmax in float32, matmuls in the inputs' dtype)."""
    dtype = q_BxLxNxH.dtype
    q = q_BxLxNxH * jnp.asarray(1.0 / math.sqrt(q_BxLxNxH.shape[-1]), dtype)
    scores_BxNxLxL = jnp.einsum("bqnh,bknh->bnqk", q, k_BxLxNxH, preferred_element_type=jnp.float32)
    scores_BxNxLxL = jnp.where(mask_Bx1xLxL, scores_BxNxLxL, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores_BxNxLxL, axis=-1).astype(dtype)
    return jnp.einsum("bnqk,bknh->bqnh", probs, v_BxLxNxH)


class Attention(nnx.Module):
    """Multi-head self-attention: fused q/k/v projection, optional RoPE, causal and segment mask."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        d, n, h = config.d_model, config.num_heads, config.head_dim
        dtype, param_dtype = DTYPES[config.dtype], DTYPES[config.param_dtype]
        self.config = config
        self.qkv = nnx.LinearGeneral(
            d, (3, n, h), dtype=dtype, param_dtype=param_dtype, kernel_init=_normal(INIT_STD),
            kernel_metadata=logical_axes("embed", None, "heads", "kv"), bias_metadata=logical_axes(None, "heads", "kv"),
            rngs=rngs)
        self.out = nnx.LinearGeneral(
            (n, h), d, axis=(-2, -1), dtype=dtype, param_dtype=param_dtype,
            kernel_init=_normal(INIT_STD / math.sqrt(2 * config.num_layers)),
            kernel_metadata=logical_axes("heads", "kv", "embed"), bias_metadata=logical_axes("norm"), rngs=rngs)

    def _project(self, x_BxLxD, positions_BxL):
        """Queries, keys and values ``[B, L, N, H]`` (RoPE applied to queries and keys)."""
        qkv_BxLx3xNxH = self.qkv(x_BxLxD)
        q, k, v = (constrain(qkv_BxLx3xNxH[:, :, i], ACT_HEADS) for i in range(3))
        if self.config.positions == "rope":
            q, k = rope(q, positions_BxL), rope(k, positions_BxL)
        return q, k, v

    def _attend(self, q_BxTxNxH, k_BxSxNxH, v_BxSxNxH, mask_Bx1xTxS, is_causal_only: bool):
        """Attention of ``T`` queries over ``S`` keys, then the output projection."""
        if self.config.attention == "xla" or (self.config.attention == "auto" and jax.default_backend() != "cpu"):
            if is_causal_only:
                o_BxTxNxH = jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxNxH, v_BxSxNxH, is_causal=True)
            else:
                o_BxTxNxH = jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxNxH, v_BxSxNxH, mask=mask_Bx1xTxS)
        else:
            o_BxTxNxH = manual_attention(q_BxTxNxH, k_BxSxNxH, v_BxSxNxH, mask_Bx1xTxS)
        return self.out(constrain(o_BxTxNxH, ACT_HEADS))

    def __call__(self, x_BxLxD, mask_Bx1xLxL, positions_BxL, is_causal_only: bool):
        q, k, v = self._project(x_BxLxD, positions_BxL)
        return self._attend(q, k, v, mask_Bx1xLxL, is_causal_only)

    def cached(self, x_BxTxD, positions_BxT, start_B, kv: KV, index, span: int):
        """Attention of ``T`` new tokens at cache slots ``index .. index+T-1`` over the cache ``kv``
        (``[B, N, S_max, H]`` each) and themselves; returns ``(out, kv)`` with their keys and values
        written into the cache.

        Row ``b`` sees the slots from ``start_B[b]`` to itself (causal); of the cache only the first
        ``span`` slots are read. The cache keeps heads before slots, so the matmuls read it in place
        (batch dims leading), and it is read before it is written, so the update happens in place
        inside a decode loop (no copy of the cache per token)."""
        q, k, v = self._project(x_BxTxD, positions_BxT)
        dtype, queries = q.dtype, q.shape[1]
        q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), dtype)
        slot_T = index + jnp.arange(queries)
        new_TxT = jnp.arange(queries)[None, :] <= jnp.arange(queries)[:, None]
        visible_new_Bx1xTxT = ((slot_T[None, None, :] >= start_B[:, None, None]) | jnp.eye(queries, dtype=bool)
                               ) & new_TxT
        scores = [jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32)]
        masks = [visible_new_Bx1xTxT[:, None]]
        if span:
            slot_S = jnp.arange(span)
            scores.insert(0, jnp.einsum("btnh,bnsh->bnts", q, kv.k[:, :, :span], preferred_element_type=jnp.float32))
            masks.insert(0, ((slot_S[None, :] >= start_B[:, None]) & (slot_S[None, :] < index))[:, None, None, :])
        scores_BxNxTxK = jnp.concatenate(
            [jnp.where(m, sc, jnp.finfo(jnp.float32).min) for sc, m in zip(scores, masks)], axis=-1)
        probs_BxNxTxK = jax.nn.softmax(scores_BxNxTxK, axis=-1).astype(dtype)
        o_BxTxNxH = jnp.einsum("bnts,bsnh->btnh", probs_BxNxTxK[..., span:], v)
        if span:
            o_BxTxNxH = o_BxTxNxH + jnp.einsum("bnts,bnsh->btnh", probs_BxNxTxK[..., :span], kv.v[:, :, :span])
        # The barrier orders the cache reads above before the writes below (else XLA copies the cache).
        o_BxTxNxH, k, v = jax.lax.optimization_barrier((o_BxTxNxH, k, v))
        kv = KV(*(constrain(jax.lax.dynamic_update_slice(c, new.swapaxes(1, 2).astype(c.dtype), (0, 0, index, 0)),
                            CACHE)
                  for c, new in ((kv.k, k), (kv.v, v))))
        return self.out(constrain(o_BxTxNxH, ACT_HEADS)), kv


class MLP(nnx.Module):
    """The feed-forward sub-layer: ``d_model -> d_ff`` (GELU, tanh approximation) ``-> d_model``."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        d, f = config.d_model, config.d_ff
        dtype, param_dtype = DTYPES[config.dtype], DTYPES[config.param_dtype]
        self.fc1 = nnx.Linear(d, f, dtype=dtype, param_dtype=param_dtype, kernel_init=_normal(INIT_STD),
                              kernel_metadata=logical_axes("embed", "mlp"), bias_metadata=logical_axes("mlp"),
                              rngs=rngs)
        self.fc2 = nnx.Linear(f, d, dtype=dtype, param_dtype=param_dtype,
                              kernel_init=_normal(INIT_STD / math.sqrt(2 * config.num_layers)),
                              kernel_metadata=logical_axes("mlp", "embed"), bias_metadata=logical_axes("norm"),
                              rngs=rngs)

    def __call__(self, x_BxLxD):
        h_BxLxF = constrain(jax.nn.gelu(self.fc1(x_BxLxD)), ("batch", "act_length", "act_mlp"))
        return self.fc2(h_BxLxF)


def _layer_norm(config: GPTConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(config.d_model, epsilon=LN_EPS, dtype=DTYPES[config.dtype],
                         param_dtype=DTYPES[config.param_dtype], scale_metadata=logical_axes("norm"),
                         bias_metadata=logical_axes("norm"), rngs=rngs)


class Block(nnx.Module):
    """One pre-norm transformer block: attention, then the MLP, each on a residual branch."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        self.ln1 = _layer_norm(config, rngs)
        self.attn = Attention(config, rngs=rngs)
        self.ln2 = _layer_norm(config, rngs)
        self.mlp = MLP(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout)

    def __call__(self, x_BxLxD, mask_Bx1xLxL, positions_BxL, is_causal_only, deterministic, rngs):
        attn = self.attn(self.ln1(x_BxLxD), mask_Bx1xLxL, positions_BxL, is_causal_only)
        x_BxLxD = constrain(x_BxLxD + self.dropout(attn, deterministic=deterministic, rngs=rngs), ACT_EMBED)
        return self._mlp(x_BxLxD, deterministic, rngs)

    def _mlp(self, x_BxLxD, deterministic, rngs):
        mlp = self.mlp(self.ln2(x_BxLxD))
        return constrain(x_BxLxD + self.dropout(mlp, deterministic=deterministic, rngs=rngs), ACT_EMBED)

    def cached(self, x_BxTxD, positions_BxT, start_B, kv: KV, index, span: int):
        """The block on ``T`` new tokens with a key-value cache (see :meth:`Attention.cached`)."""
        attn, kv = self.attn.cached(self.ln1(x_BxTxD), positions_BxT, start_B, kv, index, span)
        return self._mlp(constrain(x_BxTxD + attn, ACT_EMBED), True, None), kv


class GPT(nnx.Module):
    """Decoder-only transformer; ``model(inputs_BxL, ...)`` gives float32 logits ``[B, L, V]``."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        config.validate()
        self.config = config
        dtype, param_dtype = DTYPES[config.dtype], DTYPES[config.param_dtype]
        self.embed = nnx.Embed(config.vocab_size, config.d_model, dtype=dtype, param_dtype=param_dtype,
                               embedding_init=_normal(INIT_STD), embedding_metadata=logical_axes("vocab", "embed"),
                               rngs=rngs)
        if config.positions == "learned":
            self.pos_embed = nnx.Embed(config.max_len, config.d_model, dtype=dtype, param_dtype=param_dtype,
                                       embedding_init=_normal(INIT_STD),
                                       embedding_metadata=logical_axes("length", "embed"), rngs=rngs)
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.ln_f = _layer_norm(config, rngs)
        if not config.tie_embeddings:
            self.head = nnx.Linear(config.d_model, config.vocab_size, use_bias=False, dtype=dtype,
                                   param_dtype=param_dtype, kernel_init=_normal(INIT_STD),
                                   kernel_metadata=logical_axes("embed", "vocab"), rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout)

    def __call__(self, inputs_BxL, *, segment_ids_BxL=None, positions_BxL=None, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        return self._logits(self.hidden(inputs_BxL, segment_ids_BxL=segment_ids_BxL, positions_BxL=positions_BxL,
                                        deterministic=deterministic, rngs=rngs))

    def hidden(self, inputs_BxL, *, segment_ids_BxL=None, positions_BxL=None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
        """The last block's output ``[B, L, D]`` (before the final LayerNorm); ``__call__``'s arguments."""
        config = self.config
        _, length = inputs_BxL.shape
        if config.positions == "learned" and positions_BxL is None and length > config.max_len:
            raise ValueError(f"input length {length} exceeds GPTConfig.max_len {config.max_len}")
        if not deterministic and config.dropout > 0 and rngs is None:
            raise ValueError("GPT: dropout is on (deterministic=False) but no rngs were given")
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), inputs_BxL.shape)
        mask_Bx1xLxL = attention_mask(segment_ids_BxL, length)
        is_causal_only = segment_ids_BxL is None

        x_BxLxD = self.dropout(self._embed(inputs_BxL, positions_BxL), deterministic=deterministic, rngs=rngs)
        for block in self.blocks:
            x_BxLxD = block(x_BxLxD, mask_Bx1xLxL, positions_BxL, is_causal_only, deterministic, rngs)
        return x_BxLxD

    def features(self, inputs_BxL, *, segment_ids_BxL=None, positions_BxL=None) -> jax.Array:
        """The final hidden states ``[B, L, D]`` after the last LayerNorm (what the output head reads;
        a value head reads them too). Deterministic."""
        return self.ln_f(self.hidden(inputs_BxL, segment_ids_BxL=segment_ids_BxL, positions_BxL=positions_BxL))

    def cached(self, tokens_BxT, positions_BxT, start_B, cache: tuple[KV, ...], index, span: int
               ) -> tuple[jax.Array, tuple[KV, ...]]:
        """Logits ``[B, T, V]`` of ``T`` new tokens at cache slots ``index ..`` and the updated cache
        (one :class:`KV` per layer). Row ``b``'s tokens see the slots from ``start_B[b]`` on; only
        the first ``span`` cache slots are read (see :meth:`Attention.cached`). Deterministic (no
        dropout). Used by :mod:`sos_jax.models.sampler`."""
        x_BxTxD = self._embed(tokens_BxT, positions_BxT)
        out = []
        for block, kv in zip(self.blocks, cache):
            x_BxTxD, kv = block.cached(x_BxTxD, positions_BxT, start_B, kv, index, span)
            out.append(kv)
        return self._logits(x_BxTxD), tuple(out)

    def init_cache(self, batch: int, slots: int) -> tuple[KV, ...]:
        """An empty key-value cache (zeros, compute dtype): one ``KV`` of ``[batch, N, slots, H]`` per layer."""
        config = self.config
        shape = (batch, config.num_heads, slots, config.head_dim)
        zeros = lambda: constrain(jnp.zeros(shape, DTYPES[config.dtype]), CACHE)  # noqa: E731
        return tuple(KV(zeros(), zeros()) for _ in range(config.num_layers))

    def _embed(self, tokens_BxL, positions_BxL):
        x_BxLxD = self.embed(tokens_BxL)
        if self.config.positions == "learned":
            x_BxLxD = x_BxLxD + self.pos_embed(positions_BxL)
        return constrain(x_BxLxD.astype(DTYPES[self.config.dtype]), ACT_EMBED)

    def _logits(self, x_BxLxD):
        dtype = DTYPES[self.config.dtype]
        x_BxLxD = self.ln_f(x_BxLxD).astype(dtype)
        if self.config.tie_embeddings:
            table_VxD = self.embed.embedding[...].astype(dtype)
            logits_BxLxV = jnp.einsum("bld,vd->blv", x_BxLxD, table_VxD, preferred_element_type=jnp.float32)
        else:
            kernel_DxV = self.head.kernel[...].astype(dtype)
            logits_BxLxV = jnp.einsum("bld,dv->blv", x_BxLxD, kernel_DxV, preferred_element_type=jnp.float32)
        return constrain(logits_BxLxV.astype(jnp.float32), ("batch", "act_length", "act_vocab"))


def loss_and_metrics(logits_BxLxV: jax.Array, targets_BxL: jax.Array, weights_BxL: jax.Array
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted mean next-token cross-entropy (float32) and ``{"loss", "accuracy", "tokens"}``.

    ``tokens`` is the sum of the weights; with no weighted token the loss and accuracy are 0 (not NaN).
    Positions of weight 0 do not influence the result (their targets may be anything in range).
    """
    logits = logits_BxLxV.astype(jnp.float32)
    weights = weights_BxL.astype(jnp.float32)
    losses_BxL = optax.losses.softmax_cross_entropy_with_integer_labels(logits, targets_BxL)
    correct_BxL = (jnp.argmax(logits, axis=-1) == targets_BxL).astype(jnp.float32)
    tokens = jnp.sum(weights)
    denom = jnp.maximum(tokens, 1e-8)
    loss = jnp.sum(jnp.where(weights > 0, losses_BxL * weights, 0.0)) / denom
    accuracy = jnp.sum(correct_BxL * weights) / denom
    return loss, {"loss": loss, "accuracy": accuracy, "tokens": tokens}
