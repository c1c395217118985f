"""Importing Countdown data in the original Stream-of-Search JSON format.

A file is one JSON list of records with ``nums``, ``target``, ``search_path`` (the SoS trace) and
``optimal_path`` (the optimal-path text), and optionally ``search_type`` (``"dfs"`` or ``"bfs_<beam>"``)
or ``strategy`` with ``beam_size``, ``heuristic`` (``"sum_heuristic"`` / ``"mult_heuristic"``),
``solution``, ``rating``. Texts are tokenized exactly (a character outside the vocabulary is an
error naming the record) and judged by the strict verifier.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import numpy as np

from sos_jax.data import DataError
from sos_jax.data.countdown_tfds import UNKNOWN
from sos_jax.envs.countdown_check import check_trace
from sos_jax.tokenizers import countdown as tok

TEXT_FIELD = {"sos": "search_path", "ot": "optimal_path"}
STRATEGY_CODES = {"dfs": 0, "bfs": 1}
HEURISTIC_CODES = {"sum_heuristic": 0, "sum": 0, "mult_heuristic": 1, "mult": 1}


def read_records(path: str) -> list[dict[str, Any]]:
    """The records of a file; DataError names the file if it is not a JSON list of objects."""
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read a JSON list of records ({type(e).__name__}: {e})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: must hold one JSON list of records (objects)")
    if not records:
        raise DataError(f"{path}: holds no records")
    return records


def search_fields(record: dict[str, Any]) -> tuple[int, int, int]:
    """``(strategy, heuristic, beam)`` codes of a record (``UNKNOWN`` where it does not say)."""
    kind = str(record.get("search_type", record.get("strategy", "")))
    name, _, beam = kind.partition("_")
    strategy = STRATEGY_CODES.get(name, UNKNOWN)
    beam_size = record.get("beam_size") or (int(beam) if beam.isdigit() else 0)
    heuristic = HEURISTIC_CODES.get(str(record.get("heuristic", "")), UNKNOWN)
    return strategy, heuristic, int(beam_size) if strategy == 1 else 0


def example(record: dict[str, Any], form: str, where: str) -> dict[str, Any]:
    """The dataset example of one record in ``form`` (``sos`` or ``ot``); DataError names ``where``."""
    field = TEXT_FIELD[form]
    nums, target, text = record.get("nums"), record.get("target"), record.get(field)
    if not isinstance(nums, list) or not nums or not all(type(x) is int for x in nums) or type(target) is not int:
        raise DataError(f"{where}: needs 'nums' (a list of ints) and 'target' (an int)")
    if not isinstance(text, str):
        raise DataError(f"{where}: needs the text field {field!r} for the {form} form")
    try:
        ids = np.asarray(tok.encode(text), np.uint8)
    except tok.UnknownCharacterError as e:
        raise DataError(f"{where}: {field}: {e}") from None
    strategy, heuristic, beam = search_fields(record) if form == "sos" else (2, UNKNOWN, 0)
    return {"tokens": ids, "nums": np.asarray(nums, np.int32), "target": target, "strategy": strategy,
            "heuristic": heuristic, "beam": beam, "solved": check_trace(text, nums, target).solved,
            "length": len(ids), "total": len(ids)}


def examples(path: str, form: str) -> Iterator[dict[str, Any]]:
    """Examples of every record of ``path`` in order, each with its place as ``problem``."""
    for i, record in enumerate(read_records(path)):
        yield {**example(record, form, f"{path}: record {i}"), "problem": i}
