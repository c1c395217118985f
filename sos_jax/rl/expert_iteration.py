"""Expert iteration: STaR / ReST (keep solved samples, fine-tune) and Guided-ReST (edit, continue).

One round: the current policy samples traces for the round's problems (``Rollouts``; generation
stops after the goal line, so a solved trace is already cut after it); the solved ones are kept;
the pretrained model (not the previous round's) is fine-tuned on them with the supervised train
step of pretraining (``BOS + trace + EOS``, one trace per row). Guided-ReST adds, for each unsolved
sample, up to ``guide_rounds`` rounds of :func:`sos_jax.rl.guided.guide` (edit the trace towards
the known optimal solution) and sampling a continuation of the edited prefix within the sample's
remaining token budget; the continuations that solve are kept too.

On several processes every process holds every sample on the host (``distributed.fetch``), so
all of them keep, edit and fine-tune on the same traces.
"""

from __future__ import annotations

import math
import random
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sos_jax import distributed
from sos_jax.rl.rollout import Rollout
from sos_jax.tokenizers import countdown as tok


def solved_traces(rollout: Rollout, budget_R: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The solved rows' traces (the sequence without ``BOS``, cut after the goal line) as host
    arrays ``(traces_TxW, lengths_T)``; with ``budget_R``, rows that generated more tokens than
    their budget do not count as solved."""
    host = distributed.fetch(rollout)
    keep = np.asarray(host.solved_R, bool)
    if budget_R is not None:
        keep &= np.asarray(host.lengths_R) <= budget_R
    lengths = (host.prompt_lengths_R + host.lengths_R - 1)[keep]
    return np.asarray(host.tokens_RxL[keep, 1:], np.int32), np.asarray(lengths, np.int32)


def texts(rollout: Rollout) -> list[str]:
    """Each row's trace text (the sequence without ``BOS``)."""
    host = distributed.fetch(rollout)
    return tok.decode_batch(host.tokens_RxL[:, 1:], host.prompt_lengths_R + host.lengths_R - 1)


def guided_prompts(texts_R: list[str], nums_RxK, target_R, solutions: list, rng: random.Random
                   ) -> tuple[list[list[int]], list[int]]:
    """For each row: ``BOS`` + the Guided-ReST edit of its trace, as ids, and how many of those ids
    follow the root line (they count against the row's token budget)."""
    from sos_jax.rl.guided import guide

    prompts, spent = [], []
    for text, nums, target, solution in zip(texts_R, nums_RxK, target_R, solutions):
        ids = [tok.BOS] + tok.encode(guide(text, [int(n) for n in nums], int(target), solution, rng))
        prompts.append(ids)
        root = 1 + len(tok.encode(text.split("\n", 1)[0] + "\n"))
        spent.append(max(len(ids) - root, 0))
    return prompts, spent


def guided_traces(cont, params, rollout: Rollout, nums_RxK, target_R, solutions: list, *, max_new: int, rounds: int,
                  rng: random.Random, key) -> tuple[np.ndarray, np.ndarray]:
    """Guided-ReST on one rollout (one row per sample): each unsolved row with a known solution is
    edited and continued by ``cont`` (a ``Rollouts`` of one sample per row, prompts up to its
    ``prompt_len``) within its budget of ``max_new`` generated tokens, for up to ``rounds`` rounds;
    returns the traces that solve, as :func:`solved_traces` does. An edit that adds the goal line
    solves by itself and is kept as it is."""
    pending = ~np.asarray(distributed.fetch(rollout.solved_R), bool) & np.asarray([s is not None for s in solutions])
    row_texts = texts(rollout)
    kept_traces, kept_lengths = [], []
    for guide_round in range(rounds):
        if not pending.any():
            break
        ids, used = guided_prompts(row_texts, nums_RxK, target_R, solutions, rng)
        budget = max_new - np.asarray(used)
        pending &= budget >= 0
        edited = pending & np.asarray([row[-1] == tok.GOAL for row in ids])
        if edited.any():
            traces, lengths = pad_rows([row[1:] for row, ok in zip(ids, edited) if ok], max(map(len, ids)))
            kept_traces.append(traces)
            kept_lengths.append(lengths)
        pending &= ~edited & (budget > 0) & np.asarray([len(row) <= cont.sampler.prompt_len for row in ids])
        prompts, lengths = pad_rows([row if ok else row[:1] for row, ok in zip(ids, pending)], cont.sampler.prompt_len)
        result = cont(params, prompts, lengths, nums_RxK, target_R, jax.random.fold_in(key, guide_round))
        solved = np.asarray(distributed.fetch(result.solved_R), bool) & pending
        traces, lengths = solved_traces(result.replace(solved_R=solved), budget)
        kept_traces.append(traces)
        kept_lengths.append(lengths)
        pending &= ~solved
        row_texts = texts(result)
    return stack(kept_traces, kept_lengths)


def stack(traces: list[np.ndarray], lengths: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Trace arrays of different widths as one ``(traces_TxW, lengths_T)`` pair."""
    width = max((t.shape[1] for t in traces), default=1)
    padded = [np.pad(t, ((0, 0), (0, width - t.shape[1])), constant_values=tok.PAD) for t in traces]
    return (np.concatenate(padded) if padded else np.zeros((0, width), np.int32)), (
        np.concatenate(lengths) if lengths else np.zeros((0,), np.int32))


def pad_rows(rows: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``[N, width]`` ids and their lengths."""
    out = np.full((len(rows), width), tok.PAD, np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out, np.asarray([len(r) for r in rows], np.int32)


def finetune(base_params, rest, graphdef, traces_TxW: np.ndarray, lengths_T: np.ndarray, *, tx, lr, mesh, batch: int,
             seq_len: int, epochs: int, seed: int, bar=None) -> tuple[Any, dict[str, float]]:
    """Fine-tunes ``base_params`` for ``epochs`` passes over the traces (``batch`` per step, one per
    row, shuffled each epoch; the last step of an epoch wraps around); returns the parameters and
    ``{"steps", "loss"}`` (the last step's loss)."""
    from sos_jax import parallel
    from sos_jax.data.online import pack_traces
    from sos_jax.train import step

    count = len(lengths_T)
    if count == 0:
        return base_params, {"steps": 0, "loss": float("nan")}
    model = nnx.merge(graphdef, jax.tree.map(jnp.copy, base_params), rest)  # the train step donates its state
    graphdef, rest, state = step.init_state(model, tx, seed, mesh)
    steps = step.compile_steps(graphdef, rest, state, tx, lr, mesh, batch_shape=(batch, seq_len), accum=1,
                               dropout=False)
    pack = jax.jit(lambda t, n: pack_traces(t, n, rows=batch, seq_len=seq_len, packing=False, mask_prompt=False)[0],
                   out_shardings=parallel.batch_sharding(mesh))
    rng = np.random.default_rng(seed)
    per_epoch = math.ceil(count / batch)
    metrics = {}
    for _ in range(epochs):
        order = rng.permutation(count)
        for i in range(per_epoch):
            rows = order[np.arange(i * batch, (i + 1) * batch) % count]
            state, metrics = steps.train(state, pack(traces_TxW[rows], lengths_T[rows]))  # host rows, every process
            if bar is not None:
                bar.update(1)
    return state["params"], {"steps": epochs * per_epoch, "loss": float(distributed.fetch(metrics["loss"]))}
