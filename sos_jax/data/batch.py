"""The training batch every input source delivers, and how one trace becomes an example.

A batch is a dict of ``[B, L]`` arrays (``L = seq_len``):

- ``inputs`` (int32): the task's ``bos`` followed by the trace's token ids;
- ``targets`` (int32): the trace's ids followed by the task's ``eos`` (``inputs`` shifted by one),
  so the model learns to stop;
- ``weights`` (float32): the loss mask, 1 on every target that counts; 0 on padding and, when the
  prompt is masked, on the targets of the prompt line;
- ``segment_ids`` (int32): 1, 2, ... for the traces packed into a row, 0 on padding; attention
  never crosses a segment boundary;
- ``positions`` (int32): each token's position within its own trace (restarting at 0 for every
  packed trace).

A trace longer than ``L`` is cut to its first ``L`` tokens (and then has no ``eos``). A ``Task``
names the ids that open and close a sequence and where its prompt ends: ``COUNTDOWN`` (``BOS``,
``EOS``, the first line) and ``SUDOKU`` (``START``, ``END``, the board up to ``SOL_S n``, so a
Sudoku record holds ``original : n <clue lines> solving n SOL_S n <trace> n SOL_E``).
"""

from __future__ import annotations

import numpy as np

import dataclasses

from sos_jax.tokenizers import countdown as tok
from sos_jax.tokenizers import sudoku as sudoku_tok

BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions")
BATCH_DTYPES = {"inputs": np.int32, "targets": np.int32, "weights": np.float32, "segment_ids": np.int32,
                "positions": np.int32}
# Ids whose text ends a line: the prompt is the trace's first line, up to and including such a token.
LINE_END_IDS = np.array([i for i, text in enumerate(tok.VOCAB) if text.endswith("\n")], np.int32)




@dataclasses.dataclass(frozen=True)
class Task:
    """What turns a task's traces into training sequences."""

    name: str
    vocab_size: int
    bos: int  # the id before a trace
    eos: int  # the id after a trace: the model learns to stop on it
    prompt_end_ids: tuple[int, ...]  # the prompt ends at the first of these ids ...
    prompt_tail: int  # ... and the ``prompt_tail`` ids after it

    def prompt_length(self, trace_N: np.ndarray) -> int:
        """Tokens of the trace's prompt (the problem the model is given); all when no end is found."""
        ends = np.flatnonzero(np.isin(trace_N, self.prompt_end_ids))
        return min(int(ends[0]) + 1 + self.prompt_tail, len(trace_N)) if ends.size else int(len(trace_N))


COUNTDOWN = Task("countdown", tok.VOCAB_SIZE, tok.BOS, tok.EOS, tuple(LINE_END_IDS.tolist()), 0)
SUDOKU = Task("sudoku", sudoku_tok.VOCAB_SIZE, sudoku_tok.START, sudoku_tok.END, (sudoku_tok.SOL_S,), 1)
TASKS = {task.name: task for task in (COUNTDOWN, SUDOKU)}


def example(trace_N: np.ndarray, *, seq_len: int, mask_prompt: bool, task: Task = COUNTDOWN) -> dict[str, np.ndarray]:
    """``inputs``, ``targets`` and ``weights`` of one trace, each ``min(len + 1, seq_len)`` long."""
    trace = np.asarray(trace_N, np.int32)
    n = min(len(trace) + 1, seq_len)
    inputs = np.concatenate([[task.bos], trace])[:n].astype(np.int32)
    targets = np.concatenate([trace, [task.eos]])[:n].astype(np.int32)
    weights = np.ones(n, np.float32)
    if mask_prompt:
        weights[: task.prompt_length(trace)] = 0.0
    return {"inputs": inputs, "targets": targets, "weights": weights}
