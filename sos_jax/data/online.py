"""The online source: training batches drawn straight from the on-device generator, no files.

``online_batches(spec, targets, ...)`` returns an iterator of global batches in the layout of
``sos_jax.data.batch`` (``inputs``, ``targets``, ``weights``, ``segment_ids``, ``positions``, each
``[B, L]``). Step ``s`` samples the fresh problems with global indices ``[s*T, (s+1)*T)``
(``T = traces_per_step``) from ``seed``, searches them, writes their traces and turns them into
packed (or padded) rows, all in one compiled call per step:

- every device of the mesh's batch axes (``data``, ``fsdp``) takes its own ``T / D`` consecutive
  indices (device ``d``: ``s*T + d*T/D + [0, T/D)``) and fills its own ``B / D`` rows, with no
  communication; other mesh axes (``tensor``) hold copies. The output arrays are sharded as
  ``parallel.batch_sharding(mesh)``;
- a batch depends only on ``(seed, s)`` and the arguments, so the stream resumes from a step count
  (``start_step``, ``get_state`` / ``set_state``, or orbax ``save_checkpointables``);
- packing (``packing=True``) is greedy first-fit in index order within each device's shard (as
  the grain pipeline packs): each trace goes into the first of the device's rows with room; traces
  that fit nowhere are dropped (and counted). ``first_fit=False`` packs next-fit instead (a trace
  that does not fit opens the next row; emptier rows). So the packed rows depend on the number of
  batch-axis devices (each device packs its own traces); the padded rows (``packing=False``, one
  trace per row, ``T = B``) do not.

Traces are written with ``max_len = seq_len``: a longer trace arrives cut to its first ``seq_len``
tokens (its example then has no ``EOS``). ``OnlineBatches.stats()`` reports per-step counts (traces
packed, dropped, truncated) and the fill rate.
"""

from __future__ import annotations

import functools
import json
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from sos_jax import parallel
from sos_jax.data import batch as batch_lib
from sos_jax.envs import countdown as env
from sos_jax.search import countdown as search
from sos_jax.tokenizers import countdown as tok

__all__ = ["OnlineBatches", "online_batches", "pack_traces", "expected_example_length", "default_traces_per_step",
           "STAT_NAMES", "STATE_FILE"]

STRATEGIES = ("sos", "ot")
MIN_SEQ_LEN = 64  # as the generate job's max_len: room for the prompt line of any spec
STATE_FILE = "online_batches.json"
STAT_NAMES = ("traces", "packed", "dropped", "not_found", "truncated", "tokens", "loss_tokens")
INT32_MAX = 2**31 - 1

# Full trace lengths in tokens (before any cut): quantiles 0, 1/32, ..., 1 of the traces of 1,024
# problems (3-4 numbers; 512 for "ot" 5, 256 for "sos" 5 and "ot" 6) in the reference ranges
# (numbers 1..99, targets 10..100, seen split), seed 123.
LENGTH_QUANTILES = {
    ("sos", 3): (12, 88, 90, 90, 90, 92, 93, 97, 97, 97, 121, 129, 131, 147, 175, 197, 210, 230, 241, 261, 285, 303,
                 332, 345, 361, 382, 395, 419, 450, 518, 658, 819, 1289),
    ("sos", 4): (15, 17, 161, 175, 179, 208, 225, 231, 352, 386, 476, 592, 713, 918, 955, 1002, 1198, 1379, 1498,
                 1664, 1889, 2344, 2602, 2762, 3118, 3719, 4605, 4920, 6907, 7443, 9041, 11802, 22737),
    ("sos", 5): (18, 19, 20, 278, 326, 346, 490, 662, 1382, 2244, 2350, 2433, 2801, 4164, 6206, 8908, 9268, 9671,
                 10950, 14806, 21033, 22029, 22460, 23437, 34227, 41824, 43195, 44918, 71731, 104512, 204488, 316767,
                 559648),
    ("ot", 3): (67, 75, 78, 78, 80, 80, 80, 80, 80, 80, 82, 82, 83, 83, 83, 83, 83, 87, 87, 87, 87, 87, 87, 87, 87,
                87, 87, 89, 90, 94, 94, 94, 107),
    ("ot", 4): (130, 141, 144, 145, 146, 148, 150, 150, 151, 151, 152, 155, 155, 155, 155, 155, 155, 157, 157, 159,
                162, 162, 162, 162, 162, 164, 166, 169, 172, 173, 179, 184, 198),
    ("ot", 5): (214, 226, 230, 233, 234, 237, 238, 239, 240, 241, 244, 245, 245, 247, 248, 248, 249, 251, 253, 255,
                258, 260, 262, 264, 267, 269, 272, 275, 280, 287, 291, 299, 319),
    ("ot", 6): (316, 334, 341, 344, 346, 348, 352, 355, 356, 359, 359, 362, 364, 367, 369, 372, 373, 375, 378, 380,
                382, 384, 386, 389, 393, 399, 404, 412, 415, 418, 426, 433, 460),
}

