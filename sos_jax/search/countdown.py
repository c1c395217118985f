"""Countdown Stream-of-Search traces as token ids, written on device.

``dfs_traces``, ``bfs_traces`` and ``ot_traces`` write a batch of traces into a fixed
``[batch, max_len]`` id buffer with per-row ``length``, ``solved`` and ``truncated`` flags (a
truncated row holds the first ``max_len`` tokens of a longer trace and says so). ``sos_mix``
samples the published training mix in one jitted call; ``replay`` re-creates reference traces
from records in the format of the published examples.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from sos_jax.envs import countdown as env
from sos_jax.search import countdown_bfs as bfs
from sos_jax.search import countdown_dfs as dfs
from sos_jax.search import countdown_ot as ot
from sos_jax.search import countdown_render as render
from sos_jax.search.countdown_tree import MULT, SUM
from sos_jax.tokenizers import countdown as tok

DFS, BFS, OT = 0, 1, 2
STRATEGY_NAMES = ("dfs", "bfs", "ot")
HEURISTIC_NAMES = ("sum", "mult")
MAX_BEAM = bfs.MAX_BEAM
DFS_MAX_NUMBERS = 5
OT_MIN_WIDTH = 256  # narrowest render buffer of optimal paths (about 200 tokens for 4 numbers)

__all__ = ["Traces", "DFS", "BFS", "OT", "SUM", "MULT", "dfs_traces", "bfs_traces", "ot_traces", "sos_mix",
           "optimal_traces", "replay", "max_pops", "Mix", "mix_choices", "generate"]


@struct.dataclass
class Traces:
    """A batch of traces: ``tokens`` [B, max_len] int32 (PAD after ``length``), ``length``,
    ``total`` (the full trace length in tokens), ``solved`` and ``truncated`` per row, and the
    strategy, heuristic and beam that made each row (beam 0 for DFS and OT)."""

    tokens: jax.Array
    length: jax.Array
    total: jax.Array
    solved: jax.Array
    truncated: jax.Array
    strategy: jax.Array
    heuristic: jax.Array
    beam: jax.Array


def max_pops(num_count: int) -> int:
    """Most nodes a beam search pops for ``num_count`` numbers (rows of its shuffle positions)."""
    return bfs.max_pops(num_count)


def _finish(tokens, length, total, solved, strategy, heuristic, beam):
    return Traces(tokens=tokens, length=length, total=total, solved=solved, truncated=length < total,
                  strategy=jnp.full(length.shape, strategy, jnp.int32),
                  heuristic=heuristic, beam=beam)


@functools.partial(jax.jit, static_argnames=("spec", "max_len"))
def dfs_traces(nums_BxN, target_B, heuristic_B, threshold_B, *, spec: env.CountdownSpec, max_len: int) -> Traces:
    """DFS traces (heuristic SUM or MULT per row, prune children whose heuristic exceeds the threshold)."""
    if spec.num_count > DFS_MAX_NUMBERS:
        raise ValueError(f"num_count={spec.num_count}: DFS traces are written from a dense tree and support up to "
                         f"{DFS_MAX_NUMBERS} numbers (6 numbers would need 3.5M nodes per problem); use BFS or OT")

    def one(nums, target, heuristic, threshold):
        return dfs.dfs_lines(nums, target, heuristic, threshold, env.factor_table(target, spec))

    kinds, refs, nodes, solved = jax.vmap(one)(nums_BxN, target_B, heuristic_B, threshold_B)
    tokens, length, total = render.render_batch(kinds, refs, nodes, target_B, max_len)
    return _finish(tokens, length, total, solved, DFS, heuristic_B, jnp.zeros_like(length))


@functools.partial(jax.jit, static_argnames=("spec", "max_len"))
def bfs_traces(nums_BxN, target_B, heuristic_B, beam_B, positions_BxRxK, *, spec: env.CountdownSpec,
               max_len: int) -> Traces:
    """Best-first beam search traces; ``positions_BxRxK`` fixes each pop's shuffle (see countdown_bfs)."""

    def one(nums, target, heuristic, beam, positions):
        return bfs.bfs_lines(nums, target, heuristic, beam, env.factor_table(target, spec), positions)

    kinds, refs, nodes, solved = jax.vmap(one)(nums_BxN, target_B, heuristic_B, beam_B, positions_BxRxK)
    tokens, length, total = render.render_batch(kinds, refs, nodes, target_B, max_len)
    return _finish(tokens, length, total, solved, BFS, heuristic_B, beam_B)


@functools.partial(jax.jit, static_argnames=("max_len",))
def ot_traces(nums_BxN, target_B, x_BxD, op_BxD, y_BxD, value_BxD, *, max_len: int) -> Traces:
    """Optimal-path texts of given solutions (operation fields per step; see ``env.solve``).

    ``solved`` is true when the operations are a valid solution of the row's problem.
    """

    kinds, refs, nodes, valid = jax.vmap(ot.ot_lines)(nums_BxN, x_BxD, op_BxD, y_BxD, value_BxD)
    tokens, length, total = render.render_batch(kinds, refs, nodes, target_B, max_len, min_width=OT_MIN_WIDTH, chunks=1)
    solved = valid & (value_BxD[:, -1] == target_B)
    zeros = jnp.zeros_like(length)
    return _finish(tokens, length, total, solved, OT, zeros, zeros)


