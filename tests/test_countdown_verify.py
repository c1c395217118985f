"""The JAX trace verifier agrees with the text checker on golden, mutated and random sequences."""

from __future__ import annotations

import jax
import numpy as np
from countdown_mutations import ROWS, mutated_traces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sos_jax.envs.countdown_check import REASONS, check_trace
from sos_jax.search import countdown_verify as cv
from sos_jax.tokenizers import countdown as tok

BATCH = 16


def verify(id_lists, problems, L, N):
    """Runs the jitted batch verifier on token id lists padded to [len(id_lists), L] and [.., N]."""
    B = len(id_lists)
    ids = np.zeros((B, L), np.int32)
    nums = np.zeros((B, N), np.int32)
    for i, (row, (ns, _)) in enumerate(zip(id_lists, problems)):
        assert len(row) <= L and len(ns) <= N
        ids[i, : len(row)] = row
        nums[i, : len(ns)] = ns
    lengths = np.array([len(r) for r in id_lists], np.int32)
    counts = np.array([len(ns) for ns, _ in problems], np.int32)
    targets = np.array([t for _, t in problems], np.int32)
    out = cv.verify_token_batch(ids, lengths, nums, counts, targets)
    return {k: np.asarray(v) for k, v in out.items()}


def assert_agrees(texts, problems, out):
    for i, (text, (nums, target)) in enumerate(zip(texts, problems)):
        v = check_trace(text, nums, target)
        got = (bool(out["solved"][i]), REASONS[int(out["reason"][i])])
        assert got == (v.solved, v.reason), (text, nums, target)
        assert abs(float(out["rating"][i]) - v.rating) < 1e-6


def test_reason_codes():
    assert len(cv.REASONS) == 9 and cv.REASONS[cv.SOLVED] == "solved"
    codes = [cv.NO_GOAL, cv.NO_STATE, cv.NO_EXPLORE, cv.OP_COUNT, cv.ARITHMETIC, cv.UNAVAILABLE]
    assert codes + [cv.NOT_TARGET, cv.GOAL_MISMATCH] == list(range(1, 9))


def test_golden_traces_and_optimal_paths():
    # Traces, optimal paths, and solved traces stripped (the goal line ends without its newline).
    solved = [r for r in ROWS if r["solved"]]
    texts = [r["trace"] for r in ROWS] + [r["optimal_path"] for r in ROWS] + [r["trace"].strip() for r in solved]
    problems = [(r["nums"], r["target"]) for r in ROWS + ROWS + solved]
    ids = [tok.encode(t) for t in texts]
    L = -(-max(map(len, ids)) // 1024) * 1024
    out = verify(ids, problems, L, N=5)
    assert_agrees(texts, problems, out)
    assert out["solved"][: len(ROWS)].tolist() == [r["solved"] for r in ROWS]
    assert out["solved"][len(ROWS) :].sum() == 108 + len(solved)


def test_single_sequence_under_jit():
    row = next(r for r in ROWS if r["solved"])
    ids = np.zeros(4096, np.int32)
    enc = tok.encode(row["optimal_path"])
    ids[: len(enc)] = enc
    out = jax.jit(cv.verify_tokens)(ids, len(enc), np.array(row["nums"], np.int32), 4, row["target"])
    assert bool(out["solved"]) and int(out["reason"]) == cv.SOLVED
    assert abs(float(out["rating"]) - (1 - 4 / 1152)) < 1e-6


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(mutated_traces(), min_size=BATCH, max_size=BATCH))
def test_mutated_traces_agree(cases):
    texts = [t for t, _, _ in cases]
    problems = [(nums, target) for _, nums, target in cases]
    out = verify([tok.encode(t) for t in texts], problems, L=1024, N=4)
    assert_agrees(texts, problems, out)


INTERESTING = [tok.DIGIT0 + d for d in range(10)] + [
    tok.CURRENT_STATE, tok.OPERATIONS_OPEN, tok.EXPLORING, tok.RESULTING, tok.GOAL, tok.COLON_BRACKET,
    tok.COMMA_SPACE, tok.QUOTE, tok.QUOTE_SEP, tok.QUOTE_CLOSE, tok.BRACKET_CLOSE, tok.COMMA, tok.EQUALS,
    *tok.OP_TOKENS, tok.PAD, tok.BOS, tok.EOS,
]  # fmt: skip


