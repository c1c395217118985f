"""Jobs made of other jobs (``quickstart``, ``study``): each stage an ordinary job in a folder of the
workdir, so each can be rerun or inspected alone. A stage whose ``summary.json`` is there finished
earlier and is skipped; an interrupted pretraining resumes from its checkpoint, so rerunning the
command after a crash finishes the rest. On several processes every process runs every stage, and
what has finished is the main process's view (``distributed.agree``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from sos_jax import distributed

# A stage: (job module, its config, its folder); a job module has SUMMARY, validate and run.
Stages = dict[str, tuple[Any, Any, str]]


def finished(job, folder: str) -> bool:
    """Whether the stage in ``folder`` has written its summary (on several processes: as the main
    process sees it)."""
    return distributed.agree(lambda: os.path.exists(os.path.join(folder, job.SUMMARY)))


def validate(stages: Stages) -> None:
    """Checks every stage still to run by its own job's rules."""
    for job, stage, folder in stages.values():
        if not finished(job, folder):
            job.validate(stage, folder)


def run(stages: Stages, label: str) -> tuple[dict[str, Any], dict[str, float]]:
    """Runs (or finishes) the stages in order; returns each stage's summary and seconds."""
    seconds: dict[str, float] = {}
    results: dict[str, Any] = {}
    for index, (name, (job, stage, folder)) in enumerate(stages.items()):
        distributed.say(f"\n=== {label} {index + 1}/{len(stages)}: {name} ({folder}) ===")
        start = time.perf_counter()
        if finished(job, folder):
            distributed.say(f"{name}: finished earlier; kept")
            results[name] = distributed.agree(lambda: _load(os.path.join(folder, job.SUMMARY)))
        else:
            results[name] = job.run(stage, folder)
        seconds[name] = time.perf_counter() - start
    return results, seconds


def _load(path: str) -> Any:
    with open(path) as f:
        return json.load(f)
