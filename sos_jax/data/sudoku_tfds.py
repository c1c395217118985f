"""The TFDS builder of Sudoku datasets: ArrayRecord shards of token ids, TensorFlow not needed.

One builder, ``sos_sudoku``, with two configs, the two forms of the same puzzles:
``sos_sudoku/bt`` (backtracking traces) and ``sos_sudoku/direct`` (direct solutions: the same fills
with every failed branch left out). Splits ``train`` and ``val``; the 200 test puzzles
(``sudoku_test``) are never written. A record's ``tokens`` are the ids of
``original : n <clue lines> solving n SOL_S n <trace> n SOL_E`` (``tokenizers.sudoku``): the
training sequence without its ``START`` and ``END``, which ``data.batch.SUDOKU`` adds. The files
are written by ``sudoku_writer`` (the ``dataset`` job with ``task="sudoku"``)::

    tfds.data_source("sos_sudoku/bt", data_dir=DIR)["train"][0]   # or open_split(DIR, "bt", "train")
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from sos_jax.data import records

NAME = "sos_sudoku"
VERSION = "1.0.0"
FORMS = ("bt", "direct")
STORE = records.Store(NAME, VERSION, FORMS, "configs/sudoku_data.py")
SPLITS = ("train", "val")
CLUE_SOURCES = ("minimal", "range")


@dataclasses.dataclass(frozen=True)
class SudokuParams:
    """How the ``dataset`` job makes a Sudoku dataset on device (every field but ``batch_size``
    changes the data)."""

    seed: int
    sizes: tuple[tuple[str, int], ...]  # (split, puzzles), splits of SPLITS
    clues: str  # "minimal": one removal pass (mean 24.4 clues); "range": clue_min..clue_max asked
    clue_min: int
    clue_max: int
    variants: int  # random symmetries written per fresh puzzle (1: the fresh puzzle's one symmetry)
    branch: str  # search.sudoku.BRANCH_ORDERS
    techniques: str  # search.sudoku.TECHNIQUES
    max_len: int  # the longest sequence kept: puzzles whose backtracking sequence is longer are left out
    batch_size: int  # puzzles per on-device call (does not change the data)

    def describe(self) -> dict[str, Any]:
        """The parameters as plain JSON values (what the metadata records)."""
        out = dataclasses.asdict(self)
        out["sizes"] = dict(self.sizes)
        return json.loads(json.dumps(out))


def features() -> tfds.features.FeaturesDict:
    """The record layout: the sequence's token ids and the puzzle's metadata."""
    scalar = tfds.features.Scalar
    board = tfds.features.Tensor(shape=(81,), dtype=np.int32, doc="row-major, 0 for an empty cell")
    return tfds.features.FeaturesDict({
        "tokens": tfds.features.Tensor(shape=(None,), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES,
                                       doc="sequence ids (sos_jax.tokenizers.sudoku) without START and END"),
        "puzzle": board,
        "solution": board,
        "problem": scalar(np.int32, doc="the puzzle's place in its split (the same in both forms)"),
        "clues": scalar(np.int32, doc="given cells"),
        "guesses": scalar(np.int32, doc="guess lines of the backtracking trace"),
        "reverts": scalar(np.int32, doc="revert lines of the backtracking trace"),
        "length": scalar(np.int32, doc="tokens stored"),
    })


class SosSudoku(records.WrittenBuilder):
    """Sudoku backtracking traces (``bt``) and direct solutions (``direct``) as token ids: the
    reader of datasets that ``sudoku_writer.write_form`` wrote."""

    STORE = STORE
    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Token ids of sos_jax.tokenizers.sudoku (the original 109 words)."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="bt", description="Backtracking traces: deductions, guesses and reverts."),
        tfds.core.BuilderConfig(name="direct", description="Direct solutions: the fills of the solving path only."),
    ]
    DESCRIPTION = ("Generated Sudoku puzzles with a unique solution, each with its backtracking trace or its "
                   "direct solution in the word-level format of the backtracking study. Written by sos_jax.")
    HOMEPAGE = "https://arxiv.org/abs/2504.07052"
    CITATION = ("Qin et al., To Backtrack or Not to Backtrack: When Sequential Search Limits Model Reasoning, "
                "2025.")
    features = staticmethod(features)


version_dir = STORE.version_dir
load_builder = STORE.load_builder
open_split = STORE.open_split