@st.composite
def token_sequence(draw):
    """(ids, (nums, target)): random ids, or a golden optimal path with random token edits."""
    if draw(st.booleans()):
        row = draw(st.sampled_from(ROWS))
        ids = tok.encode(row["optimal_path"])
        problem = (row["nums"], row["target"])
    else:
        ids = []
        nums = draw(st.lists(st.integers(0, 99), min_size=0, max_size=6))
        problem = (nums, draw(st.integers(0, 200)))
    any_id = st.one_of(st.integers(0, tok.VOCAB_SIZE - 1), st.sampled_from(INTERESTING))
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(ids)))
        kind = draw(st.sampled_from(["insert", "replace", "delete", "run"]))
        if kind == "insert" or not ids:
            ids.insert(i, draw(any_id))
        elif kind == "replace":
            ids[min(i, len(ids) - 1)] = draw(any_id)
        elif kind == "delete":
            del ids[min(i, len(ids) - 1)]
        else:
            ids[i:i] = draw(st.lists(any_id, max_size=20))
    return ids[:256], problem


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(token_sequence(), min_size=BATCH // 2, max_size=BATCH // 2))
def test_random_token_sequences(cases):
    # Each sequence as drawn, and in the canonical tokenization of its text.
    seqs = [ids for ids, _ in cases] + [tok.encode(tok.decode(ids))[:256] for ids, _ in cases]
    problems = [p for _, p in cases] * 2
    out = verify(seqs, problems, L=256, N=6)
    assert set(np.unique(out["reason"])) <= set(range(len(REASONS)))
    assert (out["solved"] == (out["reason"] == cv.SOLVED)).all()
    assert ((out["rating"] >= 0) & (out["rating"] <= 1)).all() and (out["rating"][~out["solved"]] == 0).all()
    canonical = [i for i, ids in enumerate(seqs) if tok.encode(tok.decode(ids)) == list(ids)]
    assert_agrees(
        [tok.decode(seqs[i]) for i in canonical],
        [problems[i] for i in canonical],
        {k: v[canonical] for k, v in out.items()},
    )


def _trace(state="Current State: 24:[1, 2, 3, 4], Operations: ['1*2=2', '2*3=6']\n",
           explore="Exploring Operation: 6*4=24, Resulting Numbers: [24]\n", goal="24,24 equal: Goal Reached"):
    return state + explore + goal


def _state(ops):
    return f"Current State: 24:[1, 2, 3, 4], Operations: {ops!r}\n"


def _explore(op):
    return f"Exploring Operation: {op}, Resulting Numbers: [24]\n"


P = ([1, 2, 3, 4], 24)
EDGE_CASES = [  # (text, (nums, target))
    (_trace(), P),  # 0: solved
    (_trace(goal="12345678901,24 equal: Goal Reached\n"), P),
    (_trace(goal="1,2,24,24 equal: Goal Reached\n"), P),  # 2: the goal reads "24,24"
    (_trace(goal="24,24 equal: Goal Reachedx"), P),  # 3
    (_trace(goal="24,24 equal: Goal"), P),
    (_trace(state="Current State: 24:[1,2 , 3], Operations: ['1*2=2', '2*3=6']\n",
            explore="Exploring Operation: 6*4=24, Resulting Numbers: [ ,24]\n"), P),  # 5: loose lists pass
    (_trace(state="Current State: 24:[1, 2, 3, 4], Operations: ['1*2=2', ]\n"), P),
    (_trace(state="Current State: 24:[1, 2, 3, 4], Operations: ['1*2=2' '2*3=6']\n"), P),
    (_trace(state="Current State: 24:[1, 2, 3, 4], Operations: ['1*2=2', '2*3=6']"), P),
    (_trace(state="Current State: :[1, 2, 3, 4], Operations: ['1*2=2', '2*3=6']\n"), P),
    (_trace(state=_state(["1*2=2", "2*3=6", "6-1=5", "5+1=6", "6*1=6"])), P),  # 10: more ops than slots
    (_trace(goal=""), P),
    (_trace(state=_state(["3*0=0"]), explore=_explore("0+24=24")), ([3, 24, 5], 24)),  # 12: padding is no input
    (_trace(state=_state(["0/3=0"]), explore=_explore("24+0=24")), ([0, 3, 24], 24)),  # 13
    (_trace(state=_state(["3-3=0"]), explore=_explore("24+0=24")), ([3, 3, 24], 24)),  # 14
    (_trace(state=_state(["3+3=6"])), ([3, 4, 5], 24)),
    (_trace(state=_state([]), explore=_explore("999999999*1=999999999"), goal="999999999,999999999 equal: Goal"
            " Reached"), ([999999999, 1], 999999999)),  # 16
    (_trace(state=_state([]), explore=_explore("99999*99999=9999800001"), goal="9999800001,24 equal: Goal Reached"),
     ([99999, 99999], 24)),
    (_trace(state=_state([]), explore=_explore("65536*65536=0"), goal="0,0 equal: Goal Reached"), ([65536, 65536], 0)),
    (_trace(state=_state([]), explore=_explore("8/0=0"), goal="0,0 equal: Goal Reached"), ([8, 0], 0)),
    (_trace(state=_state([]), explore=_explore("4*6=24") + "Exploring Operation\n",
            goal="24,24 equal: Goal Reached\nExploring Operation"), ([4, 6], 24)),  # 20: solved, rating 0
    (_explore("4*6=24") + _state([]) + "24,24 equal: Goal Reached", ([4, 6], 24)),  # 21
]


def test_edge_cases_agree():
    texts = [t for t, _ in EDGE_CASES]
    problems = [p for _, p in EDGE_CASES]
    out = verify([tok.encode(t) for t in texts], problems, L=256, N=6)
    assert_agrees(texts, problems, out)
    assert np.flatnonzero(out["solved"]).tolist() == [0, 2, 3, 5, 13, 14, 16, 20, 21]
    assert int(out["reason"][10]) == cv.OP_COUNT
    assert int(out["reason"][12]) == cv.UNAVAILABLE
