"""The grain input pipeline: records of token ids in, sharded training batches out.

Every host runs the same grain pipeline over its own share of the records:

1. ``MapDataset.source(source)``: the records;
2. ``.seed(seed).shuffle()``: a global shuffle of them (the same order on every host), reshuffled
   every epoch by
3. ``.repeat(num_epochs)`` (``None``: forever);
   then ``[process_index::process_count]``: this host's share of that order. Without packing,
   global batch ``k`` thus holds the same records for any number of hosts (the rows in another
   order), so the loss of a step does not depend on the process count;
4. ``.map``: a record's ``tokens`` become one example (``batch.example``: the task's BOS and EOS added, cut to
   ``seq_len``, the prompt line's weights zeroed when asked);
5. ``FirstFitPackIterDataset``: examples packed first-fit into rows of ``seq_len`` tokens, or, without
   packing, one example per row (the same packer, limited to one sequence per row). ``inputs``,
   ``targets`` and ``weights`` have equal lengths, so they are packed as one sequence: ``targets`` and
   ``weights`` ride along as sequence meta features, and the packer's ``inputs_segment_ids`` and
   ``inputs_positions`` become the batch's ``segment_ids`` and ``positions``;
6. ``.batch(rows, drop_remainder=True)``, where ``rows = global_batch_size // process_count``.

Records are read by grain's reader threads. With ``worker_count > 0`` (``mp_prefetch``), that many
processes each pack and batch their own share of the shuffled examples; otherwise packing runs in the
main process, overlapping the accelerator's work since JAX dispatches a training step asynchronously.

``Batches`` wraps the grain iterator: it turns every host batch into global ``jax.Array``s sharded
over the mesh's batch axes, and exposes the iterator's state (``get_state``/``set_state``, and orbax
v1's ``save``/``load``), so ``ocp.save_checkpointables(path, {"data": batches})`` records the exact
position in the stream and ``ocp.load_checkpointables(path, {"data": fresh})`` resumes from it.
"""

from __future__ import annotations

import functools
import math
import os

import grain
import jax
import numpy as np
from absl import flags

from sos_jax import distributed, parallel
from sos_jax.data import batch


def _example(record, *, seq_len: int, mask_prompt: bool, task: batch.Task) -> dict[str, np.ndarray]:
    """One record's ``inputs``, ``targets`` and ``weights`` (other keys of the record are ignored)."""
    return batch.example(np.asarray(record["tokens"]), seq_len=seq_len, mask_prompt=mask_prompt, task=task)