# 1 on the ids whose text ends a line (the prompt ends at the first of them).
_LINE_END_V = np.zeros(tok.VOCAB_SIZE, bool)
_LINE_END_V[batch_lib.LINE_END_IDS] = True


# ------------------------------------------------------------------------------------------------
# Packing (pure JAX, one device's rows)
# ------------------------------------------------------------------------------------------------


def _next_fit(size_T: jax.Array, rows: int, seq_len: int):
    """Row, offset and segment index (0-based, within the row) of each trace, next-fit in order.

    A trace that does not fit in the current row opens the next one; a trace whose row is past the
    last is dropped (row >= ``rows``). A trace of size 0 takes no room and never opens a row.
    """

    def place(carry, size):
        row, offset, segment = carry
        fits = offset + size <= seq_len
        row = jnp.where(fits, row, row + 1)
        offset = jnp.where(fits, offset, 0)
        segment = jnp.where(fits, segment, 0)
        return (row, offset + size, segment + (size > 0)), (row, offset, segment)

    zero = jnp.zeros((), jnp.int32)
    _, (row_T, offset_T, segment_T) = jax.lax.scan(place, (zero, zero, zero), size_T)
    return row_T, offset_T, segment_T


def _first_fit(size_T: jax.Array, rows: int, seq_len: int):
    """As ``_next_fit``, but each trace goes into the first row with room for it (row ``rows``: none)."""

    def place(carry, size):
        used_R, count_R = carry
        fits_R = used_R + size <= seq_len
        row = jnp.where(fits_R.any() & (size > 0), jnp.argmax(fits_R), rows).astype(jnp.int32)
        hit_R = jnp.arange(rows) == row
        out = (row, jnp.where(hit_R, used_R, 0).sum(), jnp.where(hit_R, count_R, 0).sum())
        return (used_R + jnp.where(hit_R, size, 0), count_R + hit_R), out

    zeros_R = jnp.zeros((rows,), jnp.int32)
    _, (row_T, offset_T, segment_T) = jax.lax.scan(place, (zeros_R, zeros_R), size_T)
    return row_T, offset_T, segment_T


def _prompt_lengths(tokens_TxW: jax.Array, length_T: jax.Array) -> jax.Array:
    """Tokens in each trace's first line, through its first line-ending token (as ``batch.COUNTDOWN.prompt_length``)."""
    column_W = jnp.arange(tokens_TxW.shape[1], dtype=jnp.int32)
    is_end_TxW = jnp.asarray(_LINE_END_V)[tokens_TxW] & (column_W[None, :] < length_T[:, None])
    return jnp.where(is_end_TxW.any(axis=1), jnp.argmax(is_end_TxW, axis=1).astype(jnp.int32) + 1, length_T)


