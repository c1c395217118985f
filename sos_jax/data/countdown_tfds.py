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
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from sos_jax.data import DataError

NAME = "sos_countdown"
VERSION = "1.0.0"
FORMS = ("sos", "ot")
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


class SosCountdown(tfds.core.GeneratorBasedBuilder):
    """Countdown Stream-of-Search (``sos``) and optimal-path (``ot``) traces as token ids: the
    reader of datasets that ``countdown_writer.write_form`` wrote (``download_and_prepare`` points
    there)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Token ids of sos_jax.tokenizers.countdown; problem metadata per record."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="sos", description="Stream-of-Search traces: the DFS / BFS mix, mistakes included."),
        tfds.core.BuilderConfig(name="ot", description="Optimal paths: the operations of one solution, same problems."),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Countdown problems (reach the target from the numbers with + - * /) and their search traces "
                        "in the Stream-of-Search text format, stored as token ids. Written by sos_jax.",
            features=features(),
            homepage="https://arxiv.org/abs/2404.03683",
            citation="Gandhi et al., Stream of Search (SoS): Learning to Search in Language, 2024.",
            disable_shuffling=True,  # records keep problem order; pipelines shuffle
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        raise DataError(f"{self.data_dir}: {NAME} datasets are written by the dataset job: python -m sos_jax.main "
                        "--config=configs/countdown_data.py --workdir=DIR (then read them with data_dir=DIR)")

    def _generate_examples(self):
        raise DataError(f"{NAME}: written by the dataset job, not by download_and_prepare")


def version_dir(data_dir: str, form: str) -> str:
    """Where the ``form`` dataset lives under ``data_dir``."""
    return os.path.join(data_dir, NAME, form, VERSION)


def load_builder(data_dir: str, form: str) -> tfds.core.DatasetBuilder:
    """The builder of a written dataset; DataError names the folder if there is none."""
    if form not in FORMS:
        raise ValueError(f"form={form!r}: must be one of {', '.join(FORMS)}")
    folder = version_dir(data_dir, form)
    if not os.path.isfile(os.path.join(folder, "dataset_info.json")):
        raise DataError(f"{folder}: no complete {NAME}/{form} dataset here (dataset_info.json missing); write one with "
                        "python -m sos_jax.main --config=configs/countdown_data.py --workdir=DIR")
    return tfds.builder(f"{NAME}/{form}", data_dir=data_dir)


class CheckedSource:
    """A split's random-access records; a failed read raises DataError naming the shard file."""

    def __init__(self, source, paths: list[str], lengths: list[int]):
        self._source = source
        self.paths = paths
        self._ends = np.cumsum(lengths)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        try:
            return self._source[index]
        except Exception as e:  # any decoding or I/O failure: name the file it came from
            shard = int(np.searchsorted(self._ends, int(index), side="right"))
            path = self.paths[min(shard, len(self.paths) - 1)]
            raise DataError(f"{path}: record {index} cannot be read ({type(e).__name__}: {e})") from e


def open_split(data_dir: str, form: str, split: str) -> CheckedSource:
    """The records of one split, after checking that every shard file is there and readable."""
    from array_record.python import array_record_module

    builder = load_builder(data_dir, form)
    if split not in builder.info.splits:
        raise DataError(f"{version_dir(data_dir, form)}: no split {split!r}; it has {', '.join(builder.info.splits)}")
    info = builder.info.splits[split]
    paths = [os.fspath(p) for p in info.filepaths]
    lengths = [int(n) for n in info.shard_lengths]
    for path, length in zip(paths, lengths):
        if not os.path.isfile(path):
            raise DataError(f"{path}: shard missing ({len(paths)} shards listed in dataset_info.json)")
        try:
            reader = array_record_module.ArrayRecordReader(path)
            found = reader.num_records()
            reader.close()
        except Exception as e:
            raise DataError(f"{path}: not a readable ArrayRecord shard ({type(e).__name__}: {e})") from e
        if found != length:
            raise DataError(f"{path}: holds {found} records, dataset_info.json says {length}")
    return CheckedSource(builder.as_data_source(split=split), paths, lengths)
