"""The Sudoku word vocabulary: fixed ids, lossless round trips, the records' board text."""

import json
import re
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from sos_jax.tokenizers import sudoku as tok

RECORDS = [json.loads(line) for line in (Path(__file__).parent / "data" / "sudoku_examples.jsonl").open()]


def test_ids_are_fixed():
    assert tok.VOCAB_SIZE == len(tok.VOCAB) == 109
    assert [tok.TOKEN_ID[str(d)] for d in range(10)] == list(range(10))
    words = "guess revert nocand invalid original solving = [ ] none n : ,".split()
    assert [tok.TOKEN_ID[w] for w in words] == list(range(10, 23))
    assert [tok.TOKEN_ID[w] for w in "START END MASK SOL_S SOL_E".split()] == [104, 105, 106, 107, 108]
    assert (tok.START, tok.END, tok.MASK, tok.SOL_S, tok.SOL_E) == (104, 105, 106, 107, 108)
    assert (tok.GUESS, tok.EQUALS, tok.NONE, tok.NEWLINE, tok.COMMA) == (10, 16, 19, 20, 22)
    assert tok.VOCAB[23:104] == tuple(str(i) for i in range(23, 104))
    assert [tok.cell_id(r, c) for r, c in [(0, 0), (0, 8), (1, 0), (4, 7), (8, 8)]] == [23, 31, 32, 66, 103]
    assert tok.encode("guess: (4, 7) [2, 5] = 5 \n") == [10, 21, 66, 17, 2, 22, 5, 18, 16, 5, 20]
    assert tok.encode("revert: (8, 8) [3] = none") == [11, 21, 103, 17, 3, 18, 16, 19]


@pytest.mark.parametrize("field", ["board", "trace", "shortcut"])
def test_round_trip_on_every_example(field):
    for record in RECORDS:
        ids = tok.encode(record[field])
        assert tok.decode(ids) == record[field], (record["id"], field)
        assert tok.encode(tok.decode(ids)) == ids


def test_training_sequence():
    for record in RECORDS:
        for trace in (record["trace"], record["shortcut"]):
            ids = tok.sequence(record["board"], trace)
            words = [tok.START, *tok.encode(record["board"]), tok.NEWLINE, tok.SOL_S, tok.NEWLINE,
                     *tok.encode(trace), tok.NEWLINE, tok.SOL_E, tok.END]  # fmt: skip
            assert ids == words
            assert ids[:4] == [tok.START, tok.ORIGINAL, tok.COLON, tok.NEWLINE]
            assert tok.decode(ids) == tok.sequence_text(record["board"], trace)
    text = tok.sequence_text("original: \n(0, 0) = 1  \nsolving", "(0, 1) = 2 \n(0, 2) = 3")
    assert text == "START original: \n(0, 0) = 1  \nsolving\nSOL_S\n(0, 1) = 2 \n(0, 2) = 3\nSOL_E END"


def test_board_text_from_puzzle():
    for record in RECORDS:
        assert tok.puzzle_board_text(record["puzzle"]) == record["board"], record["id"]
        assert tok.puzzle_board_text(np.array(tok.grid_values(record["puzzle"]))) == record["board"]
    with pytest.raises(ValueError, match="81"):
        tok.puzzle_board_text("123")


def test_spacing_is_read_loosely_and_written_canonically():
    loose = "guess:(0, 1)[2,5 ,8]=2\n  (0, 1)   =\t2"
    assert tok.decode(tok.encode(loose)) == "guess: (0, 1) [2, 5, 8] = 2 \n(0, 1) = 2"
    assert tok.decode(tok.encode("\n\nnocand: (1, 2)\ninvalid\n")) == "\n\nnocand: (1, 2) \ninvalid \n"


@pytest.mark.parametrize("text,word", [("guess: (9, 1) [2] = 2", "(9, 1)"), ("(0,1) = 2", "(0"),
                                       ("(0, 1) = 23", "23"), ("n", "n"), ("original: x", "x")])  # fmt: skip
def test_unknown_word_is_named(text, word):
    with pytest.raises(ValueError, match=re.escape(f"unknown word '{word}'")):
        tok.encode(text)


def test_decode_rejects_unknown_ids():
    with pytest.raises(ValueError, match="outside"):
        tok.decode([5, tok.VOCAB_SIZE])
    assert tok.decode([]) == ""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, tok.VOCAB_SIZE - 1), max_size=60))
def test_encode_inverts_decode_on_any_ids(ids):
    assert tok.encode(tok.decode(ids)) == ids