def pack_traces(tokens_TxW: jax.Array, length_T: jax.Array, keep_T: jax.Array | None = None, *, rows: int,
                seq_len: int, packing: bool, mask_prompt: bool, first_fit: bool = False
                ) -> tuple[dict[str, jax.Array], jax.Array]:
    """Turns traces into ``rows`` training rows of ``seq_len`` tokens, on device (jittable).

    Trace ``t`` is ``tokens_TxW[t, :length_T[t]]``; its example is ``min(length + 1, seq_len)``
    tokens, exactly ``batch.example(trace, seq_len=seq_len, mask_prompt=mask_prompt)``. With
    ``packing`` the examples go into the rows greedy next-fit in trace order (a trace that does not
    fit in the current row opens the next one; once the rows are full the rest are dropped), or
    with ``first_fit`` each into the first row with room (the rest dropped); without ``packing``
    trace ``t`` fills row ``t`` alone (then ``T`` must equal ``rows``). Traces with ``keep_T``
    false are skipped. Returns the batch dict (keys and dtypes of ``batch.BATCH_KEYS``, each
    ``[rows, seq_len]``, zero on padding) and ``packed_T``, whether each trace got a place.
    """
    num_traces, width = tokens_TxW.shape
    length_T = length_T.astype(jnp.int32)
    size_T = jnp.minimum(length_T + 1, seq_len)
    if keep_T is not None:
        size_T = jnp.where(keep_T, size_T, 0)
    if packing:
        row_T, offset_T, segment_T = (_first_fit if first_fit else _next_fit)(size_T, rows, seq_len)
    else:
        if num_traces != rows:
            raise ValueError(f"pack_traces: padding puts one trace per row, got {num_traces} traces for {rows} rows")
        row_T = jnp.arange(num_traces, dtype=jnp.int32)
        offset_T = segment_T = jnp.zeros((num_traces,), jnp.int32)
    packed_T = (row_T < rows) & (size_T > 0)

    # Flat start of each placed trace (the end for the others), in ascending order; then for each
    # output position the trace covering it: the last one starting at or before it.
    start_T = jnp.where(packed_T, row_T * seq_len + offset_T, rows * seq_len)
    order_T = jnp.argsort(start_T, stable=True).astype(jnp.int32)
    pos_P = jnp.arange(rows * seq_len, dtype=jnp.int32)
    rank_P = jnp.clip(jnp.searchsorted(start_T[order_T], pos_P, side="right") - 1, 0, num_traces - 1)
    trace_P = order_T[rank_P]
    j_P = pos_P - start_T[trace_P]  # position within the trace's example
    real_P = packed_T[trace_P] & (j_P >= 0) & (j_P < size_T[trace_P])

    tokens_flat = tokens_TxW.reshape(-1)
    base_P = trace_P * width
    length_P = length_T[trace_P]
    inputs_P = jnp.where(j_P == 0, tok.BOS, tokens_flat[base_P + jnp.clip(j_P - 1, 0, width - 1)])
    targets_P = jnp.where(j_P < length_P, tokens_flat[base_P + jnp.clip(j_P, 0, width - 1)], tok.EOS)
    counted_P = real_P
    if mask_prompt:
        counted_P = counted_P & (j_P >= _prompt_lengths(tokens_TxW, length_T)[trace_P])
    out = {
        "inputs": jnp.where(real_P, inputs_P, tok.PAD),
        "targets": jnp.where(real_P, targets_P, tok.PAD),
        "weights": counted_P,
        "segment_ids": jnp.where(real_P, segment_T[trace_P] + 1, 0),
        "positions": jnp.where(real_P, j_P, 0),
    }
    batch = {k: out[k].astype(batch_lib.BATCH_DTYPES[k]).reshape(rows, seq_len) for k in batch_lib.BATCH_KEYS}
    return batch, packed_T


# ------------------------------------------------------------------------------------------------
# The compiled step
# ------------------------------------------------------------------------------------------------


def _device_step(seed, targets_T, first_index, *, spec, strategy, mix, seq_len, rows, traces, packing, first_fit,
                 mask_prompt, batch_axes):
    """One device's rows of a step: its problem indices, their traces, packed. Runs under shard_map."""
    shard = jax.lax.axis_index(batch_axes) if batch_axes else 0
    index_T = first_index + shard * traces + jnp.arange(traces, dtype=jnp.int32)
    _, found_T, tr = search.generate(jax.random.key(seed), index_T, targets_T, spec=spec, strategy=strategy,
                                     max_len=seq_len, mix=mix)
    batch, packed_T = pack_traces(tr.tokens, tr.length, found_T, rows=rows, seq_len=seq_len, packing=packing,
                                  first_fit=first_fit, mask_prompt=mask_prompt)
    stats_K = jnp.stack([
        jnp.int32(traces),
        packed_T.sum(),
        (found_T & ~packed_T).sum(),
        (~found_T).sum(),
        (packed_T & tr.truncated).sum(),
        (batch["segment_ids"] > 0).sum(),
        (batch["weights"] > 0).sum(),
    ]).astype(jnp.int32)
    return batch, stats_K[None, :]