@functools.partial(jax.jit, static_argnames=("max_len",))
def optimal_traces(nums_BxN, target_B, *, max_len: int) -> Traces:
    """Optimal-path texts of the first solution the on-device solver finds for each problem."""
    sol = jax.vmap(env.solve)(nums_BxN, target_B)
    traces = ot_traces(nums_BxN, target_B, sol["x"], sol["op"], sol["y"], sol["value"], max_len=max_len)
    return traces.replace(solved=traces.solved & sol["solvable"])


@dataclasses.dataclass(frozen=True)
class Mix:
    """The Stream-of-Search training mix: which search writes each trace.

    In every block of ``dfs + bfs`` consecutive problem indices (reduced by their gcd), exactly
    ``dfs`` rows are DFS (threshold = target) and the others best-first beam searches; each row's
    heuristic is drawn uniformly from ``heuristics`` (SUM, MULT) and each BFS row's beam from
    ``beams``. The default is the published mix: half DFS, half BFS with beams 1..5, both heuristics.
    """

    dfs: int = 1
    bfs: int = 1
    beams: tuple[int, ...] = (1, 2, 3, 4, 5)
    heuristics: tuple[int, ...] = (SUM, MULT)

    def validate(self) -> "Mix":
        """Returns self, or raises ValueError naming the bad field."""
        if type(self.dfs) is not int or type(self.bfs) is not int or min(self.dfs, self.bfs) < 0 or self.dfs + self.bfs < 1:
            raise ValueError(f"dfs={self.dfs!r}, bfs={self.bfs!r}: must be ints >= 0, not both 0")
        if not self.beams or not all(type(b) is int and 1 <= b <= MAX_BEAM for b in self.beams):
            raise ValueError(f"beams={self.beams!r}: must be a non-empty tuple of beam sizes in 1..{MAX_BEAM}")
        if not self.heuristics or not all(h in (SUM, MULT) for h in self.heuristics):
            raise ValueError(f"heuristics={self.heuristics!r}: must be a non-empty tuple of {SUM} (sum) and {MULT} (mult)")
        return self

    @property
    def block(self) -> int:
        """Rows per block; a batch of whole blocks has exactly ``dfs_per_block`` DFS rows per block."""
        return (self.dfs + self.bfs) // math.gcd(self.dfs, self.bfs)

    @property
    def dfs_per_block(self) -> int:
        """DFS rows in each block."""
        return self.dfs // math.gcd(self.dfs, self.bfs)


