"""Writing Sudoku datasets: puzzles, traces and direct solutions made on device, stored with
``records.write_form`` (resumable, split by split; see ``sudoku_tfds`` for the layout).

A split's puzzles come in batches of ``batch_size``: ``batch_size / variants`` fresh puzzles with a
unique solution (``envs.sudoku.sample_minimal_puzzles``, or ``sample_puzzles`` with the clue range
asked), each drawn again as ``variants`` random symmetries (``envs.sudoku.equivalent_puzzles``),
then the backtracking trace and direct solution of every one (``search.sudoku.trace_batch``) turned
into training sequences (``search.sudoku.sequences``), all in one jitted call split over the
devices; the next batch runs while the host writes the last. A puzzle is left out when its
backtracking sequence is longer than ``max_len`` (both forms then skip it, so ``bt`` and ``direct``
hold the same puzzles in the same order) or when it is one of the 200 test puzzles. Splits draw
from keys of their own, so the same settings give the same files, and each form re-runs the
(deterministic) generation rather than holding a split in memory.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import numpy as np

from sos_jax import distributed
from sos_jax.data import records, sudoku_test, trace_stats
from sos_jax.data import sudoku_tfds as st

LAYOUT = {"tokens": records.BYTES, "puzzle": records.INTS, "solution": records.INTS,
          **dict.fromkeys(("problem", "clues", "guesses", "reverts", "length"), records.INT)}
PROMPT_WORDS = 8  # START original : n ... solving n SOL_S n, besides 4 words per clue
CLOSING_WORDS = 3  # n SOL_E END


def sequence_length(clues, body_length):
    """Words of the whole training sequence (``START`` to ``END``) of a puzzle and a trace body."""
    return PROMPT_WORDS + 4 * np.asarray(clues) + np.asarray(body_length) + CLOSING_WORDS


@functools.lru_cache(maxsize=2)
def _device_fns(params: st.SudokuParams):
    """``(fresh, variants, write)`` jitted for the settings: fresh puzzles for global indices,
    their symmetries, and each puzzle's sequences of both forms (uint8 ids) with the trace's facts."""
    import jax
    import jax.numpy as jnp

    from sos_jax import parallel
    from sos_jax.envs import sudoku as env
    from sos_jax.search import sudoku as search

    mesh = parallel.data_mesh()
    if params.clues == "minimal":
        make = env.sample_minimal_puzzles
    else:
        make = functools.partial(env.sample_puzzles, clue_min=params.clue_min, clue_max=params.clue_max)
    variants = jax.jit(jax.vmap(jax.vmap(env.equivalent_puzzles, in_axes=(0, None, None)), in_axes=(0, 0, 0)))

    def write(puzzles_Bx81):
        out = search.trace_batch(puzzles_Bx81, branch=params.branch, techniques=params.techniques,
                                 max_tokens=params.max_len)
        sequences = jax.vmap(search.sequences, in_axes=(0, 0, 0, None))
        forms = {"bt": (out.trace_BxL, out.length_B), "direct": (out.direct_BxM, out.direct_length_B)}
        written = {}
        for form, (body, length) in forms.items():
            ids, seq_length, _ = sequences(puzzles_Bx81, body, length, params.max_len)
            written[form] = {"ids": ids.astype(jnp.uint8), "length": seq_length}
        return {**written, "bt_length": out.length_B, "truncated": out.truncated_B, "solved": out.solved_B,
                "guesses": out.guesses_B, "reverts": out.reverts_B}

    return parallel.shard_rows(make, mesh), variants, parallel.shard_rows(write, mesh, n_replicated=0)


def _generated(params: st.SudokuParams, form: str, split: str) -> Iterator[dict[str, Any]]:
    """The examples of one split, in order, until the split has its size."""
    import jax

    fresh, variants, write = _device_fns(params)
    size = dict(params.sizes)[split]
    fresh_key, variant_key = jax.random.split(jax.random.fold_in(jax.random.key(params.seed), st.SPLITS.index(split)))
    per_batch = params.batch_size // params.variants
    test_boards = {p.tobytes() for p in sudoku_test.load()[0].astype(np.int32)}

    def dispatch(b):
        made = fresh(fresh_key, np.arange(b * per_batch, (b + 1) * per_batch, dtype=np.int32))
        keys = jax.random.split(jax.random.fold_in(variant_key, b), (per_batch, params.variants))
        puzzles, solutions = variants(keys, made["puzzle_Bx81"], made["solution_Bx81"])
        puzzles, solutions = puzzles.reshape(-1, 81), solutions.reshape(-1, 81)
        return puzzles, solutions, write(puzzles)

    written, b, pending = 0, 0, dispatch(0)
    while written < size:
        current, b = pending, b + 1
        pending = dispatch(b)
        puzzles, solutions, out = distributed.fetch(current)
        puzzles, solutions = np.asarray(puzzles, np.int32), np.asarray(solutions, np.int32)
        clues = (puzzles > 0).sum(axis=1)
        fits = ~out["truncated"] & out["solved"] & (sequence_length(clues, out["bt_length"]) <= params.max_len)
        for r in np.flatnonzero(fits):
            if puzzles[r].tobytes() in test_boards:
                continue
            length = int(out[form]["length"][r])
            yield {"tokens": out[form]["ids"][r, 1:length - 1], "puzzle": puzzles[r], "solution": solutions[r],
                   "problem": written, "clues": clues[r], "guesses": out["guesses"][r], "reverts": out["reverts"][r],
                   "length": length - 2}
            written += 1
            if written == size:
                return


def split_report(rows: list[dict], context_len: int) -> dict[str, Any]:
    """Statistics of one split's records (tokens of the stored sequences), as ``countdown_writer``'s
    reports: one group, ``all``, plus revert share, mean guesses and mean clues."""
    cols = {"total": np.asarray([r["length"] for r in rows])}
    cols["solved"] = np.ones(len(rows), bool)
    cols["truncated"] = np.zeros(len(rows), bool)
    stats = trace_stats.stats(cols, np.ones(len(rows), bool), context_len)
    stats.update(revert_share=float(np.mean([r["reverts"] > 0 for r in rows])),
                 guesses_mean=float(np.mean([r["guesses"] for r in rows])),
                 clues_mean=float(np.mean([r["clues"] for r in rows])))
    return {"groups": {"all": stats}, "hist": {"all": trace_stats.length_histogram(cols["total"])}}


def write_form(data_dir: str, form: str, params: st.SudokuParams, *, context_len: int,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Writes (or completes) one form of the dataset; returns its metadata (the settings and
    per-split statistics). ``progress(n)`` is called as records are written."""
    splits = ((split, functools.partial(_generated, params, form, split)) for split, _ in params.sizes)
    return records.write_form(st.version_dir(data_dir, form), st.SosSudoku(config=form, data_dir=data_dir),
                              {"params": params.describe(), "context_len": context_len}, splits, LAYOUT,
                              functools.partial(split_report, context_len=context_len), progress)
