"""The TFDS builder of Countdown datasets: ArrayRecord shards of token ids, TensorFlow not needed.

One builder, ``sos_countdown``, with two configs, the two forms of the same problems:
``sos_countdown/sos`` (Stream-of-Search traces) and ``sos_countdown/ot`` (optimal paths). Its
splits are those of ``countdown_problems.SPLITS`` (train, val_seen, test_seen, val_unseen,
test_unseen). The files are written by ``countdown_writer`` (the ``dataset`` job) in the TFDS
layout, with the settings of the run (``GenerateParams`` or ``ImportParams``) and per-split
statistics in the dataset's ``metadata.json``. Reading needs only the data folder::

    tfds.data_source("sos_countdown/sos", data_dir=DIR)["train"][0]   # or open_split(DIR, "sos", "train")
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from sos_jax.data import records

NAME = "sos_countdown"
VERSION = "1.0.0"
FORMS = ("sos", "ot")
STORE = records.Store(NAME, VERSION, FORMS, "configs/countdown_data.py")
UNKNOWN = -1  # strategy or heuristic of an imported record that does not say


@dataclasses.dataclass(frozen=True)
class GenerateParams:
    """How the ``dataset`` job makes a dataset on device (every field changes the data)."""

    seed: int
    split_seed: int
    sizes: tuple[tuple[str, int], ...]  # (split, problems), splits of countdown_problems.SPLITS
    spec: Any  # envs.countdown.CountdownSpec
    mix: Any  # search.countdown.Mix (the "sos" form)
    max_len: int  # traces longer than this are stored cut (flag ``total`` > ``length``)
    batch_size: int  # problems per on-device call (does not change the data)

    def describe(self) -> dict[str, Any]:
        """The parameters as plain JSON values (what the metadata records)."""
        out = dataclasses.asdict(self)
        out["sizes"] = dict(self.sizes)
        return json.loads(json.dumps(out))


@dataclasses.dataclass(frozen=True)
class ImportParams:
    """Files in the original SoS JSON format to import, one per split."""

    files: tuple[tuple[str, str], ...]  # (split, path)

    def describe(self) -> dict[str, Any]:
        """The parameters as plain JSON values (what the metadata records)."""
        return {"files": dict(self.files)}


def features() -> tfds.features.FeaturesDict:
    """The record layout: the trace's token ids and the problem's metadata."""
    scalar = tfds.features.Scalar
    return tfds.features.FeaturesDict({
        "tokens": tfds.features.Tensor(shape=(None,), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES,
                                       doc="trace token ids (sos_jax.tokenizers.countdown), no BOS/EOS, cut at max_len"),
        "nums": tfds.features.Tensor(shape=(None,), dtype=np.int32, doc="the input numbers, in the given order"),
        "target": scalar(np.int32, doc="the target"),
        "problem": scalar(np.int32, doc="the problem's place in its split (the same in both forms)"),
        "strategy": scalar(np.int32, doc="0 dfs, 1 bfs, 2 optimal path, -1 not recorded"),
        "heuristic": scalar(np.int32, doc="0 sum, 1 mult, -1 none or not recorded"),
        "beam": scalar(np.int32, doc="BFS beam size; 0 otherwise"),
        "solved": scalar(np.bool_, doc="the trace reaches the target (strict verifier)"),
        "length": scalar(np.int32, doc="tokens stored"),
        "total": scalar(np.int32, doc="tokens of the whole trace (more than length when cut)"),
    })


class SosCountdown(records.WrittenBuilder):
    """Countdown Stream-of-Search (``sos``) and optimal-path (``ot``) traces as token ids: the
    reader of datasets that ``countdown_writer.write_form`` wrote (``download_and_prepare`` points
    there)."""

    STORE = STORE
    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Token ids of sos_jax.tokenizers.countdown; problem metadata per record."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="sos", description="Stream-of-Search traces: the DFS / BFS mix, mistakes included."),
        tfds.core.BuilderConfig(name="ot", description="Optimal paths: the operations of one solution, same problems."),
    ]
    DESCRIPTION = ("Countdown problems (reach the target from the numbers with + - * /) and their search traces "
                   "in the Stream-of-Search text format, stored as token ids. Written by sos_jax.")
    HOMEPAGE = "https://arxiv.org/abs/2404.03683"
    CITATION = "Gandhi et al., Stream of Search (SoS): Learning to Search in Language, 2024."
    features = staticmethod(features)


version_dir = STORE.version_dir
load_builder = STORE.load_builder
open_split = STORE.open_split
