"""The ``quickstart`` job: the whole pipeline on a small Countdown setting, on the CPU.

Four stages, each an ordinary job in a folder of the workdir (so each can be rerun or inspected
alone):

1. ``data/``: the ``dataset`` job writes train and test splits in both forms (SoS traces and
   optimal paths) of the same problems; no test problem occurs in train.
2. ``sos/``: the ``pretrain`` job trains a model on the SoS streams;
3. ``ot/``: the same model and batch trained on the optimal paths, for ``ot_train_steps`` steps
   (by default as many epochs over the train problems as the SoS model gets: optimal paths are
   several times shorter than search traces);
4. ``eval/``: the ``eval`` job scores both and an untrained model of the same shape on the held-out
   test problems (seen and unseen targets): greedy accuracy, pass@k, accuracy within token budgets.

A stage that already finished (its ``summary.json`` is there) is skipped, and an interrupted
pretraining resumes from its checkpoint, so rerunning the command after a crash finishes the rest.
The job ends with the side-by-side table and writes ``summary.json`` (headline numbers, per-stage
times) into the workdir.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from sos_jax import distributed
from sos_jax.jobs import ConfigError, fields, stages as stages_lib, write_atomic

SUMMARY = "summary.json"


def _stages(config, workdir: str) -> dict[str, Any]:
    """``{stage: (job module, its config, its folder)}``, the configs wired to the stage folders."""
    from ml_collections import config_dict

    from sos_jax.jobs import dataset, evaluate, pretrain

    data_dir = os.path.join(workdir, "data")
    sos = config_dict.ConfigDict(config.pretrain.to_dict())
    sos.data.data_dir = data_dir
    ot = config_dict.ConfigDict(sos.to_dict())
    ot.data.form = ot.data.strategy = "ot"
    ot.train.steps = config.ot_train_steps
    for name in ("log_every", "checkpoint_every"):
        ot.train[name] = max(1, min(ot.train[name], ot.train.steps))
    evaluation = config_dict.ConfigDict(config.eval.to_dict())
    evaluation.data.data_dir = data_dir
    evaluation.checkpoint = f"sos={os.path.join(workdir, 'sos')},ot={os.path.join(workdir, 'ot')}"
    evaluation.untrained_baseline = True
    return {name: (job, stage, os.path.join(workdir, name)) for name, job, stage in (
        ("data", dataset, config.dataset), ("sos", pretrain, sos), ("ot", pretrain, ot), ("eval", evaluate, evaluation))}


def validate(config, workdir: str | None) -> None:
    """Checks every stage still to run by its own job's rules, and that the stages fit together."""
    if fields.get(config, "job") != "quickstart":
        raise ConfigError(f"config.job={config.job!r}: this is the 'quickstart' job")
    fields.workdir_free(workdir, SUMMARY, False)
    fields.integer(config, "ot_train_steps", 1)
    stages = _stages(config, workdir)
    for name in ("sos", "ot"):
        if stages[name][1].data.source != "dataset":
            raise ConfigError("config.pretrain.data.source: the quickstart trains on its own dataset ('dataset')")
    for split in stages["eval"][1].data.splits:
        if not config.dataset.splits.get(split):
            raise ConfigError(f"config.eval.data.splits: {split!r} is not written by config.dataset.splits")
    stages_lib.validate(stages)


def run(config, workdir: str) -> dict[str, Any]:
    """Runs (or finishes) the four stages; returns the summary it wrote."""
    validate(config, workdir)
    wall_start = time.perf_counter()
    stages = _stages(config, workdir)
    results, seconds = stages_lib.run(stages, "quickstart")

    splits = tuple(stages["eval"][1].data.splits)
    greedy = results["eval"]["results"].get("greedy", {})
    sampled = results["eval"]["results"].get("sampled", {})
    headline = {model: {split: {"greedy_accuracy": greedy.get(model, {}).get(split, {}).get("accuracy"),
                                "pass_at_k": sampled.get(model, {}).get(split, {}).get("pass_at_k")}
                        for split in splits}
                for model in results["eval"]["models"]}
    summary = {
        "job": "quickstart",
        "accuracy": headline,
        "final_loss": {name: results[name].get("loss") for name in ("sos", "ot")},
        "seconds": seconds,
        "wall_s": time.perf_counter() - wall_start,
        "config": json.loads(json.dumps(config.to_dict())),
    }
    if distributed.is_main_process():
        write_atomic(os.path.join(workdir, SUMMARY), json.dumps(summary, indent=2) + "\n")
    lines = [f"{'model':<10} " + " ".join(f"{split:>14}" for split in splits)]
    for model, by_split in headline.items():
        lines.append(f"{model:<10} " + " ".join(
            f"{'-' if v['greedy_accuracy'] is None else format(v['greedy_accuracy'], '.1%'):>14}"
            for v in by_split.values()))
    distributed.say("\nquickstart: held-out accuracy (strict verifier, greedy decoding)\n" + "\n".join(lines))
    distributed.say(f"quickstart: done in {summary['wall_s'] / 60:.1f} min "
                    f"({', '.join(f'{k} {v:.0f}s' for k, v in seconds.items())}); "
                    f"wrote {os.path.join(workdir, SUMMARY)}")
    return summary
