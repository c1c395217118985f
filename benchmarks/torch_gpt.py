"""The sos_jax GPT in PyTorch, for the benchmarks' baselines: a plain torch model and Hugging Face GPT-2.

``PlainGPT(config)`` is the same architecture as ``sos_jax.models.gpt.GPT`` (pre-LayerNorm blocks,
fused q/k/v, GELU (tanh) MLP, learned positions or half-split RoPE, tied or untied head) with a
preallocated KV cache for greedy generation; ``plain_gpt_from_sos`` copies a sos_jax model's weights
into it. ``hf_gpt2_from_sos`` builds a ``transformers.GPT2LMHeadModel`` with the same weights (learned
positions only: GPT-2 has no rotary embeddings). Both then compute the same logits as the sos_jax
model, in float32. Importing this module needs torch; ``transformers`` only when GPT-2 is built.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LN_EPS = 1e-5
ROPE_BASE = 10000.0
INIT_STD = 0.02
# PlainGPT's nn.Linear weights ([out, in]): the transposes of the [in, out] kernels sos_weights gives.
LINEAR_WEIGHTS = ("qkv.weight", "out.weight", "fc1.weight", "fc2.weight", "head.weight")


def rope(x_BxNxLxH: torch.Tensor, positions_L: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, half-split layout, base 10000 (as ``sos_jax.models.gpt.rope``)."""
    half = x_BxNxLxH.shape[-1] // 2
    inv_freq = ROPE_BASE ** (-torch.arange(half, dtype=torch.float32) / half)
    angles_LxK = positions_L.to(torch.float32)[:, None] * inv_freq
    sin, cos = torch.sin(angles_LxK), torch.cos(angles_LxK)
    x = x_BxNxLxH.float()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x_BxNxLxH.dtype)


class Block(nn.Module):
    """One pre-norm block; with a cache, writes this call's keys and values at ``start`` and attends to all so far."""

    def __init__(self, config):
        super().__init__()
        d = config.d_model
        self.num_heads, self.rotary = config.num_heads, config.positions == "rope"
        self.ln1 = nn.LayerNorm(d, eps=LN_EPS)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=LN_EPS)
        self.fc1 = nn.Linear(d, config.d_ff)
        self.fc2 = nn.Linear(config.d_ff, d)

    def forward(self, x_BxLxD, positions_L, cache_2xBxNxTxH=None):
        b, length, d = x_BxLxD.shape
        q, k, v = self.qkv(self.ln1(x_BxLxD)).view(b, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if self.rotary:
            q, k = rope(q, positions_L), rope(k, positions_L)
        if cache_2xBxNxTxH is not None:
            start = int(positions_L[0])
            end = start + length
            cache_2xBxNxTxH[0, :, :, start:end] = k
            cache_2xBxNxTxH[1, :, :, start:end] = v
            k, v = cache_2xBxNxTxH[0, :, :, :end], cache_2xBxNxTxH[1, :, :, :end]
        # A multi-token call starts at position 0 (checked in PlainGPT.forward), so its queries and keys align.
        o = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1)
        x_BxLxD = x_BxLxD + self.out(o.transpose(1, 2).reshape(b, length, d))
        return x_BxLxD + self.fc2(F.gelu(self.fc1(self.ln2(x_BxLxD)), approximate="tanh"))


