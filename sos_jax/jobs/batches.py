"""The ``batches`` job: draws training batches from ``config.data`` and reports what they hold.

It builds the input source a pretraining run would use (the grain pipeline over a written dataset,
or the on-device generator), takes ``config.num_batches`` batches after one warm-up batch, and
prints tokens/s, the fill rate (real tokens over ``B x L``), the loss-token share and the traces
per row, plus the first trace of the first row decoded. ``summary.json`` holds the same numbers;
a dataset read for a finite ``data.num_epochs`` may end first (the counts are then of the batches
it gave). Over several processes every process draws its rows; the counts are of whole global
batches, and process 0 alone prints and writes.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import numpy as np

from sos_jax import distributed
from sos_jax.distributed import say
from sos_jax.jobs import ConfigError, fields, inputs, report, write_atomic

SUMMARY = "summary.json"


def validate(config, workdir: str | None) -> None:
    """Checks the job's own fields and the workdir (``make_batches`` checks ``config.data``)."""
    if fields.get(config, "job") != "batches":
        raise ConfigError(f"config.job={config.job!r}: this is the 'batches' job")
    fields.integer(config, "num_batches", 1)
    fields.workdir_free(workdir, SUMMARY, fields.boolean(config, "overwrite"))


def batch_counts(batch_BxL: dict[str, np.ndarray]) -> dict[str, int]:
    """Real tokens, loss tokens and traces (segments) in a host batch."""
    seg = batch_BxL["segment_ids"]
    starts = (seg > 0) & np.concatenate([np.ones_like(seg[:, :1], bool), seg[:, 1:] != seg[:, :-1]], axis=1)
    return {"tokens": int((seg > 0).sum()), "loss_tokens": int((batch_BxL["weights"] > 0).sum()),
            "traces": int(starts.sum())}


def run(config, workdir: str) -> dict[str, Any]:
    """Draws the batches, prints the report and writes ``summary.json``."""
    import jax

    from sos_jax.tokenizers import countdown as tok

    validate(config, workdir)
    main_process = distributed.is_main_process()
    if main_process:
        os.makedirs(workdir, exist_ok=True)
    data = config.data
    start = time.perf_counter()
    it = inputs.make_batches(config)
    first = next(it, None)  # warm-up: compilation, file opening, first reads
    if first is None:
        raise ConfigError(f"config.data.num_epochs={data.num_epochs}: the dataset ends before one batch of "
                          f"{data.global_batch_size} rows")
    first = distributed.fetch(first)
    setup_s = time.perf_counter() - start
    rows, seq_len = first["inputs"].shape
    say(f"batches: source {data.source}, {rows} rows x {seq_len} tokens, packing {data.packing}, "
        f"mask_prompt {data.mask_prompt}; first batch after {setup_s:.1f}s", flush=True)

    totals = {"tokens": 0, "loss_tokens": 0, "traces": 0}
    start = time.perf_counter()
    num_batches = 0
    for batch in itertools.islice(it, config.num_batches):  # fewer if a finite dataset ends first
        counts = batch_counts(distributed.fetch(batch))
        for k in totals:
            totals[k] += counts[k]
        num_batches += 1
    run_s = time.perf_counter() - start
    if num_batches < config.num_batches:
        say(f"batches: the data (data.num_epochs={data.num_epochs}) ended after {num_batches} of "
            f"{config.num_batches} batches (besides the first)")
    capacity = max(num_batches, 1) * rows * seq_len
    summary = {
        "job": "batches",
        "source": data.source,
        "num_batches": num_batches,
        "batch_shape": [rows, seq_len],
        "setup_s": setup_s,
        "run_s": run_s,
        "batches_per_s": num_batches / run_s,
        "tokens_per_s": totals["tokens"] / run_s,
        "loss_tokens_per_s": totals["loss_tokens"] / run_s,
        "fill_rate": totals["tokens"] / capacity,
        "loss_share": totals["loss_tokens"] / capacity,
        "traces_per_row": totals["traces"] / (max(num_batches, 1) * rows),
        "backend": jax.default_backend(),
        "config": config.to_dict(),
    }
    say(f"{num_batches} batches in {run_s:.2f}s: {summary['batches_per_s']:.2f} batches/s, "
        f"{summary['tokens_per_s']:,.0f} tokens/s; fill {summary['fill_rate']:.1%}, loss tokens "
        f"{summary['loss_share']:.1%}, {summary['traces_per_row']:.2f} traces per row")
    row = first["segment_ids"][0] == 1
    say("\n=== first trace of the first batch's first row ===")
    say(report.shorten(tok.decode(first["targets"][0][row])))
    if hasattr(it, "close"):
        it.close()
    summary_path = os.path.join(workdir, SUMMARY)
    if main_process:
        write_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    say(f"\nwrote {summary_path}")
    return summary