def mix_choices(key: jax.Array, index_B: jax.Array, pops: int, mix: Mix = Mix()):
    """Per-row choices of the SoS mix, each a function of ``(key, index)`` only.

    The indices of a block (``index // mix.block``) get a random permutation; the rows whose
    place in it is below ``mix.dfs_per_block`` are DFS, so any batch of whole blocks has exactly
    the mix's share of DFS. Heuristic, beam and the BFS shuffle positions are drawn per row.
    Returns ``(is_dfs, heuristic, beam, positions [B, pops, MAX_BEAM])``.
    """
    k_block, k_heur, k_beam, k_shuffle = jax.random.split(key, 4)
    fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
    k = mix.block
    place = jax.vmap(lambda kb, i: jax.random.permutation(kb, k)[i])(fold(k_block, index_B // k), index_B % k)
    is_dfs = place < mix.dfs_per_block

    def pick(keys, options):
        choice = jax.vmap(lambda kk: jax.random.randint(kk, (), 0, len(options)))(keys)
        return jnp.asarray(options, jnp.int32)[choice]

    heuristic = pick(fold(k_heur, index_B), mix.heuristics)
    beam = pick(fold(k_beam, index_B), mix.beams)
    positions = jax.vmap(lambda kk: bfs.random_positions(kk, pops))(fold(k_shuffle, index_B))
    return is_dfs, heuristic, beam, positions


@functools.partial(jax.jit, static_argnames=("spec", "max_len", "mix"))
def sos_mix(key: jax.Array, problems: env.Problems, *, spec: env.CountdownSpec, max_len: int,
            mix: Mix = Mix()) -> Traces:
    """Traces of the Stream-of-Search training mix for a batch of problems, in one call.

    Each row's strategy, heuristic, beam and shuffles depend only on ``(key, problems.index)``
    (see ``mix_choices``). The batch must hold whole blocks of indices (``mix.block`` consecutive
    indices starting at a multiple of it; pairs for the default mix): then its DFS share is exact,
    each strategy's rows have a static shape, and no row pays for the other strategy.
    """
    batch = problems.target.shape[0]
    if batch % mix.block:
        raise ValueError(f"sos_mix needs whole blocks of {mix.block} indices, got {batch} rows")
    is_dfs, heuristic, beam, positions = mix_choices(key, problems.index, max_pops(spec.num_count), mix)
    num_dfs = batch // mix.block * mix.dfs_per_block
    order = jnp.argsort(~is_dfs, stable=True)  # DFS rows first: exactly num_dfs for whole blocks
    dfs_rows, bfs_rows = order[:num_dfs], order[num_dfs:]
    nums, target = problems.nums, problems.target
    parts = []
    if num_dfs:
        parts.append(dfs_traces(nums[dfs_rows], target[dfs_rows], heuristic[dfs_rows], target[dfs_rows], spec=spec,
                                max_len=max_len))
    if num_dfs < batch:
        parts.append(bfs_traces(nums[bfs_rows], target[bfs_rows], heuristic[bfs_rows], beam[bfs_rows],
                                positions[bfs_rows], spec=spec, max_len=max_len))
    merged = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    inverse = jnp.argsort(order)
    return jax.tree.map(lambda a: a[inverse], merged)


def generate(key: jax.Array, indices_B: jax.Array, targets_T: jax.Array, *, spec: env.CountdownSpec,
             strategy: str, max_len: int, mix: Mix = Mix()) -> tuple[env.Problems, jax.Array, Traces]:
    """Samples the problems of the given global indices and writes their traces, on device.

    ``strategy`` is ``"sos"`` (the SoS ``mix``) or ``"ot"`` (optimal paths). Everything depends only
    on ``(key, index)``, so any batching or sharding of the indices (whole mix blocks for "sos") gives
    the same rows. Returns ``(problems, found, traces)``; ``found`` is false for a problem whose
    target found no solvable numbers (see ``env.sample_problems``).
    """
    k_problems, k_search = jax.random.split(key)
    problems, found = env.sample_problems(k_problems, indices_B, spec, targets_T)
    if strategy == "sos":
        traces = sos_mix(k_search, problems, spec=spec, max_len=max_len, mix=mix)
    elif strategy == "ot":
        traces = optimal_traces(problems.nums, problems.target, max_len=max_len)
    else:
        raise ValueError(f"strategy={strategy!r}: must be 'sos' or 'ot'")
    return problems, found, traces


def _records_by_shape(records):
    groups: dict[tuple[str, int], list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault((rec["strategy"], len(rec["nums"])), []).append(i)
    return groups


def _heuristic_id(name: str) -> int:
    names = {"sum_heuristic": SUM, "sum": SUM, "mult_heuristic": MULT, "mult": MULT}
    if name not in names:
        raise ValueError(f"heuristic={name!r}: must be one of {sorted(names)}")
    return names[name]


def replay(records: Sequence[dict], max_len: int = 16384) -> list[str]:
    """Trace texts for records with the fields of the published examples, made on device.

    Each record has ``nums``, ``target``, ``strategy`` ("dfs" or "bfs"), ``heuristic``, and
    ``dfs_threshold`` (DFS) or ``beam_size`` and ``bfs_shuffle_perms`` (BFS). The buffer grows
    until no trace is truncated.
    """
    out: list[str | None] = [None] * len(records)
    for (strategy, n), rows in _records_by_shape(records).items():
        if strategy not in ("dfs", "bfs"):
            raise ValueError(f"record {rows[0]}: strategy={strategy!r}, must be 'dfs' or 'bfs'")
        group = [records[i] for i in rows]
        targets = [int(r["target"]) for r in group]
        spec = env.CountdownSpec(num_count=n, num_min=0, num_max=max(max(r["nums"]) for r in group),
                                 target_min=min(targets), target_max=max(targets)).validate()
        nums = jnp.asarray([r["nums"] for r in group], jnp.int32)
        target = jnp.asarray(targets, jnp.int32)
        heuristic = jnp.asarray([_heuristic_id(r["heuristic"]) for r in group], jnp.int32)
        length = max_len
        while True:
            if strategy == "dfs":
                threshold = jnp.asarray([int(r["dfs_threshold"]) for r in group], jnp.int32)
                traces = dfs_traces(nums, target, heuristic, threshold, spec=spec, max_len=length)
            else:
                beams = [int(r["beam_size"]) for r in group]
                if not all(1 <= b <= MAX_BEAM for b in beams):
                    raise ValueError(f"beam_size must be in 1..{MAX_BEAM}, got {beams}")
                pops = max_pops(n)
                positions = jnp.asarray(np.stack([bfs.positions_from_perms(r["bfs_shuffle_perms"], pops)
                                                  for r in group]))
                traces = bfs_traces(nums, target, heuristic, jnp.asarray(beams, jnp.int32), positions, spec=spec,
                                    max_len=length)
            if not bool(jnp.any(traces.truncated)):
                break
            length *= 2
        texts = tok.decode_batch(traces.tokens, traces.length)
        for i, text in zip(rows, texts):
            out[i] = text
    return out  # type: ignore[return-value]
