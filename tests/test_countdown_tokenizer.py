"""The Countdown vocabulary: stable ids, lossless round trips, clear errors."""

import json
import string
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from sos_jax.tokenizers import countdown as tok

RECORDS = [json.loads(line) for line in (Path(__file__).parent / "data" / "countdown_examples.jsonl").open()]


def test_ids_are_stable():
    assert (tok.PAD, tok.BOS, tok.EOS, tok.DIGIT0) == (0, 1, 2, 3)
    assert tok.VOCAB[3:13] == tuple(string.digits)
    assert tok.VOCAB_SIZE == 117
    assert tok.TOKEN_ID["Current State: "] == 13 and tok.TOKEN_ID[" equal: Goal Reached\n"] == 21
    assert tok.TOKEN_ID["\n"] == 116


@pytest.mark.parametrize("field", ["trace", "optimal_path"])
def test_round_trip_on_every_example(field):
    for record in RECORDS:
        ids = tok.encode(record[field])
        assert tok.decode(ids) == record[field]
        assert len(ids) < len(record[field]) / 2  # phrases and punctuation groups are single tokens


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")
               .replace("\t", ""), max_size=200))
def test_round_trip_on_any_printable_text(text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode(tok.decode(ids)) == ids


@pytest.mark.parametrize("text,char", [("Current State: 5é", "é"), ("a\tb", "\\t"), ("ok\u00a0", "\\xa0")])
def test_unknown_character_is_named(text, char):
    with pytest.raises(tok.UnknownCharacterError, match=char.replace("\\", "\\\\")):
        tok.encode(text)


def test_decode_skips_specials_and_rejects_unknown_ids():
    ids = [tok.BOS] + tok.encode("12,34 unequal: No Solution\n") + [tok.EOS, tok.PAD]
    assert tok.decode(ids) == "12,34 unequal: No Solution\n"
    with pytest.raises(ValueError, match="outside"):
        tok.decode([5, tok.VOCAB_SIZE])
    assert tok.decode_batch(np.array([[3, 4, 0], [5, 0, 0]]), [2, 1]) == ["01", "2"]
