"""Fixed vocabulary for the Countdown Stream-of-Search text.

Ids are stable across versions: new tokens may only be appended. Every digit is its own token,
the keyword phrases and frequent punctuation groups of the format are single tokens, and every
other printable ASCII character is a single-character token, so that any ASCII text encodes.
Encoding is greedy longest match; the on-device trace writers emit exactly that tokenization,
so ``encode(decode(ids)) == ids`` for every generated trace.
"""

from __future__ import annotations

import re
import string

import numpy as np

PAD, BOS, EOS = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
DIGIT0 = 3  # ids 3..12 are the digits 0..9

PHRASES = (
    "Current State: ",
    "], Operations: [",
    "Exploring Operation: ",
    ", Resulting Numbers: [",
    "Generated Node #",
    "] Operation: ",
    "] from Operation: ",
    "Moving to Node #",
    " equal: Goal Reached\n",
    " unequal: No Solution\n",
    "No solution found.",
    ":[",
    ": [",
    ": ",
    ", ",
    "', '",
    "']\n",
    "]\n",
)

_SINGLE_CHARS = tuple(
    c for c in string.printable if c not in string.digits and c not in "\t\r\x0b\x0c"
)

VOCAB: tuple[str, ...] = SPECIAL_TOKENS + tuple(string.digits) + PHRASES + _SINGLE_CHARS
VOCAB_SIZE = len(VOCAB)
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
assert len(TOKEN_ID) == VOCAB_SIZE, "duplicate token in the Countdown vocabulary"

# Ids the on-device writers and verifier use.
CURRENT_STATE = TOKEN_ID["Current State: "]
OPERATIONS_OPEN = TOKEN_ID["], Operations: ["]
EXPLORING = TOKEN_ID["Exploring Operation: "]
RESULTING = TOKEN_ID[", Resulting Numbers: ["]
GENERATED = TOKEN_ID["Generated Node #"]
NODE_OPERATION = TOKEN_ID["] Operation: "]
FROM_OPERATION = TOKEN_ID["] from Operation: "]
MOVING = TOKEN_ID["Moving to Node #"]
GOAL = TOKEN_ID[" equal: Goal Reached\n"]
NO_GOAL = TOKEN_ID[" unequal: No Solution\n"]
NO_SOLUTION = TOKEN_ID["No solution found."]
COLON_BRACKET = TOKEN_ID[":["]
COLON_SPACE_BRACKET = TOKEN_ID[": ["]
COLON_SPACE = TOKEN_ID[": "]
COMMA_SPACE = TOKEN_ID[", "]
QUOTE_SEP = TOKEN_ID["', '"]
QUOTE_CLOSE = TOKEN_ID["']\n"]
BRACKET_CLOSE = TOKEN_ID["]\n"]
QUOTE = TOKEN_ID["'"]
COMMA = TOKEN_ID[","]
EQUALS = TOKEN_ID["="]
NEWLINE = TOKEN_ID["\n"]
# Operator ids in the order the environment numbers them: + * - /
OP_TOKENS = tuple(TOKEN_ID[c] for c in "+*-/")

_PATTERN = re.compile("|".join(re.escape(t) for t in sorted(VOCAB[3:], key=len, reverse=True)))
_DECODE_TABLE = np.array(("",) * len(SPECIAL_TOKENS) + VOCAB[3:], dtype=object)


class UnknownCharacterError(ValueError):
    """Raised when text holds a character outside the Countdown vocabulary."""


def encode(text: str) -> list[int]:
    """Token ids of ``text`` by greedy longest match; raises on a character outside the vocabulary."""
    ids: list[int] = []
    pos = 0
    for match in _PATTERN.finditer(text):
        if match.start() != pos:
            break
        ids.append(TOKEN_ID[match.group()])
        pos = match.end()
    if pos != len(text):
        raise UnknownCharacterError(
            f"character {text[pos]!r} (U+{ord(text[pos]):04X}) at offset {pos} is not in the "
            "Countdown vocabulary"
        )
    return ids


def decode(ids) -> str:
    """Text of a sequence of token ids; special tokens (PAD, BOS, EOS) decode to nothing."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    bad = (ids < 0) | (ids >= VOCAB_SIZE)
    if bad.any():
        raise ValueError(f"token id {int(ids[bad][0])} is outside the Countdown vocabulary (size {VOCAB_SIZE})")
    return "".join(_DECODE_TABLE[ids])


def decode_batch(ids_BxL, lengths_B) -> list[str]:
    """Texts of the first ``lengths_B[b]`` tokens of each row of a [batch, max_len] id buffer."""
    ids_BxL = np.asarray(ids_BxL)
    return [decode(row[:n]) for row, n in zip(ids_BxL, np.asarray(lengths_B))]