@functools.lru_cache(maxsize=16)
def _compiled_step(spec, targets: tuple[int, ...], mesh, *, strategy: str, mix, seq_len: int, rows: int,
                   traces: int, packing: bool, first_fit: bool, mask_prompt: bool):
    """The AOT-compiled step ``(seed, targets_T, first_index) -> (batch, stats_DxK)``."""
    out_spec = parallel.batch_sharding(mesh).spec
    batch_axes = tuple(a for a in mesh.axis_names if a in parallel.BATCH_AXES)  # as batch_sharding orders them
    fn = functools.partial(_device_step, spec=spec, strategy=strategy, mix=mix, seq_len=seq_len, rows=rows,
                           traces=traces,
                           packing=packing, first_fit=first_fit, mask_prompt=mask_prompt, batch_axes=batch_axes)
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=(PartitionSpec(),) * 3, out_specs=(out_spec, out_spec),
                           check_vma=False)
    replicated = NamedSharding(mesh, PartitionSpec())
    args = (jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
            jax.ShapeDtypeStruct((len(targets),), jnp.int32, sharding=replicated),
            jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated))
    return jax.jit(mapped).lower(*args).compile()


# ------------------------------------------------------------------------------------------------
# Defaults
# ------------------------------------------------------------------------------------------------


def expected_example_length(spec: env.CountdownSpec, strategy: str, seq_len: int) -> float:
    """Estimated mean example length ``E[min(trace length + 1, seq_len)]`` in tokens.

    From ``LENGTH_QUANTILES``, measured in the reference ranges for ``spec.num_count`` numbers; the
    nearest measured count stands in for the others. Other number or target ranges change the
    lengths: pass ``traces_per_step`` explicitly there and check ``OnlineBatches.stats()``.
    """
    counts = sorted(n for s, n in LENGTH_QUANTILES if s == strategy)
    if not counts:
        raise ValueError(f"strategy={strategy!r}: must be one of {', '.join(STRATEGIES)}")
    nearest = min(counts, key=lambda n: abs(n - spec.num_count))
    q = np.asarray(LENGTH_QUANTILES[(strategy, nearest)], np.float64)
    clipped = np.minimum(q + 1, seq_len)
    return float((clipped[:-1] + clipped[1:]).mean() / 2)  # trapezoid rule over the quantiles


