"""The training batch every input source delivers, and how one trace becomes an example.

A batch is a dict of ``[B, L]`` arrays (``L = seq_len``):

- ``inputs`` (int32): ``BOS`` followed by the trace's token ids;
- ``targets`` (int32): the trace's ids followed by ``EOS`` (``inputs`` shifted by one), so the
  model learns to stop;
- ``weights`` (float32): the loss mask, 1 on every target that counts; 0 on padding and, when the
  prompt is masked, on the targets of the prompt line;
- ``segment_ids`` (int32): 1, 2, ... for the traces packed into a row, 0 on padding; attention
  never crosses a segment boundary;
- ``positions`` (int32): each token's position within its own trace (restarting at 0 for every
  packed trace).

A trace longer than ``L`` is cut to its first ``L`` tokens (and then has no ``EOS``).
"""

from __future__ import annotations

import numpy as np

from sos_jax.tokenizers import countdown as tok

BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions")
BATCH_DTYPES = {"inputs": np.int32, "targets": np.int32, "weights": np.float32, "segment_ids": np.int32,
                "positions": np.int32}
# Ids whose text ends a line: the prompt is the trace's first line, up to and including such a token.
LINE_END_IDS = np.array([i for i, text in enumerate(tok.VOCAB) if text.endswith("\n")], np.int32)


def prompt_length(trace_N: np.ndarray) -> int:
    """Tokens in the trace's first line (its prompt: the initial state), newline included."""
    ends = np.flatnonzero(np.isin(trace_N, LINE_END_IDS))
    return int(ends[0]) + 1 if ends.size else int(len(trace_N))


def example(trace_N: np.ndarray, *, seq_len: int, mask_prompt: bool) -> dict[str, np.ndarray]:
    """``inputs``, ``targets`` and ``weights`` of one trace, each ``min(len + 1, seq_len)`` long."""
    trace = np.asarray(trace_N, np.int32)
    n = min(len(trace) + 1, seq_len)
    inputs = np.concatenate([[tok.BOS], trace])[:n].astype(np.int32)
    targets = np.concatenate([trace, [tok.EOS]])[:n].astype(np.int32)
    weights = np.ones(n, np.float32)
    if mask_prompt:
        weights[: prompt_length(trace)] = 0.0
    return {"inputs": inputs, "targets": targets, "weights": weights}
