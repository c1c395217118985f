"""The ``study`` job: one form of the backtracking study, from data to evaluation, on the same
dataset, pretraining and eval jobs as Countdown.

Three stages (``jobs.stages``), each an ordinary job in a folder of the workdir:

1. ``data/``: the ``dataset`` job writes the form's train and val splits (``config.dataset``);
2. ``model/``: the ``pretrain`` job trains a model on them (``config.pretrain``; its eval loss reads
   the val split);
3. ``eval/``: the ``eval`` job scores the model on the held-out problems (``config.eval``; for
   Sudoku the 200 test puzzles): greedy accuracy within token budgets and pass@k.

``configs/sudoku_bt.py`` and ``configs/sudoku_direct.py`` are the two Sudoku studies;
``configs/sudoku_eval.py`` puts their models side by side in one table and plot. The job writes
``summary.json`` with the headline numbers and per-stage times.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from sos_jax import distributed
from sos_jax.jobs import ConfigError, fields, stages as stages_lib, write_atomic

SUMMARY = "summary.json"
STUDY_PRESETS = ("tiny", "small", "bt-3m", "bt-17m", "bt-38m", "bt-144m")


def sudoku_config(form: str, preset: str):
    """The config of ``configs/sudoku_{bt,direct}.py``: Sudoku ``form`` (``bt`` or ``direct``) at
    ``preset`` (``tiny``: tests; ``small``: 20,000 puzzles and a 3M model; ``bt-*``: the study's
    data and model sizes, context 4,096)."""
    from ml_collections import config_dict

    from sos_jax.data.sudoku_tfds import FORMS
    from sos_jax.jobs import dataset, evaluate, pretrain
    from sos_jax.tokenizers import sudoku as tok

    if form not in FORMS or preset not in STUDY_PRESETS:
        raise ValueError(f"form={form!r}, preset={preset!r}: choose a form of {FORMS} and a preset of {STUDY_PRESETS}")
    config = config_dict.ConfigDict()
    config.job = "study"
    config.dataset = dataset.sudoku_config({"tiny": "tiny", "small": "small"}.get(preset, "default"))
    config.dataset.forms = (form,)
    config.pretrain = pretrain.default_config("bt-3m" if preset in ("tiny", "small") else preset, form=form)
    config.pretrain.model.vocab_size = tok.VOCAB_SIZE
    config.pretrain.data.update({"task": "sudoku", "source": "dataset", "form": form, "mask_prompt": False})
    config.eval = evaluate.default_config()
    config.eval.task = "sudoku"
    config.eval.data.update({"source": "test200", "splits": ("test",), "num_problems": 0})
    config.eval.budgets = (400, 512, 1024, 2048, 4096)  # backtracking: accuracy within these generated tokens
    config.eval.ks = (1, 2, 4, 8, 16)  # direct: pass@k of 16 samples at temperature 0.7
    config.eval.sampling.update({"temperature": 0.7, "num_samples": 16 if form == "direct" else 0, "batch_size": 32})

    if preset == "tiny":
        config.pretrain.model.update({"num_layers": 1, "d_model": 32, "d_ff": 64, "num_heads": 2, "max_len": 1024})
        config.pretrain.data.update({"seq_len": 1024, "global_batch_size": 8})
        config.pretrain.train.update({"steps": 2, "log_every": 1, "eval_every": 2, "eval_batches": 1,
                                      "checkpoint_every": 2, "warmup_steps": 1})
        config.eval.data.num_problems = 8
        config.eval.sampling.update({"batch_size": 8, "max_new_tokens": 64, "num_samples": 2})
        config.eval.ks = (1, 2)
    elif preset == "small":
        config.dataset.max_len = config.dataset.context_len = 2048  # longer traces are left out, not cut
        config.pretrain.data.update({"seq_len": 2048, "global_batch_size": 16})
        config.pretrain.model.max_len = 2048
        config.pretrain.train.update({"steps": 5000, "eval_every": 500, "checkpoint_every": 500})
        config.eval.budgets = (400, 512, 1024, 1800)
    return config


def _stages(config, workdir: str) -> stages_lib.Stages:
    """``{stage: (job module, its config, its folder)}``, the configs wired to the stage folders."""
    from ml_collections import config_dict

    from sos_jax.jobs import dataset, evaluate, pretrain

    data_dir, model_dir = os.path.join(workdir, "data"), os.path.join(workdir, "model")
    model = config_dict.ConfigDict(config.pretrain.to_dict())
    model.data.data_dir = data_dir
    evaluation = config_dict.ConfigDict(config.eval.to_dict())
    evaluation.checkpoint = f"{model.data.form}={model_dir}"
    return {"data": (dataset, config.dataset, data_dir), "model": (pretrain, model, model_dir),
            "eval": (evaluate, evaluation, os.path.join(workdir, "eval"))}


def validate(config, workdir: str | None) -> None:
    """Checks every stage still to run by its own job's rules, and that the stages fit together."""
    if fields.get(config, "job") != "study":
        raise ConfigError(f"config.job={config.job!r}: this is the 'study' job")
    fields.workdir_free(workdir, SUMMARY, False)
    stages = _stages(config, workdir)
    model = stages["model"][1]
    if model.data.source != "dataset":
        raise ConfigError("config.pretrain.data.source: the study trains on its own dataset ('dataset')")
    if model.data.form not in config.dataset.forms:
        raise ConfigError(f"config.pretrain.data.form={model.data.form!r}: not among config.dataset.forms="
                          f"{tuple(config.dataset.forms)}")
    if fields.task(config.dataset).name != fields.task(model, "data.task").name:
        raise ConfigError("config.dataset.task and config.pretrain.data.task differ")
    stages_lib.validate(stages)


def run(config, workdir: str) -> dict[str, Any]:
    """Runs (or finishes) the three stages; returns the summary it wrote."""
    validate(config, workdir)
    wall_start = time.perf_counter()
    results, seconds = stages_lib.run(_stages(config, workdir), "study")
    summary = {
        "job": "study",
        "results": results["eval"]["results"],
        "final_loss": results["model"].get("loss"),
        "seconds": seconds,
        "wall_s": time.perf_counter() - wall_start,
        "config": json.loads(json.dumps(config.to_dict())),
    }
    if distributed.is_main_process():
        write_atomic(os.path.join(workdir, SUMMARY), json.dumps(summary, indent=2) + "\n")
    distributed.say(f"study: done in {summary['wall_s'] / 60:.1f} min "
                    f"({', '.join(f'{k} {v:.0f}s' for k, v in seconds.items())}); "
                    f"final train loss {summary['final_loss']}; wrote {os.path.join(workdir, SUMMARY)}")
    return summary
