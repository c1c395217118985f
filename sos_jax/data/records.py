"""Datasets of token-id records as ArrayRecord shards in the TFDS layout: written split by split,
resumable, and read back with every shard checked. Task-agnostic: ``countdown_tfds`` /
``countdown_writer`` and ``sudoku_tfds`` / ``sudoku_writer`` give the builder, the record layout and
the examples.

A form of a dataset lives in ``DIR/<name>/<form>/<version>/``. ``write_form`` writes it into
``incomplete.<version>/`` and renames that folder when every split is done, with
``dataset_info.json``, ``features.json`` and ``metadata.json`` (the settings and per-split
statistics) written by TFDS itself; then ``tfds.data_source`` reads it. Records stream to disk as
``tf.Example`` protos serialized deterministically, so the same settings give byte-identical files.
A finished split is recorded in ``progress.json``: a rerun after a crash with the same settings
keeps the finished splits and writes only the rest; other settings start the folder afresh. Until
the rename, an earlier dataset in ``<version>/`` stays untouched.

On several processes every process runs the examples (the device work is split over all of them),
and the main process alone writes the files, from its own view of what is already written.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from sos_jax import distributed
from sos_jax.data import DataError
from sos_jax.files import write_atomic

RECORDS_PER_SHARD = 50_000
WRITER_OPTIONS = "group_size:1"  # one record per chunk: fast random access for global shuffles
PARTIAL = "incomplete."  # prefix of the folder a form is written into
PROGRESS = "progress.json"
BYTES, INTS, INT = "bytes", "ints", "int"  # how a field is stored: uint8 ids as bytes, an int list, one int


def version_dir(data_dir: str, name: str, form: str, version: str) -> str:
    """Where the ``form`` dataset of builder ``name`` lives under ``data_dir``."""
    return os.path.join(data_dir, name, form, version)


def serialize(example: dict[str, Any], layout: dict[str, str]) -> bytes:
    """One record: a ``tf.Example`` of the fields ``layout`` names (``BYTES``, ``INTS`` or ``INT``)."""
    from tensorflow_datasets.proto import tf_example_pb2

    proto = tf_example_pb2.Example()
    feature = proto.features.feature
    for name, kind in layout.items():
        value = example[name]
        if kind == BYTES:
            feature[name].bytes_list.value.append(np.asarray(value, np.uint8).tobytes())
        elif kind == INTS:
            feature[name].int64_list.value.extend(int(x) for x in np.asarray(value).reshape(-1))
        else:
            feature[name].int64_list.value.append(int(value))
    return proto.SerializeToString(deterministic=True)


def _template(folder: str, name: str, split: str):
    return tfds.core.naming.ShardedFileTemplate(data_dir=folder, dataset_name=name, split=split,
                                                filetype_suffix="array_record")


def _write_split(folder: str, name: str, split: str, examples: Iterator[dict], layout: dict[str, str],
                 report: Callable[[list[dict]], dict], progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Writes one split's shards into ``folder``; returns its shard lengths, bytes and ``report``
    of the records (the scalar fields of every record)."""
    from array_record.python import array_record_module

    scalars: list[dict] = []
    parts: list[str] = []
    lengths: list[int] = []
    writer = None
    for example in examples:
        if writer is None or lengths[-1] == RECORDS_PER_SHARD:
            if writer is not None:
                writer.close()
            parts.append(os.path.join(folder, f".{split}.part-{len(parts):05d}"))
            writer = array_record_module.ArrayRecordWriter(parts[-1], WRITER_OPTIONS)
            lengths.append(0)
        writer.write(serialize(example, layout))
        lengths[-1] += 1
        scalars.append({k: example[k] for k, kind in layout.items() if kind == INT} | {"tokens": example["tokens"]})
        if progress is not None:
            progress(1)
    if writer is None:
        raise DataError(f"split {split}: no records to write")
    writer.close()
    paths = [os.fspath(p) for p in _template(folder, name, split).sharded_filepaths(len(parts))]
    for part, path in zip(parts, paths):
        os.replace(part, path)
    return {"shard_lengths": lengths, "num_bytes": sum(os.path.getsize(p) for p in paths), "report": report(scalars)}