def default_traces_per_step(spec: env.CountdownSpec, strategy: str, *, seq_len: int, global_batch_size: int,
                            packing: bool, num_shards: int, block: int = 2) -> int:
    """``traces_per_step`` when none is given.

    Padding: ``global_batch_size`` (one trace per row). Packing: per device,
    ``ceil(rows * seq_len / expected_example_length)`` rounded up to whole ``block``s (of the SoS
    mix; 1 for "ot"), times the ``num_shards`` devices. Packing leaves gaps at the row ends, so this
    over-supplies slightly in the usual case: rows fill and the surplus traces are dropped.
    """
    if not packing:
        return global_batch_size
    rows = global_batch_size // num_shards
    per_device = math.ceil(rows * seq_len / expected_example_length(spec, strategy, seq_len))
    per_device = -(-per_device // block) * block
    return per_device * num_shards


# ------------------------------------------------------------------------------------------------
# The iterator
# ------------------------------------------------------------------------------------------------


class OnlineBatches:
    """Iterator of global batches made on device, step by step; resumable from its step count.

    ``next(it)`` dispatches step ``it.step`` (asynchronously: the arrays are futures) and
    advances. ``batch_at(s)`` makes step ``s`` without moving. ``stats()`` reports on the last
    batch made. ``get_state``/``set_state`` and the async ``save``/``load`` (orbax v1
    ``StatefulCheckpointable``) carry the step count. Build it with ``online_batches``.
    """

    def __init__(self, compiled, *, targets, mesh, seed: int, global_batch_size: int, seq_len: int,
                 traces_per_step: int, start_step: int, compile_s: float):
        self._compiled = compiled
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self._seed = _replicated(np.int32(seed), self._replicated)
        self._targets_T = _replicated(np.asarray(targets, np.int32), self._replicated)
        self._last_stats = None
        self.mesh = mesh
        self.seed = seed
        self.global_batch_size = global_batch_size
        self.seq_len = seq_len
        self.traces_per_step = traces_per_step
        self.compile_s = compile_s  # about 0 when the compiled step came from the cache
        self.step = start_step

    def __iter__(self) -> "OnlineBatches":
        return self

    def __next__(self) -> dict[str, jax.Array]:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def batch_at(self, step: int) -> dict[str, jax.Array]:
        """The batch of step ``step`` (problems ``[step*T, (step+1)*T)``); the iterator does not move."""
        _check_step(step, self.traces_per_step, "step")
        first_index = _replicated(np.int32(step * self.traces_per_step), self._replicated)
        batch, stats_DxK = self._compiled(self._seed, self._targets_T, first_index)
        self._last_stats = (step, stats_DxK)
        return batch

    def stats(self) -> dict[str, Any] | None:
        """Counts of the last batch made (blocks until it is ready), or None before the first.

        ``traces`` generated, ``packed`` into rows, ``dropped`` (no room left), ``not_found`` (no
        solvable numbers for the target; skipped), ``truncated`` (packed but cut at ``seq_len``),
        ``tokens`` (non-padding) and ``loss_tokens`` (weight > 0), and ``fill_rate`` /
        ``loss_fill_rate``: those two over ``B * L``. On several hosts every process must call it.
        """
        if self._last_stats is None:
            return None
        step, stats_DxK = self._last_stats
        if stats_DxK.is_fully_addressable:
            host_DxK = np.asarray(jax.device_get(stats_DxK))
        else:
            from jax.experimental import multihost_utils

            host_DxK = np.asarray(multihost_utils.process_allgather(stats_DxK, tiled=True))
        out: dict[str, Any] = {"step": step, **{k: int(v) for k, v in zip(STAT_NAMES, host_DxK.sum(axis=0))}}
        capacity = self.global_batch_size * self.seq_len
        out["fill_rate"] = out["tokens"] / capacity
        out["loss_fill_rate"] = out["loss_tokens"] / capacity
        return out

    def get_state(self) -> dict[str, int]:
        """The iterator's state: ``{"step": s}`` (the next batch is step ``s``)."""
        return {"step": int(self.step)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Resumes at ``state["step"]`` (from ``get_state``)."""
        step = state.get("step") if isinstance(state, dict) else None
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
            raise ValueError(f"state['step']={step!r}: must be an int >= 0 (from OnlineBatches.get_state)")
        _check_step(int(step), self.traces_per_step, "state['step']")
        self.step = int(step)

    async def save(self, directory):
        """Orbax v1 ``StatefulCheckpointable``: writes ``get_state()`` as JSON into ``directory``."""
        state = self.get_state()

        async def write():
            path = await directory.await_creation()
            if jax.process_index() == 0:
                (path / STATE_FILE).write_text(json.dumps(state))

        return write()

    async def load(self, directory):
        """Orbax v1 ``StatefulCheckpointable``: restores the state ``save`` wrote into ``directory``."""
        path = directory / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable online-batches state ({type(e).__name__}: {e})") from None
        self.set_state(state)

        async def done():
            return None

        return done()


def _replicated(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host value copied to every device of the sharding's mesh (on every host: each gives the same)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _check_step(step: int, traces_per_step: int, name: str) -> None:
    if (step + 1) * traces_per_step > INT32_MAX + 1:
        raise ValueError(f"{name}={step}: problem indices past 2**31 (int32) with traces_per_step={traces_per_step}")


# ------------------------------------------------------------------------------------------------
# The entry point
# ------------------------------------------------------------------------------------------------


def _int_arg(name: str, value, low: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r}: must be an int >= {low}")
    return int(value)


def online_batches(spec: env.CountdownSpec, targets, *, strategy: str, seq_len: int, global_batch_size: int,
                   packing: bool, mask_prompt: bool, seed: int, traces_per_step: int | None = None,
                   start_step: int = 0, mesh: jax.sharding.Mesh | None = None, first_fit: bool = True,
                   mix: search.Mix | None = None) -> OnlineBatches:
    """Batches of fresh Countdown traces generated on device every step (see the module docstring).

    ``targets``: the split's target values (``env.split_targets(spec, "seen")``); ``strategy``:
    ``"sos"`` (the SoS mix) or ``"ot"`` (optimal paths). Each batch is a dict of global
    ``[global_batch_size, seq_len]`` arrays in the layout of ``sos_jax.data.batch``, sharded as
    ``parallel.batch_sharding(mesh)`` (default mesh: ``parallel.data_mesh()``).
    ``traces_per_step`` (``T``) problems are generated per step: padding needs ``T = B``
    (the default); packing defaults to ``default_traces_per_step`` (enough to fill the rows in the
    usual case). ``T / D`` per device (``D`` = devices on the batch axes) must be whole blocks of
    the SoS ``mix`` (default ``search.Mix()``: pairs) for "sos". ``first_fit`` (default) packs each
    trace into the first row with room, ``first_fit=False`` next-fit: emptier rows (about 0.77
    instead of 0.92 of the tokens for 4-number SoS traces at ``seq_len`` 4096).
    Compiles once (cached per arguments); raises ValueError naming the argument at fault.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: must be one of {', '.join(STRATEGIES)}")
    if not isinstance(spec, env.CountdownSpec):
        raise ValueError(f"spec={spec!r}: must be an envs.countdown.CountdownSpec")
    try:
        spec.validate()
    except ValueError as e:
        raise ValueError(f"spec.{e}") from None
    if strategy == "sos" and spec.num_count > search.DFS_MAX_NUMBERS:
        raise ValueError(f"spec.num_count={spec.num_count}: the SoS mix needs DFS traces, which support up to "
                         f"{search.DFS_MAX_NUMBERS} numbers; use strategy='ot' or fewer numbers")
    targets_T = np.asarray(targets)
    if targets_T.ndim != 1 or targets_T.size == 0 or not np.issubdtype(targets_T.dtype, np.integer):
        raise ValueError(f"targets: must be a non-empty 1-D array of ints, got shape {targets_T.shape} "
                         f"dtype {targets_T.dtype}")
    if targets_T.min() < spec.target_min or targets_T.max() > spec.target_max:
        raise ValueError(f"targets: values must lie in spec's {spec.target_min}..{spec.target_max}, got "
                         f"{targets_T.min()}..{targets_T.max()}")
    seq_len = _int_arg("seq_len", seq_len, MIN_SEQ_LEN)
    global_batch_size = _int_arg("global_batch_size", global_batch_size, 1)
    seed = _int_arg("seed", seed, 0)
    if seed > INT32_MAX:
        raise ValueError(f"seed={seed}: must be below 2**31")
    start_step = _int_arg("start_step", start_step, 0)
    for name, value in (("packing", packing), ("mask_prompt", mask_prompt), ("first_fit", first_fit)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name}={value!r}: must be a bool")
    mesh = parallel.data_mesh() if mesh is None else mesh
    if not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"mesh={mesh!r}: must be a jax.sharding.Mesh")

    axes = [a for a in mesh.axis_names if a in parallel.BATCH_AXES]
    shards = math.prod(mesh.shape[a] for a in axes)
    where = f"the {shards} devices on the mesh's batch axes ({', '.join(axes) or 'none'})"
    mix = search.Mix() if mix is None else mix.validate()
    block = mix.block if strategy == "sos" else 1
    if global_batch_size % shards:
        raise ValueError(f"global_batch_size={global_batch_size}: must be a multiple of {where}")
    if traces_per_step is None:
        traces_per_step = default_traces_per_step(spec, strategy, seq_len=seq_len,
                                                  global_batch_size=global_batch_size, packing=packing,
                                                  num_shards=shards, block=block)
    traces_per_step = _int_arg("traces_per_step", traces_per_step, 1)
    if not packing and traces_per_step != global_batch_size:
        raise ValueError(f"traces_per_step={traces_per_step}: padding puts one trace per row, so it must equal "
                         f"global_batch_size={global_batch_size} (or be None)")
    if traces_per_step % (block * shards):
        what = "global_batch_size" if not packing else "traces_per_step"
        value = global_batch_size if not packing else traces_per_step
        need = f"{block} x {shards}" if block > 1 else f"{shards}"
        raise ValueError(f"{what}={value}: must be a multiple of {need} ({where}"
                         f"{', each holding whole blocks of the SoS mix' if block > 1 else ''})")
    _check_step(start_step, traces_per_step, "start_step")

    start = time.perf_counter()
    compiled = _compiled_step(spec, tuple(int(t) for t in targets_T), mesh, strategy=strategy,
                                         seq_len=seq_len, rows=global_batch_size // shards,
                                         traces=traces_per_step // shards, packing=bool(packing),
                                         first_fit=bool(first_fit and packing), mask_prompt=bool(mask_prompt),
                                         mix=mix)
    compile_s = time.perf_counter() - start
    return OnlineBatches(compiled, targets=targets_T, mesh=mesh, seed=seed, global_batch_size=global_batch_size,
                         seq_len=seq_len, traces_per_step=traces_per_step, start_step=start_step,
                         compile_s=compile_s)
