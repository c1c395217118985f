"""Sudoku backtracking traces and direct solutions as token ids, written on device.

``write_trace(puzzle_81, ...)`` runs the spec's solver (``sudoku.md``, "The solver that writes a
trace") on one puzzle and writes its trace as word ids of ``sos_jax.tokenizers.sudoku`` into a
fixed buffer, together with the direct solution (the same fills with every failed branch removed).
It is the on-device twin of the plain-Python reference ``sos_jax.search.sudoku_python`` and
follows the same rules (read its docstring): deduction to a fixed point, then a branch cell
(``row-major`` or ``fewest`` candidates first), candidates in ascending order, and the
``guess`` / ``nocand`` / ``revert`` lines on the way back. ``trace_batch`` is the jitted batch.

The search is one ``jax.lax.while_loop`` in which every iteration is one event: a fill found by
deduction, a silent elimination (technique set ``full``), or a contradiction/branch, which writes
its ``nocand`` and ``revert`` lines and the next ``guess`` with its fill. Each event's words go to
the buffer in one scatter. The branch points form an explicit stack (a pushed node keeps the
board and candidate masks at the branch, so a ``revert`` restores them), and the direct solution
is a second buffer whose write position goes back to the branch's on every ``revert``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from sos_jax.envs import sudoku as env
from sos_jax.search import sudoku_techniques as techniques_lib
from sos_jax.tokenizers import sudoku as tok

__all__ = ["BRANCH_ORDERS", "TECHNIQUES", "Traces", "sequences", "trace_batch", "write_trace"]

BRANCH_ORDERS = ("row-major", "fewest")
TECHNIQUES = techniques_lib.TECHNIQUES
DEPTH = 81  # stack entries: a branch fills an open cell for good on its path, so 81 always suffice
FILL_WORDS = 4  # "(r, c) = v n"
LINE_WORDS = 25  # the longest guess or revert line: "guess : (r, c) [ 1 , .. , 9 ] = v n"
DIRECT_WORDS = FILL_WORDS * 81  # a direct solution fills each open cell once
EVENT_WORDS = 3 * FILL_WORDS + 2 * LINE_WORDS  # fill | nocand | nocand | revert | guess + its fill
LANE_SHARE = 0.25  # default lanes of ``trace_batch``, as a share of the batch
ELIMINATION_SHARE = 16  # at most 1 lane in this many runs the elimination step in one iteration


@struct.dataclass
class Traces:
    """Traces of a batch of puzzles (leading axis B, or none for one puzzle).

    ``trace_BxL`` holds the trace's ids (``MASK`` after ``length_B``; lines joined by ``n``, no
    ``n`` after the last), ``direct_BxM`` and ``direct_length_B`` the direct solution likewise.
    ``solved_B``: the search reached a full grid; ``truncated_B``: the trace did not fit the
    buffer (then it holds the trace's lines up to the last event that fit, and ``solved_B`` is
    false; an event with a ``revert`` and the next ``guess`` is kept or dropped whole).
    ``guesses_B`` and ``reverts_B`` count those lines; ``board_Bx81`` is the final grid.
    """

    trace_BxL: jax.Array
    length_B: jax.Array
    direct_BxM: jax.Array
    direct_length_B: jax.Array
    solved_B: jax.Array
    truncated_B: jax.Array
    guesses_B: jax.Array
    reverts_B: jax.Array
    board_Bx81: jax.Array


class _Lane(NamedTuple):
    """State of the search of one puzzle (one lane of the batch), its two big stack arrays aside."""

    row: jax.Array  # the puzzle this lane works on; the batch size when the lane is idle
    board_81: jax.Array  # values, 0 where open
    mask_81: jax.Array  # candidate bits (bit v - 1 for v) of the open cells, 0 for filled ones
    cursor: techniques_lib.Cursor  # where deduction stands
    deducing: jax.Array  # False while a failure unwinds the stack
    stack_cell: jax.Array  # [DEPTH] the branch cell of each branch point
    stack_cands: jax.Array  # [DEPTH] its candidates at the branch
    stack_left: jax.Array  # [DEPTH] candidates not tried yet
    stack_direct: jax.Array  # [DEPTH] the direct solution's length at the branch
    depth: jax.Array
    length: jax.Array  # words written to the trace (with the "n" after the last line)
    direct_length: jax.Array
    guesses: jax.Array
    reverts: jax.Array
    solved: jax.Array
    truncated: jax.Array
    done: jax.Array


class _Event(NamedTuple):
    """What one step writes: ``words`` at the trace's old length (only the first ``new length -
    old length`` count), and ``direct_words`` at ``direct_start`` when ``writes_direct``."""

    words: jax.Array
    direct_words: jax.Array
    direct_start: jax.Array
    writes_direct: jax.Array


def _lowest_bit(mask):
    return mask & -mask


def _digit(bit):
    """Value 1..9 of a one-bit candidate mask."""
    return 32 - jax.lax.clz(bit)


def _fill_words(cell, value):
    return jnp.stack([tok.CELL0 + cell, jnp.int32(tok.EQUALS), value, jnp.int32(tok.NEWLINE)])


def _pad(words):
    """A short line padded to ``LINE_WORDS`` words."""
    return jnp.concatenate([words, jnp.zeros((LINE_WORDS - words.shape[0],), words.dtype)])


def _nocand_words(cell):
    return jnp.stack([jnp.int32(tok.NOCAND), jnp.int32(tok.COLON), tok.CELL0 + cell, jnp.int32(tok.NEWLINE)])


def _branch_line(keyword, cell, cands, last):
    """Words and length of ``keyword : cell [c1 , .. ] = last n`` (``last`` a word id)."""
    has_9 = (jnp.right_shift(cands, env.DIGITS_9) & 1) == 1
    count = jnp.sum(has_9)
    rank_9 = jnp.cumsum(has_9) - 1
    slot = jnp.arange(LINE_WORDS)
    words = jnp.full((LINE_WORDS,), tok.COMMA, jnp.int32)
    digits = jnp.zeros((LINE_WORDS,), jnp.int32).at[jnp.where(has_9, 4 + 2 * rank_9, LINE_WORDS)].set(
        env.DIGITS_9 + 1, mode="drop")
    inside = slot - 3  # position within "[ .. ]"
    list_end = 3 + 2 * count  # position of "]"
    words = jnp.where((inside > 0) & (inside % 2 == 1), digits, words)
    tail = jnp.stack([jnp.int32(tok.CLOSE), jnp.int32(tok.EQUALS), last, jnp.int32(tok.NEWLINE)])
    words = jnp.where((slot >= list_end) & (slot < list_end + 4), tail[jnp.clip(slot - list_end, 0, 3)], words)
    head = jnp.stack([jnp.int32(keyword), jnp.int32(tok.COLON), tok.CELL0 + cell, jnp.int32(tok.OPEN)])
    words = jnp.where(slot < 4, head[jnp.minimum(slot, 3)], words)
    return words, list_end + 4


def _place(board_81, mask_81, cell, bit):
    """Board and masks with ``cell`` filled with the value of ``bit``: its peers lose that candidate."""
    peers_81 = jnp.asarray(techniques_lib.PEERS_81x81)[cell]
    return board_81.at[cell].set(_digit(bit)), jnp.where(peers_81, mask_81 & ~bit, mask_81).at[cell].set(0)


def _branch_cell(board_81, mask_81, branch: str):
    """The open cell to branch on: the first in row-major order, or the one with fewest candidates."""
    open_81 = board_81 == 0
    if branch == "row-major":
        return techniques_lib.first(open_81)[0]
    return jnp.argmin(jnp.where(open_81, jax.lax.population_count(mask_81), 10)).astype(jnp.int32)


def _start(row, puzzle_81) -> _Lane:
    """A lane at the root of ``puzzle_81`` (int [81]), working for ``row``."""
    board_81 = jnp.asarray(puzzle_81, jnp.int32)
    zeros, no = jnp.zeros((DEPTH,), jnp.int32), jnp.bool_(False)
    return _Lane(row=jnp.asarray(row, jnp.int32), board_81=board_81, mask_81=env.candidates(board_81),
                 cursor=techniques_lib.start(), deducing=jnp.bool_(True), stack_cell=zeros, stack_cands=zeros,
                 stack_left=zeros, stack_direct=zeros, depth=jnp.int32(0), length=jnp.int32(0),
                 direct_length=jnp.int32(0),
                 guesses=jnp.int32(0), reverts=jnp.int32(0), solved=no, truncated=no, done=no)


def _step(w: _Lane, stack_board, stack_mask, planned, eliminated_81, struck, stall, branch: str, techniques: str,
          max_tokens: int):
    """One event of the search (see the module docstring): the new lane, its stack arrays
    ([DEPTH, 81] boards and masks at the branch points) and the ``_Event`` to write.

    ``planned`` is the lane's next fill of the pass and ``eliminated_81, struck`` its elimination
    step (technique set ``full``), if it wants one; a lane that wants one but was not served
    (``stall``) waits for the next iteration.
    """
    found = techniques_lib.deduce(w.board_81, w.mask_81, w.cursor, techniques, planned, eliminated_81, struck)
    fill = w.deducing & found.fill
    fixed = w.deducing & found.stopped
    open_81 = w.board_81 == 0
    dead_cell, dead = techniques_lib.first(open_81 & (found.mask_81 == 0))
    dead = fixed & dead
    solved = fixed & ~dead & ~jnp.any(open_81)
    branching = fixed & ~dead & ~solved
    unwinding = dead | ~w.deducing

    # Push the branch node before reading the top, so the stack is updated in place.
    cell = _branch_cell(w.board_81, found.mask_81, branch)
    cands = found.mask_81[cell]
    push = jnp.where(branching & ~w.done & ~stall, w.depth, DEPTH)
    stack_board = stack_board.at[push].set(w.board_81.astype(jnp.int8), mode="drop")
    stack_mask = stack_mask.at[push].set(found.mask_81.astype(jnp.int16), mode="drop")
    stack_cell = w.stack_cell.at[push].set(cell, mode="drop")
    stack_cands = w.stack_cands.at[push].set(cands, mode="drop")
    stack_left = w.stack_left.at[push].set(cands, mode="drop")
    stack_direct = w.stack_direct.at[push].set(w.direct_length, mode="drop")
    depth = w.depth + branching
    top = jnp.maximum(depth - 1, 0)
    top_cell, top_cands, top_left = stack_cell[top], stack_cands[top], stack_left[top]
    no_solution = unwinding & (w.depth == 0)

    # After a failure the top branch cell tries its next candidate, or is spent and pops.
    guessing = branching | (unwinding & (top_left != 0) & ~no_solution)
    popping = unwinding & (top_left == 0) & ~no_solution
    bit = _lowest_bit(top_left)
    value = _digit(bit)
    stack_left = stack_left.at[jnp.where(guessing, top, DEPTH)].set(top_left & ~bit, mode="drop")
    guess_board, guess_mask = _place(stack_board[top].astype(jnp.int32), stack_mask[top].astype(jnp.int32),
                                     top_cell, bit)
    fill_board, fill_mask = _place(w.board_81, found.mask_81, found.cell, found.bit)
    board_81 = jnp.where(guessing, guess_board, jnp.where(fill, fill_board, w.board_81))
    mask_81 = jnp.where(guessing, guess_mask, jnp.where(fill, fill_mask, jnp.where(w.deducing, found.mask_81,
                                                                                   w.mask_81)))

    # This event's lines, in order (absent ones have length 0), packed into one slice of words.
    revert_words, revert_len = _branch_line(tok.REVERT, top_cell, top_cands, jnp.int32(tok.NONE))
    guess_words, guess_len = _branch_line(tok.GUESS, top_cell, top_cands, value)
    deduced_fill = _fill_words(found.cell, _digit(found.bit))
    guess_fill = _fill_words(top_cell, value)
    reverting = unwinding & ~no_solution
    lines_6xW = jnp.stack([_pad(deduced_fill), _pad(_nocand_words(dead_cell)), _pad(_nocand_words(top_cell)),
                           revert_words, guess_words, _pad(guess_fill)])
    lengths_6 = jnp.stack([fill * FILL_WORDS, dead * FILL_WORDS, reverting * FILL_WORDS, reverting * revert_len,
                           guessing * guess_len, guessing * FILL_WORDS]).astype(jnp.int32)
    ends_6 = jnp.cumsum(lengths_6)
    slot = jnp.arange(EVENT_WORDS)
    line = jnp.minimum(jnp.sum(ends_6[None, :] <= slot[:, None], axis=1), 5)
    words = lines_6xW[line, jnp.clip(slot - ends_6[line] + lengths_6[line], 0, LINE_WORDS - 1)]
    event_len = ends_6[-1]
    truncated = w.length + event_len - 1 > max_tokens  # the "n" after the last line is not kept

    # The direct solution: back to the branch's length on every guess, then the fill.
    direct_start = jnp.where(guessing, stack_direct[top], w.direct_length)
    frozen = w.done | truncated | stall  # finished, or the event does not fit or must wait: nothing changes
    event = _Event(words=words, direct_words=jnp.where(guessing, guess_fill, deduced_fill),
                   direct_start=direct_start, writes_direct=(guessing | fill) & ~frozen)
    new = w._replace(
        board_81=board_81, mask_81=mask_81,
        cursor=jax.tree.map(lambda fresh, x, old: jnp.where(guessing, fresh, jnp.where(w.deducing, x, old)),
                            techniques_lib.start(), found.cursor, w.cursor),
        deducing=(w.deducing & ~dead) | guessing,
        stack_cell=stack_cell, stack_cands=stack_cands, stack_left=stack_left, stack_direct=stack_direct,
        depth=depth - popping, length=w.length + event_len,
        direct_length=jnp.where(event.writes_direct, direct_start + FILL_WORDS,
                                jnp.where(popping, stack_direct[top], w.direct_length)),
        guesses=w.guesses + guessing, reverts=w.reverts + reverting, solved=solved, done=solved | no_solution)
    new = jax.tree.map(lambda old, x: jnp.where(frozen, old, x), w, new)
    cut = truncated & ~w.done & ~stall
    new = new._replace(truncated=w.truncated | cut, done=w.done | cut | new.done)
    # A frozen lane's push was dropped, so its stack arrays need no select.
    return new, stack_board, stack_mask, event


def _check(branch: str, techniques: str, max_tokens: int) -> None:
    if branch not in BRANCH_ORDERS:
        raise ValueError(f"branch must be one of {BRANCH_ORDERS}, got {branch!r}")
    if techniques not in TECHNIQUES:
        raise ValueError(f"techniques must be one of {TECHNIQUES}, got {techniques!r}")
    if max_tokens < FILL_WORDS:
        raise ValueError(f"max_tokens={max_tokens}: must be at least {FILL_WORDS}")


def _write_windows(buffer_NxW, rows_B, starts_B, words_BxE):
    """``buffer[rows[b], starts[b]:starts[b] + E] = words[b]`` for every b, in one scatter; rows
    outside the buffer (idle lanes) are dropped."""
    dims = jax.lax.ScatterDimensionNumbers(update_window_dims=(1,), inserted_window_dims=(0,),
                                           scatter_dims_to_operand_dims=(0, 1))
    return jax.lax.scatter(buffer_NxW, jnp.stack([rows_B, starts_B], axis=1), words_BxE, dims,
                           mode=jax.lax.GatherScatterMode.FILL_OR_DROP)


_RESULTS = ("length", "direct_length", "solved", "truncated", "guesses", "reverts", "board_81")


def _run(puzzles_Nx81, branch: str, techniques: str, max_tokens: int, lanes: int) -> Traces:
    """The searches of ``N`` puzzles on ``lanes`` lanes, one event per lane per iteration.

    A lane that finishes its puzzle records it and takes the next one, so a long trace holds up
    one lane, not the batch. The loop runs over all lanes at once (rather than a ``vmap`` of one
    puzzle's loop, whose finished lanes would be selected back into place at every iteration,
    copying the buffers), and each iteration writes every lane's words into the shared output
    buffers with one windowed scatter.
    """
    n = puzzles_Nx81.shape[0]
    step = jax.vmap(functools.partial(_step, branch=branch, techniques=techniques, max_tokens=max_tokens))
    start = jax.vmap(_start)
    plan = jax.vmap(techniques_lib.pass_fill)
    served_lanes = max(1, lanes // ELIMINATION_SHARE)

    def eliminations(lane):
        """Each lane's next fill of the pass, and the elimination step of up to ``served_lanes``
        lanes that want one (the most costly step, so it is run on those lanes only); the others
        that want one stall. Only with ``full``."""
        if techniques == "singles":
            no_B = jnp.zeros((lanes,), bool)
            return None, lane.mask_81, no_B, no_B
        planned_B = plan(lane.board_81, lane.mask_81, lane.cursor)
        want_B = planned_B.wants_elimination & lane.deducing & ~lane.done
        served_K = jnp.nonzero(want_B, size=served_lanes, fill_value=lanes)[0]
        eliminated_K, struck_K = jax.vmap(techniques_lib.eliminate)(lane.mask_81[jnp.minimum(served_K, lanes - 1)])
        eliminated_B = lane.mask_81.at[served_K].set(eliminated_K, mode="drop")
        struck_B = jnp.zeros((lanes,), bool).at[served_K].set(struck_K, mode="drop")
        stall_B = want_B & ~jnp.zeros((lanes,), bool).at[served_K].set(True, mode="drop")
        return planned_B, eliminated_B, struck_B, stall_B

    def body(state):
        lane, stack_board, stack_mask, trace, direct, results, taken = state
        new, stack_board, stack_mask, event = step(lane, stack_board, stack_mask, *eliminations(lane))
        trace = _write_windows(trace, lane.row, lane.length, event.words)
        direct = _write_windows(direct, jnp.where(event.writes_direct, lane.row, n), event.direct_start,
                                event.direct_words)
        finished_B = new.done & (lane.row < n)
        done_rows = jnp.where(finished_B, lane.row, n)
        results = {k: v.at[done_rows].set(getattr(new, k), mode="drop") for k, v in results.items()}
        next_rows = taken + jnp.cumsum(finished_B) - 1
        fresh = start(jnp.where(next_rows < n, next_rows, n), puzzles_Nx81[jnp.minimum(next_rows, n - 1)])
        fresh = fresh._replace(done=next_rows >= n)
        lane = jax.tree.map(lambda f, x: jnp.where(finished_B.reshape((-1,) + (1,) * (x.ndim - 1)), f, x), fresh, new)
        return lane, stack_board, stack_mask, trace, direct, results, taken + jnp.sum(finished_B)

    lane = start(jnp.arange(lanes), puzzles_Nx81[:lanes])
    probe = jax.tree.map(lambda x: x[0], lane)
    state = (lane, jnp.zeros((lanes, DEPTH, 81), jnp.int8), jnp.zeros((lanes, DEPTH, 81), jnp.int16),
             jnp.full((n, max_tokens + EVENT_WORDS), tok.MASK, jnp.int32),
             jnp.full((n, DIRECT_WORDS + FILL_WORDS), tok.MASK, jnp.int32),
             {k: jnp.zeros((n,) + getattr(probe, k).shape, getattr(probe, k).dtype) for k in _RESULTS},
             jnp.int32(lanes))
    _, _, _, trace, direct, results, _ = jax.lax.while_loop(lambda s: jnp.any(s[0].row < n), body, state)
    # The last line's "n" is dropped: a trace ends with its last word.
    length_N = jnp.maximum(results["length"] - 1, 0)
    direct_length_N = jnp.maximum(results["direct_length"] - 1, 0)
    return Traces(
        trace_BxL=jnp.where(jnp.arange(max_tokens) < length_N[:, None], trace[:, :max_tokens], tok.MASK),
        length_B=length_N,
        direct_BxM=jnp.where(jnp.arange(DIRECT_WORDS) < direct_length_N[:, None], direct[:, :DIRECT_WORDS], tok.MASK),
        direct_length_B=direct_length_N, solved_B=results["solved"], truncated_B=results["truncated"],
        guesses_B=results["guesses"], reverts_B=results["reverts"], board_Bx81=results["board_81"])


def write_trace(puzzle_81, branch: str = "fewest", techniques: str = "singles", max_tokens: int = 4096) -> Traces:
    """The trace and direct solution of one puzzle (int [81], 0 for open cells); see ``Traces``.

    ``max_tokens`` is the trace buffer's length. Traceable in ``puzzle_81``; for many puzzles use
    ``trace_batch``, which runs faster than a ``vmap`` of this.
    """
    _check(branch, techniques, max_tokens)
    traces = _run(jnp.asarray(puzzle_81)[None], branch, techniques, max_tokens, lanes=1)
    return jax.tree.map(lambda x: x[0], traces)


@functools.partial(jax.jit, static_argnames=("branch", "techniques", "max_tokens", "lanes"))
def trace_batch(puzzles_Bx81, branch: str = "fewest", techniques: str = "singles", max_tokens: int = 4096,
                lanes: int | None = None) -> Traces:
    """The traces and direct solutions of a batch of puzzles [B, 81] (see ``write_trace``), jitted.

    ``lanes`` puzzles are searched at a time (default ``LANE_SHARE`` of the batch, at least 1): a
    lane that finishes takes the next puzzle, so the few very long traces do not hold up the rest.
    The result does not depend on ``lanes``.
    """
    _check(branch, techniques, max_tokens)
    batch = puzzles_Bx81.shape[0]
    if batch < 1 or puzzles_Bx81.shape[1:] != (81,):
        raise ValueError(f"puzzles_Bx81 must have shape [B >= 1, 81], got {puzzles_Bx81.shape}")
    lanes = max(1, int(batch * LANE_SHARE)) if lanes is None else lanes
    if not 1 <= lanes <= batch:
        raise ValueError(f"lanes={lanes}: must be in 1..{batch} (the batch size)")
    return _run(jnp.asarray(puzzles_Bx81), branch, techniques, max_tokens, lanes)


def sequences(puzzle_81, body_L, body_length, max_len: int):
    """The training sequence of a puzzle and a trace or direct solution, as ids [max_len] and length.

    ``START original : n <clue lines> solving n SOL_S n <body> n SOL_E END`` (``sudoku.md``), the
    clue lines ``(r, c) = v n`` in row-major order, ``MASK`` after the end. Also returns the prompt
    length (the words up to and including ``SOL_S n``; at most the length). A sequence longer than
    ``max_len`` is cut. The body is taken as complete: pass a truncated trace and it still gets
    ``n SOL_E END`` (leave such traces out, or cut the sequence at ``max_len`` instead).
    """
    puzzle_81 = jnp.asarray(puzzle_81, jnp.int32)
    clue_81 = puzzle_81 > 0
    clue_words = jnp.stack([tok.CELL0 + jnp.arange(81), jnp.full((81,), tok.EQUALS), puzzle_81,
                            jnp.full((81,), tok.NEWLINE)], axis=1).astype(jnp.int32)  # [81, 4]
    head = jnp.array([tok.START, tok.ORIGINAL, tok.COLON, tok.NEWLINE], jnp.int32)
    middle = jnp.array([tok.SOLVING, tok.NEWLINE, tok.SOL_S, tok.NEWLINE], jnp.int32)
    tail = jnp.array([tok.NEWLINE, tok.SOL_E, tok.END], jnp.int32)
    clues = jnp.sum(clue_81)
    prompt_length = 8 + FILL_WORDS * clues
    out = jnp.full((max_len + 4 * 81 + body_L.shape[-1] + 16,), tok.MASK, jnp.int32)
    out = out.at[:4].set(head)
    clue_pos = 4 + FILL_WORDS * (jnp.cumsum(clue_81) - 1)
    out = out.at[jnp.where(clue_81[:, None], clue_pos[:, None] + jnp.arange(4), out.shape[0])].set(clue_words,
                                                                                                    mode="drop")
    out = jax.lax.dynamic_update_slice(out, middle, (prompt_length - 4,))
    body_pos = jnp.arange(body_L.shape[-1])
    out = out.at[jnp.where(body_pos < body_length, prompt_length + body_pos, out.shape[0])].set(
        jnp.asarray(body_L, jnp.int32), mode="drop")
    out = jax.lax.dynamic_update_slice(out, tail, (prompt_length + body_length,))
    length = prompt_length + body_length + 3
    ids = jnp.where(jnp.arange(max_len) < jnp.minimum(length, max_len), out[:max_len], tok.MASK)
    length = jnp.minimum(length, max_len)
    return ids, length, jnp.minimum(prompt_length, length)
