"""Input throughput: tokens/s from the grain pipeline and from the on-device online source.

Usage::

    .venv/bin/python benchmarks/data_throughput.py [--data-dir DIR] [--seq-len 4096] [--batch 16]
        [--batches 30] [--worker-count 0] [--json]

``--data-dir`` is a dataset written by ``configs/countdown_data.py``; without it a ``--problems``
(4,000) problem SoS train split is written into a temporary folder first (not timed). In one process it measures:

1. the baseline: reading and decoding the split's records one by one (records/s, tokens/s);
2. the grain pipeline (shuffle, examples, first-fit packing, batching) to host arrays, and to
   global ``jax.Array``s on the devices; each as tokens/s and as a ratio to the baseline;
3. the online source: packed batches made on device (compilation excluded and reported apart).

Tokens are real (non-padding) tokens of the packed rows. With ``--json`` the last line is one JSON
object with these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="", help="a dataset written by configs/countdown_data.py")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--batch", type=int, default=16, help="global batch size (rows)")
    p.add_argument("--batches", type=int, default=30, help="batches timed per source, after one warm-up")
    p.add_argument("--worker-count", type=int, default=0, help="grain worker processes")
    p.add_argument("--records", type=int, default=2000, help="records read for the baseline")
    p.add_argument("--problems", type=int, default=4000, help="train problems written when --data-dir is not given")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    return p.parse_args(argv)


def _write_dataset(folder: str, problems: int) -> None:
    import jax
    from ml_collections import config_dict

    from sos_jax.jobs import dataset, fields
    from sos_jax.search.countdown import Mix

    rows = Mix().block * jax.device_count()  # every device holds whole blocks of the SoS mix
    config = config_dict.ConfigDict({
        "job": "dataset", "source": "generate", "seed": 0, "split_seed": 4,
        "splits": {"train": problems, "val_seen": 0, "test_seen": 0, "val_unseen": 0, "test_unseen": 0},
        "forms": ("sos",), "max_len": 16384, "context_len": 4096, "batch_size": -(-1000 // rows) * rows,
        "overwrite": False,
        "mix": fields.mix_config(), "env": fields.env_config(),
        "files": {s: "" for s in ("train", "val_seen", "test_seen", "val_unseen", "test_unseen")},
    })
    dataset.run(config, folder)


def _timed(take, n: int) -> tuple[float, int]:
    """Seconds for ``n`` calls of ``take()`` (after one warm-up call) and the tokens they returned."""
    take()
    start = time.perf_counter()
    tokens = sum(take() for _ in range(n))
    return time.perf_counter() - start, tokens


def main(argv=None) -> dict:
    args = _args(argv)
    import jax

    from sos_jax.data import countdown_tfds, pipeline
    from sos_jax.jobs import batches as batches_job
    from sos_jax.jobs import inputs

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or os.path.join(tmp, "data")
        if not args.data_dir:
            _write_dataset(data_dir, args.problems)
        source = countdown_tfds.open_split(data_dir, "sos", "train")

        n = min(args.records, len(source))
        start = time.perf_counter()
        read_tokens = sum(len(source[i]["tokens"]) for i in range(n))
        read_s = time.perf_counter() - start
        baseline = read_tokens / read_s

        def grain_batches():
            return pipeline.batches(source, seq_len=args.seq_len, global_batch_size=args.batch, packing=True,
                                    mask_prompt=False, seed=0, worker_count=args.worker_count)

        it = grain_batches()
        host_s, host_tokens = _timed(lambda: batches_job.batch_counts(it.next_local())["tokens"], args.batches)
        it.close()
        it = grain_batches()
        dev_s, dev_tokens = _timed(lambda: batches_job.batch_counts(jax.device_get(next(it)))["tokens"], args.batches)
        it.close()

        config = _online_config(args)
        start = time.perf_counter()
        online = inputs.make_batches(config)
        compile_s = time.perf_counter() - start
        online_s, online_tokens = _timed(lambda: batches_job.batch_counts(jax.device_get(next(online)))["tokens"],
                                         args.batches)

    result = {
        "seq_len": args.seq_len, "global_batch_size": args.batch, "batches": args.batches,
        "worker_count": args.worker_count, "records": n, "backend": jax.default_backend(), "device_count": jax.device_count(),
        "baseline_records_per_s": n / read_s, "baseline_tokens_per_s": baseline,
        "grain_host_tokens_per_s": host_tokens / host_s, "grain_device_tokens_per_s": dev_tokens / dev_s,
        "grain_host_ratio": host_tokens / host_s / baseline, "grain_device_ratio": dev_tokens / dev_s / baseline,
        "grain_fill_rate": dev_tokens / (args.batches * args.batch * args.seq_len),
        "online_tokens_per_s": online_tokens / online_s, "online_compile_s": compile_s,
        "online_fill_rate": online_tokens / (args.batches * args.batch * args.seq_len),
    }
    print(f"baseline (read + decode records): {n / read_s:,.0f} records/s, {baseline:,.0f} tokens/s")
    print(f"grain pipeline -> host arrays:    {result['grain_host_tokens_per_s']:,.0f} tokens/s "
          f"({result['grain_host_ratio']:.2f}x baseline)")
    print(f"grain pipeline -> jax.Arrays:     {result['grain_device_tokens_per_s']:,.0f} tokens/s "
          f"({result['grain_device_ratio']:.2f}x baseline; fill {result['grain_fill_rate']:.1%})")
    print(f"online source (on device):        {result['online_tokens_per_s']:,.0f} tokens/s "
          f"(fill {result['online_fill_rate']:.1%}; compile {compile_s:.1f}s apart)")
    if args.json:
        print(json.dumps(result))
    return result


def _online_config(args):
    """A locked config whose ``data`` section asks for the online source at the benchmark's shape."""
    from ml_collections import config_dict

    from sos_jax.jobs import inputs

    config = config_dict.ConfigDict({"data": inputs.data_config()})
    config.data.source = "online"
    config.data.seq_len = args.seq_len
    config.data.global_batch_size = args.batch
    config.lock()
    return config


if __name__ == "__main__":
    main()
