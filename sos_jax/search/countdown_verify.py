"""The strict Countdown trace verifier on token ids, in JAX (the RL reward).

``verify_tokens`` judges one token sequence exactly as ``sos_jax.envs.countdown_check.check_trace``
judges its text (the strict verdict and its rating; see that module for the rules). It has static
shapes and no per-token loop: the sequence is scanned with a few vector passes (prefix max/min,
shifted compares, gathers), then a handful of positions are read with gathers and the operations
are checked as small [N] / [N, N] arrays (N, the padded number count, is static). Use it under
``jax.jit`` and ``jax.vmap``.

Limitation: the verifier reads the canonical tokenization, the one ``tokenizers.countdown.encode``
produces (greedy longest match, which is what the on-device writers and a model trained on their
output emit). A text spelled with other tokens (say ``Current State: `` as single characters)
may be judged differently from its decoded text; so may a sequence with special tokens (PAD, BOS,
EOS) inside a line the verdict reads. Special tokens before or after those lines are harmless.
Numbers longer than 9 digits are invalid, so int32 arithmetic never overflows.

Reason codes, in the order they are checked (``REASONS[code]`` is the meaning, and the text
verdict's ``reason``): SOLVED 0, NO_GOAL 1, NO_STATE 2 (no well-formed Current State line before
the goal), NO_EXPLORE 3 (likewise Exploring Operation), OP_COUNT 4 (not len(nums) - 1 operations),
ARITHMETIC 5, UNAVAILABLE 6 (an operand reused or never made), NOT_TARGET 7 (last result is not
the target), GOAL_MISMATCH 8 (the goal line is not "<last result>,<target>").

Batches: ``verify_token_batch(ids_BxL, lengths_B, nums_BxN, num_counts_B, targets_B)`` is
``jax.jit(jax.vmap(verify_tokens))``; inside a larger jitted function, ``jax.vmap(verify_tokens)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sos_jax.envs.countdown_check import (
    ARITHMETIC,
    GOAL_MISMATCH,
    NO_EXPLORE,
    NO_GOAL,
    NO_STATE,
    NOT_TARGET,
    OP_COUNT,
    REASONS,
    SOLVED,
    UNAVAILABLE,
    max_nodes,
)
from sos_jax.tokenizers import countdown as tok

__all__ = ["verify_token_batch", "verify_tokens"]  # reason codes: sos_jax.envs.countdown_check.REASONS

_MAX_DIGITS = 9
assert tok.VOCAB_SIZE <= 127, "_starts packs token ids into 7 bits"
_SPACE = tok.TOKEN_ID[" "]
# Phrases as the tokenizer spells them when the trailing text of their phrase token is missing:
# a goal line at the very end of a stripped trace, and any "Exploring Operation" not followed by ": ".
_GOAL_SPELLED = tuple(tok.encode(" equal: Goal Reached"))
_EXPLORING_SPELLED = tuple(tok.encode("Exploring Operation"))


def _shift(x, k, fill):
    """x[p - k] at p (fill where p < k): k > 0 looks back, k < 0 looks ahead."""
    if k == 0:
        return x
    pad = jnp.full((abs(k),), fill, x.dtype)
    return jnp.concatenate([pad, x[:-k]]) if k > 0 else jnp.concatenate([x[-k:], pad])


def _starts(ids, pattern):
    """Mask of the positions where the token sequence ``pattern`` starts.

    Four 7-bit ids are packed into one int32 so that a 19-token pattern takes 5 compares.
    """
    ids = jnp.where((ids >= 0) & (ids < 127), ids, 127)
    packed = ids
    for j in range(1, 4):
        packed = packed | (_shift(ids, -j, 127) << (7 * j))
    hit = jnp.ones(ids.shape, bool)
    for g in range(0, len(pattern), 4):
        code = sum(t << (7 * j) for j, t in enumerate(pattern[g : g + 4]))
        mask = (1 << (7 * len(pattern[g : g + 4]))) - 1
        hit = hit & ((_shift(packed, -g, -1) & mask) == code)
    return hit


def verify_tokens(ids_L, length, nums_N, num_count, target):
    """Strict verdict on the first ``length`` ids of ``ids_L`` (int32 [L]).

    The problem is the first ``num_count`` numbers of ``nums_N`` (int32 [N], padded) and
    ``target``. Returns ``{"solved": bool, "reason": int32 code, "rating": float32}`` as jnp
    scalars; ``REASONS[reason]`` says why.
    """
    (L,), (N,) = ids_L.shape, nums_N.shape
    idx = jnp.arange(L, dtype=jnp.int32)
    length = jnp.clip(jnp.asarray(length, jnp.int32), 0, L)
    n = jnp.clip(jnp.asarray(num_count, jnp.int32), 0, N)
    target = jnp.asarray(target, jnp.int32)
    ids = jnp.where(idx < length, ids_L.astype(jnp.int32), -1)

    # Every array below has one sentinel entry at index L, read for any position outside 0..L-1.
    # Everything is computed for all positions at once with a few gathers of stacked columns;
    # the scalar reads at the end form a short chain (long chains of dependent gathers are very
    # slow for XLA to compile).
    def take(p, *columns):
        """Rows p of the columns stacked as int32 (bools read back as 0 / 1), as one gather."""
        table = jnp.stack([jnp.asarray(x, jnp.int32) for x in columns], axis=-1)
        rows = table[jnp.where((p < 0) | (p > L), L, p)]
        return tuple(rows[..., i] for i in range(len(columns)))

    ids = jnp.concatenate([ids, jnp.full((1,), -1, jnp.int32)])
    pos = jnp.arange(L + 1, dtype=jnp.int32)
    is_digit = (ids >= tok.DIGIT0) & (ids < tok.DIGIT0 + 10)
    digit = jnp.where(is_digit, ids - tok.DIGIT0, 0)
    # For every position: where its digit run starts, and the first position at or after it that
    # is not a digit, not in a "[...]" number list (digits, ",", " ", ", "), and not in an
    # operations list (digits, operators, "=", "'", "', '").
    in_list = is_digit | jnp.isin(ids, jnp.array([tok.COMMA, _SPACE, tok.COMMA_SPACE]))
    in_ops = is_digit | jnp.isin(ids, jnp.array([*tok.OP_TOKENS, tok.EQUALS, tok.QUOTE, tok.QUOTE_SEP]))
    run_start = jax.lax.cummax(jnp.where(is_digit, 0, pos + 1))
    next_non_digit, next_non_list, next_non_ops = (
        jax.lax.cummin(jnp.where(m, L, pos), reverse=True) for m in (is_digit, in_list, in_ops)
    )
    # The value of the last (at most 9) digits of the run ending at each position.
    run_len = pos - run_start + 1
    run_value = jnp.zeros(L + 1, jnp.int32)
    for k in range(_MAX_DIGITS):
        run_value += jnp.where(k < run_len, _shift(digit, k, 0) * 10**k, 0)

    # The canonical number (at most 9 digits) starting at each position: ok, value, end.
    num_end = next_non_digit
    num_size = num_end - pos
    num_ok = (is_digit & (num_size <= _MAX_DIGITS) & ((digit != 0) | (num_size == 1))).astype(jnp.int32)
    (num_val,) = take(num_end - 1, run_value)

    # The operation "a<sym>b=c" starting at each position; sym indexes "+*-/". Reading the token at
    # q and the number at q + 1 is one gather at q of these columns:
    after = (ids, _shift(num_ok, -1, 0), _shift(num_val, -1, 0), _shift(num_end, -1, L))
    sym_tok, b_ok, op_b, b_end = take(num_end, *after)
    eq_tok, c_ok, op_c, op_end = take(b_end, *after)
    op_tokens = jnp.array(tok.OP_TOKENS, jnp.int32)
    op_sym = jnp.argmax(sym_tok[:, None] == op_tokens[None, :], axis=1).astype(jnp.int32)
    op_ok = (num_ok == 1) & jnp.isin(sym_tok, op_tokens) & (b_ok == 1) & (eq_tok == tok.EQUALS) & (c_ok == 1)
    # ... and reading the token at q and where the number list from q + 1 ends is one gather of:
    list_after = (ids, _shift(next_non_list, -1, L))
    op_delim, list_end = take(op_end, *list_after)
    (list_close,) = take(list_end, ids)

    # Goal lines "<x>,<t> equal: Goal Reached", by the position of their phrase.
    phrase = (ids == tok.GOAL) | _starts(ids, _GOAL_SPELLED)
    t_start = _shift(run_start, 1, 0)
    comma, x_digit, x_start = take(t_start, _shift(ids, 1, -1), _shift(is_digit, 2, False), _shift(run_start, 2, 0))
    candidate = phrase & _shift(is_digit, 1, False) & (comma == tok.COMMA) & (x_digit == 1)

    # A Current State line at each position: its head up to "], Operations: [", then the list,
    # either "]\n" or "'op', ..., 'op']\n": up to its first token that cannot be in such a list,
    # every op starts after "'" or "', '" and ends at "', '" or "']\n".
    head_end = _shift(num_end, -1, L)
    colon, ops_open = take(head_end, *list_after)
    head_ok = _shift(is_digit, -1, False) & (colon == tok.COLON_BRACKET)
    op_starts = jnp.isin(_shift(ids, 1, -1), jnp.array([tok.QUOTE, tok.QUOTE_SEP]))
    bad_op = op_starts & ~(op_ok & ((op_delim == tok.QUOTE_SEP) | (op_delim == tok.QUOTE_CLOSE)))
    next_bad = jax.lax.cummin(jnp.where(bad_op, pos, L), reverse=True)
    opened, first, close, first_bad = take(
        ops_open, ids, _shift(ids, -1, -1), _shift(next_non_ops, -1, L), _shift(next_bad, -1, L)
    )
    (close_tok,) = take(close, ids)
    full = (first == tok.QUOTE) & (close_tok == tok.QUOTE_CLOSE) & (first_bad > close)
    state_line_ok = head_ok & (opened == tok.OPERATIONS_OPEN) & ((first == tok.BRACKET_CLOSE) | full)

    # Scalar reads: the first goal, the last state and exploring lines before it, the state's ops.
    has_goal = jnp.any(candidate)
    goal = jnp.argmax(candidate).astype(jnp.int32)
    goal_start, t_pos = take(goal, x_start, t_start)
    x_ok, x = take(goal_start, num_ok, num_val)
    t_ok, t = take(t_pos, num_ok, num_val)

    s = jnp.max(jnp.where((ids == tok.CURRENT_STATE) & (pos < goal_start), pos, -1))
    state_ok, empty, p = take(s, state_line_ok, first == tok.BRACKET_CLOSE, ops_open + 2)
    state_ok = (s >= 0) & (state_ok == 1)
    op_a = num_val
    # Walk the (well-formed) list for its first N - 1 ops; a longer list counts as N ops, which is
    # too many for any problem that fits in nums_N.
    op_table = jnp.stack([op_end, op_delim, op_a, op_sym, op_b, op_c], axis=-1)
    count = jnp.where(empty == 1, 0, N)
    rows = []
    for k in range(N - 1):
        row = op_table[jnp.where((p < 0) | (p > L), L, p)]
        rows.append(row[2:])
        count = jnp.where((count == N) & (row[1] == tok.QUOTE_CLOSE), k + 1, count)
        p = row[0] + 1

    e = jnp.max(jnp.where((ids == tok.EXPLORING) & (pos < goal_start), pos, -1)) + 1
    ok, delim, close, *final = take(e, op_ok, op_delim, list_close, op_a, op_sym, op_b, op_c)
    explore_ok = (e > 0) & (ok == 1) & (delim == tok.RESULTING) & (close == tok.BRACKET_CLOSE)
    x_ok, t_ok = x_ok == 1, t_ok == 1

    # The operations in order (the state's, then the exploring line's) as [N] vectors; slot i is
    # used when i <= count.
    slot = jnp.arange(N)
    final = jnp.stack(final)
    ops = jnp.stack(rows + [final]) if N > 1 else final[None]
    ops = jnp.where((slot == count)[:, None], final[None], ops)
    a, sym, b, c = ops[:, 0], ops[:, 1], ops[:, 2], ops[:, 3]
    used = slot <= count
    # a * b == c and a / b == c checked by division, so nothing overflows int32.
    safe_a, safe_b = jnp.maximum(a, 1), jnp.maximum(b, 1)
    product_ok = jnp.where((a == 0) | (b == 0), c == 0, (c % safe_a == 0) & (c // safe_a == b))
    quotient_ok = (b != 0) & (a % safe_b == 0) & (a // safe_b == c)
    arith_ok = jnp.select([sym == 0, sym == 1, sym == 2], [a + b == c, product_ok, a == b + c], quotient_ok)
    # Multiset availability without a sequential replay: an operand v of op i is available when
    # (inputs equal to v) + (earlier results equal to v) - (earlier operands equal to v) >= 1,
    # counting op i's first operand against its second. Only the first failing op matters, and
    # the ops before it are valid, so this equals removing used numbers one op at a time.
    earlier = (slot[None, :] < slot[:, None]) & used[None, :]

    nums = jnp.asarray(nums_N, jnp.int32)

    def stock(v):
        def count_in(values, mask):
            return jnp.sum(mask & (values[None, :] == v[:, None]), axis=1)

        return count_in(nums, (slot < n)[None, :]) + count_in(c, earlier) - count_in(a, earlier) - count_in(b, earlier)

    available = (stock(a) >= 1) & (stock(b) - (a == b) >= 1)
    fail = used & ~(arith_ok & available)
    first_fail = jnp.argmax(fail)
    op_code = jnp.where(jnp.any(fail), jnp.where(arith_ok[first_fail], UNAVAILABLE, ARITHMETIC), SOLVED)
    count_ok = count + 1 == n - 1
    result = final[3]

    goal_ok = x_ok & t_ok & (x == result) & (t == target)
    reason = jnp.select(
        [~has_goal, ~state_ok, ~explore_ok, ~count_ok, op_code != SOLVED, result != target, ~goal_ok],
        [NO_GOAL, NO_STATE, NO_EXPLORE, OP_COUNT, op_code, NOT_TARGET, GOAL_MISMATCH],
        SOLVED,
    ).astype(jnp.int32)
    solved = reason == SOLVED

    explored = jnp.sum(ids == tok.EXPLORING) + jnp.sum(_starts(ids, _EXPLORING_SPELLED))
    nodes = jnp.asarray(np.array([max_nodes(m) for m in range(N + 1)], np.float32))[n]
    rating = jnp.maximum(0.0, 1.0 - (explored + 1).astype(jnp.float32) / nodes)
    return {"solved": solved, "reason": reason, "rating": jnp.where(solved, rating, 0.0).astype(jnp.float32)}


@jax.jit
def verify_token_batch(ids_BxL, lengths_B, nums_BxN, num_counts_B, targets_B):
    """``verify_tokens`` over a batch: each output is a [B] array."""
    return jax.vmap(verify_tokens)(ids_BxL, lengths_B, nums_BxN, num_counts_B, targets_B)