def write_form(final: str, builder: tfds.core.DatasetBuilder, settings: dict[str, Any],
               splits: Iterator[tuple[str, Callable[[], Iterator[dict]]]], layout: dict[str, str],
               report: Callable[[list[dict]], dict], progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Writes (or completes) one form into ``final`` (see the module doc); returns its metadata.

    ``splits`` yields ``(split, make_examples)`` in order, ``builder`` is the form's (unwritten)
    builder, ``settings`` what makes the data (a rerun with other settings starts afresh),
    ``report(records)`` a split's statistics from its records' scalar fields and tokens, and
    ``progress(n)`` is called as records are written.
    """
    name = builder.name
    folder = os.path.join(os.path.dirname(final), PARTIAL + os.path.basename(final))
    main = distributed.is_main_process()
    state = distributed.agree(lambda: _read_progress(folder))
    if state.get("settings") != settings:
        if main:
            shutil.rmtree(folder, ignore_errors=True)
        state = {"settings": settings, "splits": {}}
    if main:
        os.makedirs(folder, exist_ok=True)
    for split, make_examples in splits:
        if split in state["splits"]:
            continue  # finished by an earlier run with the same settings
        if not main:
            for _ in make_examples():  # the device work is every process's; the files are the main one's
                pass
            continue
        state["splits"][split] = _write_split(folder, name, split, make_examples(), layout, report, progress)
        write_atomic(os.path.join(folder, PROGRESS), json.dumps(state))
    # the main process completes the form; the others wait for it (and get its metadata)
    return distributed.agree(lambda: _complete(folder, final, builder, settings, state))


def _complete(folder: str, final: str, builder: tfds.core.DatasetBuilder, settings: dict[str, Any],
              state: dict) -> dict[str, Any]:
    """Writes the form's TFDS metadata into ``folder`` and renames it ``final``; returns the metadata."""
    name = builder.name
    info = builder.info
    info.set_file_format("array_record", override=True)
    info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=done["shard_lengths"], num_bytes=done["num_bytes"],
                            filename_template=_template(folder, name, split))
        for split, done in state["splits"].items()]))
    metadata = {**settings, "splits": {split: done["report"] for split, done in state["splits"].items()}}
    info.metadata.update(metadata)
    info.write_to_directory(folder)
    os.remove(os.path.join(folder, PROGRESS))
    if os.path.exists(final):
        shutil.rmtree(final)  # the caller decided to replace it; the new form is complete
    os.rename(folder, final)
    return metadata


def _read_progress(folder: str) -> dict:
    try:
        with open(os.path.join(folder, PROGRESS)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Store:
    """Where the forms of one builder's datasets live, and how to open them: ``version_dir``,
    ``load_builder`` and ``open_split`` for builder ``name`` at ``version`` with ``forms``, written
    by the dataset job with ``config_file``."""

    def __init__(self, name: str, version: str, forms: tuple[str, ...], config_file: str):
        self.name, self.version, self.forms, self.config_file = name, version, forms, config_file

    def how_to_write(self) -> str:
        """The command that writes a dataset of this builder."""
        return f"python -m sos_jax.main --config={self.config_file} --workdir=DIR"

    def version_dir(self, data_dir: str, form: str) -> str:
        """Where the ``form`` dataset lives under ``data_dir``."""
        return version_dir(data_dir, self.name, form, self.version)

    def load_builder(self, data_dir: str, form: str) -> tfds.core.DatasetBuilder:
        """The builder of a written dataset; DataError names the folder if there is none."""
        if form not in self.forms:
            raise ValueError(f"form={form!r}: must be one of {', '.join(self.forms)}")
        folder = self.version_dir(data_dir, form)
        if not os.path.isfile(os.path.join(folder, "dataset_info.json")):
            raise DataError(f"{folder}: no complete {self.name}/{form} dataset here (dataset_info.json missing); "
                            f"write one with {self.how_to_write()}")
        return tfds.builder(f"{self.name}/{form}", data_dir=data_dir)

    def open_split(self, data_dir: str, form: str, split: str) -> CheckedSource:
        """The records of one split, after checking that every shard file is there and readable."""
        return open_split(self.load_builder(data_dir, form), self.version_dir(data_dir, form), split)


class WrittenBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder whose data the dataset job writes (``STORE``: its ``Store``), so that
    ``download_and_prepare`` only says how to write it; its ``DatasetInfo`` comes from the class's
    ``DESCRIPTION``, ``HOMEPAGE``, ``CITATION`` and ``features``."""

    STORE: Store
    DESCRIPTION: str  # what the dataset holds
    HOMEPAGE: str
    CITATION: str
    features: Callable[[], tfds.features.FeaturesDict]  # the record layout (a staticmethod)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION, features=self.features(),
                                     homepage=self.HOMEPAGE, citation=self.CITATION,
                                     disable_shuffling=True,  # records keep problem order; pipelines shuffle
                                     metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        raise DataError(f"{self.data_dir}: {self.STORE.name} datasets are written by the dataset job: "
                        f"{self.STORE.how_to_write()} (then read them with data_dir=DIR)")

    def _generate_examples(self):
        raise DataError(f"{self.STORE.name}: written by the dataset job, not by download_and_prepare")


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


def open_split(builder: tfds.core.DatasetBuilder, folder: str, split: str) -> CheckedSource:
    """The records of one split of ``builder`` (written in ``folder``), after checking that every
    shard file is there and readable."""
    from array_record.python import array_record_module

    if split not in builder.info.splits:
        raise DataError(f"{folder}: no split {split!r}; it has {', '.join(builder.info.splits)}")
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