def _batch_layout(packed_BxL: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """FirstFitPack's keys and dtypes -> the batch layout of ``sos_jax.data.batch``."""
    renamed = {"inputs": packed_BxL["inputs"], "targets": packed_BxL["targets"],
               "weights": packed_BxL["weights"], "segment_ids": packed_BxL["inputs_segment_ids"],
               "positions": packed_BxL["inputs_positions"]}
    return {k: v.astype(batch.BATCH_DTYPES[k], copy=False) for k, v in renamed.items()}


class Batches:
    """Iterator of global batches (dicts of ``[B, L]`` ``jax.Array``s) with checkpointable state."""

    def __init__(self, host_iterator: grain.DatasetIterator, sharding: jax.sharding.NamedSharding,
                 global_shape: tuple[int, int], finite: bool = False):
        self._it = host_iterator
        self.sharding = sharding
        self.global_shape = global_shape
        self._finite = finite

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        """The next global batch, each array sharded with ``batch_sharding(mesh)``."""
        return {k: jax.make_array_from_process_local_data(self.sharding, v, self.global_shape)
                for k, v in self.next_local().items()}

    def next_local(self) -> dict[str, np.ndarray]:
        """The next batch as this host's numpy rows (``[B / process_count, L]``), kept on the host.

        A finite stream (``num_epochs``) raises StopIteration at its end; on several processes it
        ends for all of them at the first batch one of them lacks (their shares of the last epoch
        may pack into different numbers of rows), so that none waits for the others in a step.
        """
        rows = next(self._it, None)
        ended = rows is None
        if self._finite and distributed.is_multiprocess():
            ended = not distributed.every_process(not ended)
        if ended:
            raise StopIteration
        return rows

    def get_state(self) -> dict:
        """The grain iterator state: where the stream stands after the last batch taken."""
        return self._it.get_state()

    def set_state(self, state: dict) -> None:
        """Moves the stream to a state from ``get_state`` (of a pipeline built with the same arguments)."""
        self._it.set_state(state)

    async def save(self, directory):
        """Orbax v1 ``StatefulCheckpointable``: writes this host's iterator state under ``directory``."""
        return await self._it.save(directory)

    async def load(self, directory):
        """Orbax v1 ``StatefulCheckpointable``: restores this host's iterator state from ``directory``."""
        return await self._it.load(directory)

    def close(self) -> None:
        """Stops grain's reader threads and worker processes."""
        self._it.close()


def batches(source, *, seq_len: int, global_batch_size: int, packing: bool, mask_prompt: bool, seed: int,
            shuffle: bool = True, num_epochs: int | None = None, mesh: jax.sharding.Mesh | None = None,
            worker_count: int = 0, packing_bins: int | None = None, read_threads: int | None = None,
            task: batch.Task = batch.COUNTDOWN) -> Batches:
    """Training batches of ``seq_len`` tokens from ``source``'s records (dicts with 1-D ``tokens``),
    each record framed by ``task``'s ``bos`` and ``eos``.

    The same arguments give the same batches. ``packing_bins`` is how many rows first-fit packing
    fills at once (default: this host's rows per batch); more bins waste less padding.
    ``read_threads`` is how many threads read records ahead (default: one per CPU core, at most
    16; grain polls every record in flight, so more threads than cores only cost time).
    """
    mesh = parallel.data_mesh() if mesh is None else mesh
    sharding = parallel.batch_sharding(mesh)
    axes = sharding.spec[0] or ()
    batch_devices = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
    hosts = jax.process_count()
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 (BOS and one token), got {seq_len}")
    if global_batch_size < 1 or global_batch_size % hosts or global_batch_size % batch_devices:
        raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of the process "
                         f"count ({hosts}) and of the devices on the mesh's batch axes ({batch_devices})")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be None (forever) or at least 1, got {num_epochs}")
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}")
    read_threads = min(16, os.cpu_count() or 1) if read_threads is None else read_threads
    if read_threads < 1:
        raise ValueError(f"read_threads must be at least 1, got {read_threads}")
    if packing_bins is not None and packing_bins < 1:
        raise ValueError(f"packing_bins must be at least 1, got {packing_bins}")
    if len(source) < hosts:
        raise ValueError(f"source has {len(source)} records; each of the {hosts} processes needs at least one")
    rows = global_batch_size // hosts

    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.seed(seed).shuffle()
    ds = ds.repeat(num_epochs)[jax.process_index()::hosts]  # this host's share of the global order
    ds = ds.map(functools.partial(_example, seq_len=seq_len, mask_prompt=mask_prompt, task=task))
    ds = grain.experimental.FirstFitPackIterDataset(
        ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=16 * read_threads)),
        length_struct={k: seq_len for k in ("inputs", "targets", "weights")},
        num_packing_bins=packing_bins or rows,
        seed=seed,
        shuffle_bins=shuffle and packing,  # spreads full and sparse rows when bins > rows
        meta_features=("targets", "weights"),
        max_sequences_per_bin=None if packing else 1,
    )
    ds = ds.batch(rows, drop_remainder=True).map(_batch_layout)
    if worker_count:
        if not flags.FLAGS.is_parsed():  # grain 0.2.18 reads an absl flag here (google/grain#1355)
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return Batches(iter(ds), sharding, (global_batch_size, seq_len), finite=num_epochs is not None)
