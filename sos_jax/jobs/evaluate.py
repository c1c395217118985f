"""The ``eval`` job: measured search ability of one or more checkpoints on held-out Countdown
problems or Sudoku puzzles (``config.task``; Sudoku's prompts, scoring and study table are in
``eval.sudoku_eval``, and its problems are the 200 test puzzles or a split of a Sudoku dataset).

Each checkpoint (``config.checkpoint``: ``DIR`` or ``NAME=DIR``, comma-separated; a pretrain workdir,
its ``checkpoints/`` or one step in it) is loaded with the model config saved beside it, and run on
every split of ``config.data.splits`` (the test splits of a written dataset, or fresh problems drawn
on device). The prompt is the trace's first line, ``BOS + "Current State: T:[nums], Operations:
[]"``, as in training. Generation stops at EOS, after the goal line, or at ``max_new_tokens``.

Two passes per model and split:

- ``greedy`` (``sampling.greedy``): one greedy trace per problem, as the SoS paper evaluates;
- ``sampled`` (``sampling.num_samples`` > 0): ``n`` samples per problem at ``sampling.temperature``
  (and ``top_k`` / ``top_p``), for pass@k with the unbiased estimator (k = 1, 2, 4, ..., <= n).

Every sample is judged by the strict on-device verifier (``search.countdown_verify``) and, on its
decoded text, by the original's lax verifier and the line grammar (``eval.countdown_format``).
Reported per pass: accuracy (strict and lax), pass@k, accuracy within token budgets (solved with at
most ``b`` generated tokens), mean tokens (all samples, solved samples), the share of malformed
outputs and of outputs cut at the token limit. ``untrained_baseline`` adds a randomly initialised
model of the first checkpoint's shape, scored the same way, as the floor to compare against.

Output: the side-by-side tables on stdout, ``summary.json`` (the numbers and the resolved config),
``pass_at_k.png`` and ``accuracy_vs_tokens.png`` in the workdir (Sudoku: the study's table and
``study.png``).

On several processes (``sos_jax.distributed``) every process loads the same checkpoints and
problems and hands the sampler the same whole batches, of which each keeps its own rows; the
samples come back to every process, each scores them all (so the scores are those of one process
on as many devices), and process 0 alone prints and writes the workdir.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import numpy as np

from sos_jax.jobs import ConfigError, WorkdirError, fields, write_atomic

SUMMARY = "summary.json"
PASS_AT_K_PLOT = "pass_at_k.png"
BUDGET_PLOT = "accuracy_vs_tokens.png"
SOURCES = ("dataset", "generated")
EVAL_SPLITS = ("test_seen", "test_unseen", "val_seen", "val_unseen")
SUDOKU_SOURCES = ("test200", "dataset")  # the 200 test puzzles (split "test"), or a dataset's splits
SUDOKU_SPLITS = ("train", "val")  # splits of a Sudoku dataset
STUDY_PLOT = "study.png"
UNTRAINED = "untrained"


def default_config():
    """The config of ``configs/countdown_eval.py``."""
    from ml_collections import config_dict

    from sos_jax.eval.metrics import DEFAULT_KS

    config = config_dict.ConfigDict()
    config.job = "eval"
    config.task = "countdown"  # "countdown" or "sudoku"
    config.checkpoint = ""  # DIR or NAME=DIR, comma-separated (pretrain workdirs, checkpoints/ or step dirs)
    config.untrained_baseline = False  # also score a randomly initialised model of the first checkpoint's shape
    config.seed = 0  # sampling (and the untrained model's parameters)
    config.mesh = config_dict.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.data = config_dict.ConfigDict({
        "source": "dataset",  # "dataset": splits of a written dataset; "generated": fresh problems on device
        "data_dir": "",  # source="dataset": the dataset job's workdir
        "form": "sos",  # which form's records to read (both forms hold the same problems)
        "splits": ("test_seen", "test_unseen"),
        "num_problems": 1000,  # per split: the first n problems (0: all of the split; "generated" needs n > 0)
        "seed": 0,  # source="generated": the problem draw
        "split_seed": 4,  # source="generated": the held-out target draw (4: the reference split)
        "env": fields.env_config(),  # source="generated": the problem family
    })
    config.sampling = config_dict.ConfigDict({
        "batch_size": 64,  # prompts per compiled call (x num_samples rows when sampling)
        "max_new_tokens": 0,  # 0: the model's context minus the prompt
        "greedy": True,
        "num_samples": 8,  # samples per problem for pass@k (0: no sampled pass)
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    })
    config.budgets = (256, 512, 1024, 2048, 4096)  # token budgets (those above max_new_tokens are dropped)
    config.ks = DEFAULT_KS
    config.overwrite = False
    return config


# ------------------------------------------------------------------------------------------------
# Config checks
# ------------------------------------------------------------------------------------------------


def checkpoints(config) -> dict[str, str]:
    """``{name: path}`` from ``config.checkpoint`` (names default to the run's directory name)."""
    spec = fields.get(config, "checkpoint")
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("config.checkpoint: give one or more checkpoints, e.g. --config.checkpoint=sos=runs/sos,"
                          "ot=runs/ot")
    out: dict[str, str] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, path = item.rpartition("=")
        parts = [p for p in os.path.normpath(path).split(os.sep) if p and not p.isdigit() and p != "checkpoints"]
        name = name or (parts[-1] if parts else path)
        if name in out or name == UNTRAINED:
            raise ConfigError(f"config.checkpoint: the name {name!r} is used twice (or reserved); name them NAME=DIR")
        out[name] = path
    return out


def validate(config, workdir: str | None) -> None:
    """Checks every field the job reads (before anything is loaded); raises ConfigError / WorkdirError."""
    from sos_jax.jobs import pretrain

    if fields.get(config, "job") != "eval":
        raise ConfigError(f"config.job={config.job!r}: this is the 'eval' job")
    checkpoints(config)
    fields.boolean(config, "untrained_baseline")
    fields.integer(config, "seed", 0)
    data_rows, fsdp, _ = pretrain.mesh_shape(config)
    splits = fields.get(config, "data.splits")
    if isinstance(splits, str):
        splits = (splits,)
    allowed = _splits_of(config)
    if not splits or any(s not in allowed for s in splits) or len(set(splits)) != len(splits):
        raise ConfigError(f"config.data.splits={splits!r}: distinct names from {', '.join(allowed)}")
    check_problem_source(config)
    batch = fields.integer(config, "sampling.batch_size", 1)
    fields.integer(config, "sampling.max_new_tokens", 0)
    greedy = fields.boolean(config, "sampling.greedy")
    samples = fields.integer(config, "sampling.num_samples", 0)
    if not greedy and not samples:
        raise ConfigError("config.sampling: nothing to do (greedy=False and num_samples=0)")
    if batch % (data_rows * fsdp):
        raise ConfigError(f"config.sampling.batch_size={batch}: must be a multiple of mesh data x fsdp = "
                          f"{data_rows * fsdp}")
    fields.integer(config, "sampling.top_k", 0)
    for name, ok in (("temperature", lambda v: v > 0), ("top_p", lambda v: 0 < v <= 1)):
        value = fields.get(config, f"sampling.{name}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
            raise ConfigError(f"config.sampling.{name}={value!r}: out of range")
    for name in ("budgets", "ks"):
        value = fields.get(config, name)
        if not isinstance(value, (tuple, list)) or not value or any(type(v) is not int or v < 1 for v in value):
            raise ConfigError(f"config.{name}={value!r}: must be a non-empty list of positive ints")
    if not workdir:
        raise WorkdirError("--workdir is required")
    fields.workdir_free(workdir, SUMMARY, fields.boolean(config, "overwrite"))


def _splits_of(config) -> tuple[str, ...]:
    """The split names ``config.data.splits`` may hold for the config's task and source."""
    if fields.task(config).name == "sudoku":
        source = fields.choice(config, "data.source", SUDOKU_SOURCES)
        return ("test",) if source == "test200" else SUDOKU_SPLITS
    return EVAL_SPLITS


def check_problem_source(config) -> None:
    """Checks the fields of ``config.data`` that :func:`load_problems` reads (splits aside)."""
    if fields.task(config).name == "sudoku":
        fields.integer(config, "data.num_problems", 0)
        if config.data.source == "dataset":
            if not isinstance(config.data.data_dir, str) or not config.data.data_dir:
                raise ConfigError("config.data.data_dir: the dataset's directory is required with data.source='dataset'")
            fields.choice(config, "data.form", ("bt", "direct"))
        return
    source = fields.choice(config, "data.source", SOURCES)
    n = fields.integer(config, "data.num_problems", 0)
    if source == "dataset":
        if not isinstance(config.data.data_dir, str) or not config.data.data_dir:
            raise ConfigError("config.data.data_dir: the dataset's directory is required with data.source='dataset'")
        fields.choice(config, "data.form", ("sos", "ot"))
    else:
        if n < 1:
            raise ConfigError("config.data.num_problems: must be >= 1 with data.source='generated'")
        fields.integer(config, "data.seed", 0)
        fields.integer(config, "data.split_seed", 0)
        fields.spec_from_config(config, "data.env")


# ------------------------------------------------------------------------------------------------
# Problems and prompts
# ------------------------------------------------------------------------------------------------


def prompt_line(nums, target) -> str:
    """The first line of a trace for a problem: its root state."""
    return f"Current State: {int(target)}:[{', '.join(str(int(n)) for n in nums)}], Operations: []\n"


def load_problems(config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (nums [P, K], target [P])}`` (Sudoku: ``(puzzles [P, 81], solutions [P, 81])``) for
    every split of ``config.data.splits``."""
    data = config.data
    splits = (data.splits,) if isinstance(data.splits, str) else tuple(data.splits)
    if fields.task(config).name == "sudoku":
        return {split: _sudoku_problems(config, split) for split in splits}
    if data.source == "generated":
        import jax

        from sos_jax.data import countdown_problems

        spec = fields.spec_from_config(config, "data.env")
        batch = 256 * jax.local_device_count()  # every process draws the same problems on its own devices
        return countdown_problems.select(data.seed, {s: data.num_problems for s in splits}, spec, data.split_seed,
                                         batch)
    from sos_jax.data import countdown_tfds

    out = {}
    for split in splits:
        source = countdown_tfds.open_split(data.data_dir, data.form, split)
        n = len(source) if not data.num_problems else min(len(source), data.num_problems)
        records = [source[i] for i in range(n)]
        out[split] = (np.stack([np.asarray(r["nums"]) for r in records]).astype(np.int32),
                      np.asarray([int(r["target"]) for r in records], np.int32))
    return out


def _sudoku_problems(config, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The first ``data.num_problems`` (0: all) puzzles and solutions of the test puzzles or of a
    dataset's split."""
    n = config.data.num_problems or None
    if config.data.source == "test200":
        from sos_jax.data import sudoku_test

        puzzles, solutions = sudoku_test.load()
        return puzzles[:n].astype(np.int32), solutions[:n].astype(np.int32)
    from sos_jax.data import sudoku_tfds

    source = sudoku_tfds.open_split(config.data.data_dir, config.data.form, split)
    records = [source[i] for i in range(min(len(source), n or len(source)))]
    return (np.stack([np.asarray(r["puzzle"]) for r in records]).astype(np.int32),
            np.stack([np.asarray(r["solution"]) for r in records]).astype(np.int32))


def encode_prompts(nums_PxK: np.ndarray, target_P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded prompt ids ``[P, W]`` (``BOS`` + first line) and their lengths."""
    from sos_jax.tokenizers import countdown as tok

    ids = [[tok.BOS] + tok.encode(prompt_line(n, t)) for n, t in zip(nums_PxK, target_P)]
    width = max(len(i) for i in ids)
    out = np.zeros((len(ids), width), np.int32)
    for row, i in enumerate(ids):
        out[row, :len(i)] = i
    return out, np.asarray([len(i) for i in ids], np.int32)


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------


def traces(prompts_RxW, prompt_lengths_R, tokens_RxT, lengths_R) -> tuple[np.ndarray, np.ndarray]:
    """Each row's trace ids ``[R, W - 1 + T]`` (the prompt without ``BOS``, then the generated
    tokens; padded) and their lengths."""
    lines_R = prompt_lengths_R - 1
    width = prompts_RxW.shape[1] - 1 + tokens_RxT.shape[1]
    col = np.arange(width)[None, :]
    from_line = np.take_along_axis(prompts_RxW[:, 1:], np.minimum(col, prompts_RxW.shape[1] - 2), axis=1)
    from_new = np.take_along_axis(tokens_RxT, np.clip(col - lines_R[:, None], 0, tokens_RxT.shape[1] - 1), axis=1)
    total_R = lines_R + lengths_R
    ids = np.where(col < lines_R[:, None], from_line, np.where(col < total_R[:, None], from_new, 0))
    return ids.astype(np.int32), total_R.astype(np.int32)


def score(nums_RxK, target_R, prompts_RxW, prompt_lengths_R, tokens_RxT, lengths_R, cut_R) -> dict[str, np.ndarray]:
    """Per-sample verdicts: ``solved`` (strict, on device), ``lax_solved`` (the original's verifier),
    ``malformed`` (text outside the line grammar) and ``tokens`` (generated tokens)."""
    import jax.numpy as jnp

    from sos_jax.envs.countdown_check import LAX_VALID, lax_verdict
    from sos_jax.eval.countdown_format import malformed
    from sos_jax.search.countdown_verify import verify_token_batch
    from sos_jax.tokenizers import countdown as tok

    ids, total = traces(prompts_RxW, prompt_lengths_R, tokens_RxT, lengths_R)
    counts = np.full(len(ids), nums_RxK.shape[1], np.int32)
    verdict = verify_token_batch(jnp.asarray(ids), jnp.asarray(total), jnp.asarray(nums_RxK), jnp.asarray(counts),
                                 jnp.asarray(target_R))
    solved = np.asarray(verdict["solved"], bool)
    texts = tok.decode_batch(ids, total)
    lax = np.asarray([lax_verdict(t, list(n), int(g)) == LAX_VALID for t, n, g in zip(texts, nums_RxK, target_R)])
    bad = np.asarray([malformed(t, cut=bool(c)) for t, c in zip(texts, cut_R)])
    return {"solved": solved, "lax_solved": lax, "malformed": bad, "tokens": np.asarray(lengths_R, np.int64)}


# ------------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------------


def load_model(path: str, mesh) -> dict[str, Any]:
    """``{"graphdef", "state", "model", "checkpoint", "step"}``: the parameters of the checkpoint
    ``path`` names (a run's workdir, its ``checkpoints/`` or a step in it) restored onto ``mesh``,
    in the model the config saved beside them describes (``model`` is its ``GPTConfig``)."""
    from flax import nnx
    from ml_collections import config_dict

    from sos_jax.jobs import pretrain
    from sos_jax.models import sharding
    from sos_jax.train import checkpoint

    where = checkpoint.find_checkpoint(path)
    saved = config_dict.ConfigDict(checkpoint.saved_config(where))
    model_config = pretrain.model_config(saved)
    graphdef, abstract = sharding.abstract_model(model_config, mesh)
    graphdef, params, rest = nnx.split(nnx.merge(graphdef, abstract), nnx.Param, ...)
    params = checkpoint.load_params(where, params)
    graphdef, state = nnx.split(nnx.merge(graphdef, params, rest))
    return {"graphdef": graphdef, "state": state, "model": model_config, "checkpoint": where,
            "step": int(os.path.basename(where))}


def _models(config, mesh) -> dict[str, dict[str, Any]]:
    """``{name: load_model(...)}`` for each checkpoint (plus the untrained baseline)."""
    from flax import nnx

    from sos_jax.models import sharding

    out = {name: load_model(path, mesh) for name, path in checkpoints(config).items()}
    if config.untrained_baseline:
        first = next(iter(out.values()))["model"]
        graphdef, state = nnx.split(sharding.create_sharded_model(first, mesh, config.seed))
        out[UNTRAINED] = {"graphdef": graphdef, "state": state, "model": first, "checkpoint": None, "step": 0}
    return out


def _passes(config) -> dict[str, Any]:
    """``{"greedy": SamplingParams-kwargs, "sampled": ...}`` for the passes the config asks for."""
    from sos_jax.tokenizers import countdown as tok

    sampling = config.sampling
    task = fields.task(config)
    common = {"stop_phrases": ((tok.GOAL,),) if task.name == "countdown" else (), "eos_id": task.eos}
    passes = {}
    if sampling.greedy:
        passes["greedy"] = dict(common, temperature=0.0, num_samples=1)
    if sampling.num_samples:
        passes["sampled"] = dict(common, temperature=float(sampling.temperature), top_k=sampling.top_k,
                                 top_p=float(sampling.top_p), num_samples=sampling.num_samples)
    return passes


def evaluate_pass(generate: Callable, prompts_PxW, lengths_P, nums_PxK, target_P, *, num_samples: int, batch: int,
                  key, bar=None, score: Callable = score) -> dict[str, np.ndarray]:
    """Samples every problem ``num_samples`` times and scores each sample: ``[P, n]`` grids keyed
    ``solved``, ``lax_solved``, ``malformed``, ``tokens``, ``cut``.

    ``generate(prompts_BxW, lengths_B, key) -> {"tokens", "lengths", "stop"}`` (host arrays, rows
    prompt-major: ``b * n + s``) is called on batches of ``batch`` prompts; the last batch wraps
    around to the first prompts and its extra rows are dropped. ``score`` judges the samples
    (``score`` above, or ``eval.sudoku_eval.score`` with puzzles and solutions for the problems).
    """
    import jax

    from sos_jax.models import sampler

    problems = len(target_P)
    n = num_samples
    grids: dict[str, list[np.ndarray]] = {}
    for start in range(0, problems, batch):
        rows = np.arange(start, start + batch) % problems
        out = generate(prompts_PxW[rows], lengths_P[rows], jax.random.fold_in(key, start))
        take = min(batch, problems - start) * n
        rep = np.repeat(rows, n)[:take]
        cut = np.asarray(out["stop"][:take]) == sampler.STOP_MAX_TOKENS
        scores = score(nums_PxK[rep], target_P[rep], prompts_PxW[rep], lengths_P[rep], np.asarray(out["tokens"][:take]),
                       np.asarray(out["lengths"][:take]), cut)
        scores["cut"] = cut
        for k, v in scores.items():
            grids.setdefault(k, []).append(v.reshape(-1, n))
        if bar is not None:
            bar.update(take // n)
    return {k: np.concatenate(v) for k, v in grids.items()}


def run(config, workdir: str) -> dict[str, Any]:
    """Evaluates every checkpoint on every split; returns the summary it wrote to ``summary.json``."""
    import jax
    from tqdm import tqdm

    from sos_jax import distributed
    from sos_jax.eval import metrics, report
    from sos_jax.jobs import pretrain
    from sos_jax.models import sampler, sharding

    validate(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    wall_start = time.perf_counter()
    mesh = sharding.make_mesh(pretrain.mesh_shape(config))
    models = _models(config, mesh)
    problems = load_problems(config)
    passes = _passes(config)
    key = jax.random.key(config.seed)
    sudoku = fields.task(config).name == "sudoku"
    if sudoku:
        from sos_jax.eval import sudoku_eval

        encoded = {split: sudoku_eval.encode_prompts(puzzles) for split, (puzzles, _) in problems.items()}
    else:
        encoded = {split: encode_prompts(nums, target) for split, (nums, target) in problems.items()}
    width = max(prompts.shape[1] for prompts, _ in encoded.values())  # one prompt width: one compile per pass
    samplers: dict[tuple[str, str], Any] = {}
    results: dict[str, dict[str, dict[str, dict]]] = {}
    timings: dict[str, float] = {}
    for name, entry in models.items():
        for split, (nums, target) in problems.items():
            prompts, lengths = encoded[split]
            prompts = np.pad(prompts, ((0, 0), (0, width - prompts.shape[1])))
            context = entry["model"].max_len - width
            max_new = min(config.sampling.max_new_tokens or context, context)
            if max_new < 1:
                raise ConfigError(f"{name}: prompts of {width} tokens leave no room in its context "
                                  f"of {entry['model'].max_len}")
            budgets = sorted({min(b, max_new) for b in config.budgets})
            for kind, kwargs in passes.items():
                params = sampler.SamplingParams(max_new_tokens=max_new, **kwargs)
                start = time.perf_counter()
                run_sampler = samplers.get((name, kind))
                if run_sampler is None:
                    run_sampler = samplers[(name, kind)] = sampler.Sampler(
                        entry["graphdef"], entry["state"], params, mesh=mesh, batch_size=config.sampling.batch_size,
                        prompt_len=width)

                def generate(prompts_BxW, lengths_B, pass_key, run_sampler=run_sampler, entry=entry):
                    return sampler.as_dict(run_sampler(entry["state"], prompts_BxW, lengths_B, pass_key))

                with tqdm(total=len(target), unit="problem", desc=f"{name} {split} {kind}", dynamic_ncols=True,
                          leave=False, disable=not distributed.is_main_process()) as bar:
                    grids = evaluate_pass(generate, prompts, lengths, nums, target, num_samples=params.num_samples,
                                          batch=config.sampling.batch_size, key=key, bar=bar,
                                          score=sudoku_eval.score if sudoku else score)
                timings[f"{name}/{split}/{kind}"] = time.perf_counter() - start
                summary = metrics.summarize(solved_PxN=grids["solved"], lax_solved_PxN=grids["lax_solved"],
                                            tokens_PxN=grids["tokens"], malformed_PxN=grids["malformed"],
                                            cut_PxN=grids["cut"], budgets=budgets, ks=tuple(config.ks))
                seconds = timings[f"{name}/{split}/{kind}"]  # the first split's pass includes compilation
                summary.update(max_new_tokens=max_new, temperature=params.temperature,
                               tokens_per_s=float(grids["tokens"].sum()) / max(seconds, 1e-9))
                results.setdefault(kind, {}).setdefault(name, {})[split] = summary

    for kind, by_model in results.items():
        label = "greedy decoding" if kind == "greedy" else (
            f"{config.sampling.num_samples} samples per problem at temperature {config.sampling.temperature}")
        distributed.say(f"\n{label}\n{report.format_report(by_model)}")
    main_process = distributed.is_main_process()  # the only one that writes files
    if sudoku:
        for split in problems:
            distributed.say(f"\nSudoku {split} puzzles, % solved\n{sudoku_eval.format_study(results, split)}")
        plots = [STUDY_PLOT]
        if main_process:
            sudoku_eval.plot_study(os.path.join(workdir, STUDY_PLOT), results, next(iter(problems)))
    else:
        plots = ([PASS_AT_K_PLOT] if "sampled" in results else []) + [BUDGET_PLOT]
        if main_process:
            if "sampled" in results:
                report.plot_pass_at_k(os.path.join(workdir, PASS_AT_K_PLOT), results["sampled"])
            report.plot_budgets(os.path.join(workdir, BUDGET_PLOT), results.get("greedy") or results["sampled"])
    summary = {
        "job": "eval",
        "models": {name: {"checkpoint": e["checkpoint"], "step": e["step"], "num_params": e["model"].num_params()}
                   for name, e in models.items()},
        "results": results,
        "seconds": timings,
        "wall_s": time.perf_counter() - wall_start,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "config": json.loads(json.dumps(config.to_dict())),
    }
    if main_process:
        write_atomic(os.path.join(workdir, SUMMARY), json.dumps(summary, indent=2) + "\n")
    distributed.say(f"eval: wrote {os.path.join(workdir, SUMMARY)} and {', '.join(plots)}")
    return summary