class PlainGPT(nn.Module):
    """The sos_jax GPT in plain PyTorch (same parameters, GPT-2 init); ``greedy`` decodes with a KV cache."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embed = nn.Embedding(config.max_len, config.d_model) if config.positions == "learned" else None
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        self.ln_f = nn.LayerNorm(config.d_model, eps=LN_EPS)
        self.head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                scaled = name.endswith(("out.weight", "fc2.weight"))
                nn.init.normal_(p, std=INIT_STD / math.sqrt(2 * config.num_layers) if scaled else INIT_STD)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids_BxL, start: int = 0, cache=None):
        """Logits ``[B, L, V]`` of tokens at positions ``start..``; ``cache`` (``new_cache``) holds earlier keys."""
        length = ids_BxL.shape[1]
        if length > 1 and start:
            raise ValueError("PlainGPT: a call of several tokens must start at position 0")
        positions_L = torch.arange(start, start + length, device=ids_BxL.device)
        x = self.embed(ids_BxL)
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions_L)
        for i, block in enumerate(self.blocks):
            x = block(x, positions_L, None if cache is None else cache[i])
        x = self.ln_f(x)
        return x @ self.embed.weight.T if self.head is None else self.head(x)

    def new_cache(self, batch: int, length: int) -> list[torch.Tensor]:
        """An empty KV cache of ``length`` positions: one ``[2, B, heads, length, head_dim]`` tensor per block."""
        c = self.config
        shape = (2, batch, c.num_heads, length, c.d_model // c.num_heads)
        return [torch.zeros(shape, dtype=self.embed.weight.dtype, device=self.embed.weight.device) for _ in self.blocks]

    @torch.inference_mode()
    def greedy(self, ids_BxP: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """The ``new_tokens`` argmax continuations ``[B, new_tokens]`` of a prompt (prefill, then one token a step)."""
        batch, prompt_len = ids_BxP.shape
        cache = self.new_cache(batch, prompt_len + new_tokens)
        logits = self(ids_BxP, 0, cache)
        tokens = []
        for i in range(new_tokens):
            token_Bx1 = logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(token_Bx1)
            if i + 1 < new_tokens:
                logits = self(token_Bx1, prompt_len + i, cache)
        return torch.cat(tokens, dim=1)


def baseline_device(backend: str) -> tuple[torch.device | None, str | None]:
    """The torch device of the baseline on JAX's ``backend`` (``cpu``, or ``cuda`` for ``gpu``), or
    None and why not. On CUDA, float32 matmuls may use TF32, as JAX's default precision does there."""
    if backend == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
        return torch.device("cpu"), None
    if backend == "gpu" and torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
        return torch.device("cuda"), None
    return None, f"no torch device for JAX backend {backend!r} (torch baselines run on the CPU or a CUDA GPU)"


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (so that wall time measures it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sos_weights(params, config) -> dict[str, np.ndarray]:
    """A sos_jax model's (or its state's) weights as float32 arrays, named as ``PlainGPT``'s parameters.

    ``params``: an ``nnx.Module``, an ``nnx.State`` or its pure dict. Linear kernels keep sos_jax's
    ``[in, out]`` orientation (flattened to 2-D), which is torch's Conv1D layout and the transpose of
    ``nn.Linear.weight``.
    """
    from flax import nnx

    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    if isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)

    def get(*path) -> np.ndarray:
        node = params
        for key in path:
            node = node[key]
        return np.array(node, dtype=np.float32)  # a writable copy, as torch.from_numpy wants

    d, f = config.d_model, config.d_ff
    out = {"embed.weight": get("embed", "embedding")}
    if config.positions == "learned":
        out["pos_embed.weight"] = get("pos_embed", "embedding")
    for i in range(config.num_layers):
        layer = {
            "ln1.weight": get("blocks", i, "ln1", "scale"), "ln1.bias": get("blocks", i, "ln1", "bias"),
            "qkv.weight": get("blocks", i, "attn", "qkv", "kernel").reshape(d, 3 * d),
            "qkv.bias": get("blocks", i, "attn", "qkv", "bias").reshape(3 * d),
            "out.weight": get("blocks", i, "attn", "out", "kernel").reshape(d, d),
            "out.bias": get("blocks", i, "attn", "out", "bias"),
            "ln2.weight": get("blocks", i, "ln2", "scale"), "ln2.bias": get("blocks", i, "ln2", "bias"),
            "fc1.weight": get("blocks", i, "mlp", "fc1", "kernel").reshape(d, f),
            "fc1.bias": get("blocks", i, "mlp", "fc1", "bias"),
            "fc2.weight": get("blocks", i, "mlp", "fc2", "kernel").reshape(f, d),
            "fc2.bias": get("blocks", i, "mlp", "fc2", "bias"),
        }
        out.update({f"blocks.{i}.{name}": value for name, value in layer.items()})
    out["ln_f.weight"], out["ln_f.bias"] = get("ln_f", "scale"), get("ln_f", "bias")
    if not config.tie_embeddings:
        out["head.weight"] = get("head", "kernel")
    return out


def plain_gpt_from_sos(params, config) -> PlainGPT:
    """``PlainGPT(config)`` holding a sos_jax model's weights (``params`` as for ``sos_weights``), in eval mode."""
    weights = sos_weights(params, config)
    state = {name: torch.from_numpy(w.T.copy() if name.endswith(LINEAR_WEIGHTS) else w)
             for name, w in weights.items()}
    model = PlainGPT(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def hf_gpt2_config(config):
    """The ``transformers.GPT2Config`` of a learned-position sos_jax config (no dropout, no EOS, no BOS)."""
    from transformers import GPT2Config

    if config.positions != "learned":
        raise ValueError(f"GPT-2 has learned positions only; this model uses positions={config.positions!r}")
    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.max_len, n_embd=config.d_model,
                      n_layer=config.num_layers, n_head=config.num_heads, n_inner=config.d_ff,
                      activation_function="gelu_new", layer_norm_epsilon=LN_EPS, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=config.tie_embeddings,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)


def hf_gpt2_from_sos(params, config):
    """A ``transformers.GPT2LMHeadModel`` holding a sos_jax model's weights (``params`` as for ``sos_weights``).

    GPT-2 is the same function as the learned-position sos_jax GPT: its Conv1D weights are sos_jax's
    ``[in, out]`` kernels as they are, and the tied head shares the token embedding. In eval mode.
    """
    from transformers import GPT2LMHeadModel

    hf_config = hf_gpt2_config(config)
    weights = sos_weights(params, config)
    block_names = {"ln1": "ln_1", "qkv": "attn.c_attn", "out": "attn.c_proj", "ln2": "ln_2",
                   "fc1": "mlp.c_fc", "fc2": "mlp.c_proj"}
    state = {"transformer.wte.weight": weights["embed.weight"], "transformer.wpe.weight": weights["pos_embed.weight"],
             "transformer.ln_f.weight": weights["ln_f.weight"], "transformer.ln_f.bias": weights["ln_f.bias"],
             "lm_head.weight": weights.get("head.weight", weights["embed.weight"].T).T}
    for i in range(config.num_layers):
        for ours, theirs in block_names.items():
            for kind in ("weight", "bias"):
                state[f"transformer.h.{i}.{theirs}.{kind}"] = weights[f"blocks.{i}.{ours}.{kind}"]
    model = GPT2LMHeadModel(hf_config)
    model.load_state_dict({name: torch.from_numpy(np.ascontiguousarray(w)) for name, w in state.items()}, strict=True)
    return model.eval()


@torch.inference_mode()
def hf_greedy(model, ids_BxP: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """The ``new_tokens`` greedy continuations ``[B, new_tokens]`` of a Hugging Face causal LM (``generate``, KV cache).

    The model has no EOS (``hf_gpt2_config``), so no row stops early and no token is suppressed.
    """
    out = model.generate(ids_BxP, attention_mask=torch.ones_like(ids_BxP), max_new_tokens=new_tokens,
                         do_sample=False, use_cache=True, pad_token_id=0)
    return out[:, ids_BxP.shape[1]:]
