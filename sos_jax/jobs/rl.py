"""The ``rl`` job: policy improvement of a pretrained model on Countdown, or with GRPO on Sudoku.

``config.algorithm`` picks the method (``configs/{grpo,ppo,apa,star,rest,guided_rest}_countdown.py``):

- ``grpo``, ``ppo``, ``apa`` (policy gradient): every step draws ``rollout.prompts_per_step``
  problems, rolls each out ``rollout.group_size`` times with on-device rewards
  (:mod:`sos_jax.rl.rollout`), prepares the batch (old, reference and value estimates, advantages)
  and takes ``train.epochs`` passes of optimizer steps over minibatches of ``train.minibatch_rows``
  rows (:mod:`sos_jax.rl.trainer`). Checkpoints (``checkpoints/``) every ``train.checkpoint_every``
  steps, at the end and on SIGTERM; a rerun resumes from the newest.
- ``star``, ``rest``, ``guided_rest`` (expert iteration, :mod:`sos_jax.rl.expert_iteration`):
  ``expert.rounds`` rounds of sampling every problem ``rollout.group_size`` times, keeping the
  solved traces (Guided-ReST: also the solved continuations of edited traces) and fine-tuning the
  pretrained model on them for ``expert.epochs`` epochs. The checkpoint of round ``r`` is step
  ``r``; a rerun resumes after the last finished round.

The pretrained model comes from ``config.base`` (a pretrain workdir, its ``checkpoints/`` or a
step); its config's ``model`` section is copied into the saved config, so the ``eval`` job reads
RL checkpoints like pretraining ones (``--config.checkpoint=before=BASE,after=RL_WORKDIR``). The
problems are a dataset split or problems drawn on device (``config.data``, as in the eval job).
With ``config.task="sudoku"`` (``configs/grpo_sudoku.py``; GRPO only) the prompts are the puzzles of
a Sudoku dataset split (never the test puzzles), the sampler stops at ``END`` and the reward is the
replay verdict (``rl.rollout.sudoku_verdict``).
Metrics (reward, solve rate, KL, entropy, clip fraction, tokens per trace, rollout tokens/s,
update time) go to ``metrics.jsonl``, TensorBoard (``tb/``) and the progress bar;
``summary.json`` closes the run.

Every algorithm also runs on several processes (``sos_jax.distributed``): every process draws the
same problems and passes the same prompts to the rollouts, which place each process's rows on its
devices; checkpoints are saved by all of them, process 0 alone prints, logs and writes
``summary.json``, and a SIGTERM stops every process at the same step. In expert iteration every
process fetches every sample, so all of them keep (and, for Guided-ReST, edit) the same traces.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import types
from typing import Any

import numpy as np

from sos_jax import distributed
from sos_jax.jobs import ConfigError, fields, write_atomic

SUMMARY = "summary.json"
POLICY_GRADIENT = ("grpo", "ppo", "apa")
EXPERT_ITERATION = ("star", "rest", "guided_rest")
ALGORITHMS = POLICY_GRADIENT + EXPERT_ITERATION
SPLITS = ("train", "val_seen", "val_unseen")
_SECTIONS = {  # settings per algorithm (published values in methods.md; see the configs)
    "grpo": {"clip_eps": 0.2, "aggregation": "token", "kl_coef": 0.001, "kl_estimator": "k3", "scale": True},
    "ppo": {"level": "operation", "gamma": 1.0, "lam": 1.0, "clip_eps": 0.2, "value_coef": 1.0, "value_clip": 0.0,
            "whiten": True},
    "apa": {"coef": 0.5, "gamma": 1.0, "lam": 0.95, "value_coef": 10.0, "whiten": True},
}


def default_config(algorithm: str):
    """The full config of the ``rl`` job for ``algorithm`` (the configs adjust it)."""
    from ml_collections import config_dict

    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    config = config_dict.ConfigDict()
    config.job = "rl"
    config.task = "countdown"  # "countdown", or "sudoku" (grpo only)
    config.algorithm = algorithm
    config.base = ""  # the pretrained SoS model: a pretrain workdir, its checkpoints/ or a step in it
    config.seed = 0
    config.mesh = config_dict.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.data = config_dict.ConfigDict({
        "source": "dataset",  # "dataset": a split of a written dataset; "generated": problems drawn on device
        "data_dir": "",
        "form": "sos",
        "split": "train",
        "num_problems": 0,  # the first n problems (0: the whole split; "generated" needs n > 0)
        "seed": 0,
        "split_seed": 4,
        "env": fields.env_config(),
    })
    config.rollout = config_dict.ConfigDict({
        "prompts_per_step": 16,  # problems per rollout call (x group_size rows)
        "group_size": 8,
        "max_new_tokens": 0,  # 0: the model's context minus the prompt
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    })
    config.reward = config_dict.ConfigDict({"format_weight": 0.0, "length_penalty": 0.0})
    config.train = config_dict.ConfigDict({
        "steps": 100,  # policy gradient: rollout + update iterations
        "epochs": 1,  # passes over each rollout batch
        "minibatch_rows": 32,
        "learning_rate": 1e-5,
        "value_learning_rate": 1e-4,
        "warmup_steps": 0,
        "clip_norm": 1.0,
        "weight_decay": 0.0,
        "log_every": 1,
        "checkpoint_every": 10,
        "keep_checkpoints": 3,
    })
    config.expert = config_dict.ConfigDict({
        "rounds": 3,
        "epochs": 2,  # fine-tuning epochs over each round's kept traces
        "batch_size": 16,  # fine-tuning rows per step
        "learning_rate": 1e-4,
        "warmup_steps": 10,
        "guide_rounds": 3,  # guided_rest: edit-and-continue rounds per unsolved sample
    })
    for name, section in _SECTIONS.items():
        config[name] = config_dict.ConfigDict(section)
    return config


def validate(config, workdir: str | None) -> None:
    """Checks every field the job reads (before anything loads); raises ConfigError / WorkdirError."""
    from sos_jax.jobs import evaluate, pretrain

    if fields.get(config, "job") != "rl":
        raise ConfigError(f"config.job={config.job!r}: this is the 'rl' job")
    algorithm = fields.choice(config, "algorithm", ALGORITHMS)
    if not isinstance(config.base, str) or not config.base:
        raise ConfigError("config.base: give the pretrained model, e.g. --config.base=workdir/quickstart/sos")
    fields.integer(config, "seed", 0)
    data_rows, fsdp, _ = pretrain.mesh_shape(config)
    if fields.task(config).name == "sudoku":
        if algorithm != "grpo":
            raise ConfigError(f"config.algorithm={algorithm!r}: on Sudoku the rl job runs 'grpo'")
        if fields.get(config, "data.source") != "dataset":
            raise ConfigError("config.data.source: Sudoku RL draws its puzzles from a dataset split ('dataset'); the "
                              "200 test puzzles are for evaluation only")
        fields.choice(config, "data.split", evaluate.SUDOKU_SPLITS)
    else:
        fields.choice(config, "data.split", SPLITS)
    evaluate.check_problem_source(config)
    prompts = fields.integer(config, "rollout.prompts_per_step", 1)
    group = fields.integer(config, "rollout.group_size", 1)
    fields.integer(config, "rollout.max_new_tokens", 0)
    fields.integer(config, "rollout.top_k", 0)
    _number(config, "rollout.temperature", lambda v: v > 0, "> 0")
    _number(config, "rollout.top_p", lambda v: 0 < v <= 1, "in (0, 1]")
    for name in ("format_weight", "length_penalty"):
        _number(config, f"reward.{name}", lambda v: v >= 0, ">= 0")
    if (prompts * group) % (data_rows * fsdp):
        raise ConfigError(f"config.rollout: prompts_per_step x group_size = {prompts * group} rows must divide over "
                          f"mesh data x fsdp = {data_rows * fsdp}")
    for name in ("steps", "epochs", "minibatch_rows", "log_every", "checkpoint_every", "keep_checkpoints"):
        fields.integer(config, f"train.{name}", 1)
    fields.integer(config, "train.warmup_steps", 0)
    for name in ("learning_rate", "value_learning_rate", "clip_norm", "weight_decay"):
        _number(config, f"train.{name}", lambda v: v >= 0, ">= 0")
    if algorithm in POLICY_GRADIENT:
        minibatch = config.train.minibatch_rows
        if (prompts * group) % minibatch or minibatch % (data_rows * fsdp):
            raise ConfigError(f"config.train.minibatch_rows={minibatch}: must divide the {prompts * group} rollout "
                              f"rows and be a multiple of mesh data x fsdp = {data_rows * fsdp}")
        settings(config)
    else:
        for name in ("rounds", "epochs", "batch_size"):
            fields.integer(config, f"expert.{name}", 1)
        fields.integer(config, "expert.warmup_steps", 0)
        fields.integer(config, "expert.guide_rounds", 0)
        _number(config, "expert.learning_rate", lambda v: v > 0, "> 0")
        if config.expert.batch_size % (data_rows * fsdp):
            raise ConfigError(f"config.expert.batch_size={config.expert.batch_size}: must be a multiple of mesh data x "
                              f"fsdp = {data_rows * fsdp}")
    if not workdir:
        from sos_jax.jobs import WorkdirError

        raise WorkdirError("--workdir is required")


def _number(config, path: str, ok, rule: str) -> float:
    value = fields.get(config, path)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
        raise ConfigError(f"config.{path}={value!r}: must be a number {rule}")
    return float(value)


def settings(config) -> types.SimpleNamespace:
    """The policy-gradient algorithm's settings, checked (``group_size`` added for GRPO)."""
    from sos_jax.rl import grpo, ppo

    algorithm = config.algorithm
    fields.known(config, algorithm, tuple(_SECTIONS[algorithm]))
    out = {name: fields.get(config, f"{algorithm}.{name}") for name in _SECTIONS[algorithm]}
    for name, value in out.items():
        if name in ("aggregation", "kl_estimator", "level"):
            fields.choice(config, f"{algorithm}.{name}", {"aggregation": grpo.AGGREGATIONS,
                                                         "kl_estimator": grpo.KL_ESTIMATORS,
                                                         "level": ppo.LEVELS}[name])
        elif name in ("scale", "whiten"):
            fields.boolean(config, f"{algorithm}.{name}")
        else:
            _number(config, f"{algorithm}.{name}", lambda v: v >= 0, ">= 0")
    for name in ("gamma", "lam"):
        if name in out:
            _number(config, f"{algorithm}.{name}", lambda v: v <= 1, "in [0, 1]")
    if algorithm == "grpo":
        out["group_size"] = config.rollout.group_size
    return types.SimpleNamespace(**out)


# ------------------------------------------------------------------------------------------------
# Shared set-up
# ------------------------------------------------------------------------------------------------


def _problems(config) -> tuple[np.ndarray, np.ndarray]:
    """``(nums [P, K], target [P])`` (Sudoku: ``(puzzles [P, 81], solutions [P, 81])``) of the
    configured split."""
    from ml_collections import config_dict

    from sos_jax.jobs import evaluate

    view = config_dict.ConfigDict({"data": config.data.to_dict(), "task": fields.task(config).name})
    view.data.splits = (config.data.split,)
    return evaluate.load_problems(view)[config.data.split]


def _sampling(config, max_new: int, num_samples: int):
    """Sampling as ``config.rollout`` says, stopping at the task's EOS (and, on Countdown, after the
    goal line)."""
    from sos_jax.models.sampler import SamplingParams
    from sos_jax.tokenizers import countdown as tok

    r = config.rollout
    task = fields.task(config)
    return SamplingParams(max_new_tokens=max_new, temperature=float(r.temperature), top_k=r.top_k,
                          top_p=float(r.top_p), num_samples=num_samples, eos_id=task.eos,
                          stop_phrases=((tok.GOAL,),) if task.name == "countdown" else ())


def _saved_config(config, base: dict) -> dict:
    """The run config as saved with every checkpoint: the base model's ``model`` section included."""
    saved = json.loads(json.dumps(config.to_dict()))
    saved["model"] = base["model_fields"]
    return saved


def _base(config, mesh) -> dict[str, Any]:
    """The pretrained model (``evaluate.load_model``) and its saved ``model`` config section."""
    from sos_jax.jobs import evaluate
    from sos_jax.train import checkpoint

    base = evaluate.load_model(config.base, mesh)
    base["model_fields"] = checkpoint.saved_config(base["checkpoint"])["model"]
    return base


def _max_new(config, model, prompt_width: int) -> int:
    context = model.max_len - prompt_width
    max_new = min(config.rollout.max_new_tokens or context, context)
    if max_new < 1:
        raise ConfigError(f"config.base: prompts of {prompt_width} tokens leave no room in the model's context "
                          f"of {model.max_len}")
    return max_new


def _host_metrics(rollout, seconds: float) -> dict[str, float]:
    import jax

    reward, solved, lengths = distributed.fetch((rollout.reward_R, rollout.solved_R, rollout.lengths_R))
    tokens = float(lengths.sum())
    return {"reward": float(reward.mean()), "solve_rate": float(solved.mean()),
            "tokens_per_trace": tokens / len(lengths), "rollout_tokens_per_s": tokens / max(seconds, 1e-9),
            "rollout_s": seconds}


def run(config, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) the configured algorithm; returns the summary it wrote to ``summary.json``."""
    from sos_jax.jobs import pretrain
    from sos_jax.models import sharding

    validate(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(pretrain.mesh_shape(config))
    base = _base(config, mesh)
    nums, target = _problems(config)
    runner = _policy_gradient if config.algorithm in POLICY_GRADIENT else _expert_iteration
    summary = runner(config, workdir, mesh, base, nums, target)
    if distributed.is_main_process():
        write_atomic(os.path.join(workdir, SUMMARY), json.dumps(summary, indent=2) + "\n")
    first, last = summary["first"], summary["last"]
    if first:
        unit = "step" if config.algorithm in POLICY_GRADIENT else "round"
        distributed.say(f"rl: {config.algorithm}, solve rate of the sampled traces {first['solve_rate']:.1%} (first "
                        f"{unit}) -> {last['solve_rate']:.1%} (last); wrote {os.path.join(workdir, SUMMARY)}")
    return summary


def _logged(workdir: str) -> list[dict]:
    """The entries of ``metrics.jsonl`` in step order, the last one of each step (a step logged
    again after a resume replaces the earlier entry)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    by_step = {}
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            by_step[entry["step"]] = entry
    return [by_step[k] for k in sorted(by_step)]


def _summary(config, base, mesh, workdir: str, wall_start: float, checkpoints: str, **extra) -> dict:
    """``summary.json``: the first and last logged metrics of the whole run (resumed parts included;
    on several processes, only process 0, which writes the log, reads it)."""
    import jax

    logged = _logged(workdir) if distributed.is_main_process() else []
    history = [{k.removeprefix("rl/"): v for k, v in entry.items()} for entry in logged]
    return {"job": "rl", "algorithm": config.algorithm, "base": base["checkpoint"], "first": history[0] if history
            else {}, "last": history[-1] if history else {}, "mesh": dict(mesh.shape), "backend": jax.default_backend(),
            "device_count": jax.device_count(), "wall_s": time.perf_counter() - wall_start,
            "checkpoints": checkpoints, **extra, "config": json.loads(json.dumps(config.to_dict()))}


# ------------------------------------------------------------------------------------------------
# GRPO, PPO, APA
# ------------------------------------------------------------------------------------------------


def _policy_gradient(config, workdir, mesh, base, nums, target) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.experimental import multihost_utils
    from tqdm import tqdm

    from sos_jax.jobs import evaluate
    from sos_jax.rl import apa, grpo, ppo, rollout, trainer
    from sos_jax.rl.policy import ValueModel
    from sos_jax.train import checkpoint, metrics, optim

    wall_start = time.perf_counter()
    train = config.train
    algorithm = {"grpo": grpo, "ppo": ppo, "apa": apa}[config.algorithm]
    graphdef, params = base["graphdef"], base["state"]
    if algorithm.USES_VALUE:
        from sos_jax.models import sharding

        value_model = sharding.create_sharded_model(base["model"], mesh, config.seed, module=ValueModel)
        value_graphdef, value = nnx.split(value_model)
        value["trunk"] = jax.tree.map(jnp.copy, params)  # the critic starts from the pretrained network
    else:
        value_graphdef, value = None, {}

    def optimizer(lr):
        return optim.make_optimizer(learning_rate=lr, warmup_steps=train.warmup_steps, total_steps=train.steps,
                                    end_fraction=1.0, b1=0.9, b2=0.95, weight_decay=train.weight_decay,
                                    clip_norm=train.clip_norm)

    tx_policy, tx_value = optimizer(train.learning_rate), optimizer(train.value_learning_rate)
    state = trainer.init_state(jax.tree.map(jnp.copy, params), value, tx_policy, tx_value, config.seed, mesh)
    ckpts = checkpoint.Checkpoints(workdir, every=train.checkpoint_every, keep=train.keep_checkpoints)
    start = ckpts.latest_step or 0
    if start:
        state = ckpts.restore(state, None)
        distributed.say(f"rl: resumed from {ckpts.directory}/{start}")

    if fields.task(config).name == "sudoku":
        from sos_jax.eval import sudoku_eval

        prompts_all, lengths_all = sudoku_eval.encode_prompts(nums)
        judge = rollout.sudoku_verdict
    else:
        prompts_all, lengths_all = evaluate.encode_prompts(nums, target)
        judge = rollout.countdown_verdict
    batch = config.rollout.prompts_per_step
    max_new = _max_new(config, base["model"], prompts_all.shape[1])
    rollouts = rollout.Rollouts(graphdef, params, _sampling(config, max_new, config.rollout.group_size),
                                rollout.RewardParams(config.reward.format_weight, config.reward.length_penalty),
                                mesh=mesh, batch_size=batch, prompt_len=prompts_all.shape[1], judge=judge)
    steps = trainer.make_trainer(algorithm, settings(config), policy_graphdef=graphdef, value_graphdef=value_graphdef,
                                 tx_policy=tx_policy, tx_value=tx_value, temperature=float(config.rollout.temperature),
                                 mesh=mesh)
    rows = batch * config.rollout.group_size
    saved = _saved_config(config, base)
    writers = metrics.Writers(workdir)
    stop = {"signal": None}
    # One process: our handler. Several: JAX's preemption service takes SIGTERM and agrees on a step.
    multi_process = distributed.is_multiprocess()
    if not multi_process:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
    key = jax.random.key(config.seed)
    distributed.say(f"rl: {config.algorithm} from {base['checkpoint']}, {len(target)} problems, {batch} x "
                    f"{config.rollout.group_size} rollouts of up to {max_new} tokens per step, steps "
                    f"{start}..{train.steps}")
    with tqdm(total=train.steps, initial=start, unit="step", desc=config.algorithm, dynamic_ncols=True,
              disable=not distributed.is_main_process()) as bar:
        for step_index in range(start, train.steps):
            chosen = np.random.default_rng([config.seed, step_index]).choice(len(target), batch,
                                                                              replace=len(target) < batch)
            t0 = time.perf_counter()
            out = rollouts(state["params"], prompts_all[chosen], lengths_all[chosen], nums[chosen], target[chosen],
                           jax.random.fold_in(key, step_index))
            jax.block_until_ready(out)
            logged = _host_metrics(out, time.perf_counter() - t0)
            t1 = time.perf_counter()
            prepared = steps.prepare(state, params, out)
            order = np.random.default_rng([config.seed, step_index, 1])
            per_update = []  # device metrics, fetched once after the step's updates
            for _ in range(train.epochs):
                perm = order.permutation(rows)
                for i in range(0, rows, train.minibatch_rows):
                    state, update_metrics = steps.update(state, prepared, perm[i:i + train.minibatch_rows])
                    per_update.append(update_metrics)
            per_update = distributed.fetch(per_update)
            logged.update({k: float(np.mean([m[k] for m in per_update])) for k in per_update[0]},
                          update_s=time.perf_counter() - t1)
            done = step_index + 1
            bar.update(1)
            bar.set_postfix(reward=f"{logged['reward']:.3f}", solved=f"{logged['solve_rate']:.1%}",
                            tok_s=f"{logged['rollout_tokens_per_s']:,.0f}")
            if done % train.log_every == 0 or done == train.steps:
                writers.write(done, {f"rl/{k}": v for k, v in logged.items()})
            if multi_process and multihost_utils.reached_preemption_sync_point(done):
                stop["signal"] = signal.SIGTERM
            stopping = stop["signal"] is not None
            ckpts.save(done, state, None, saved, force=done == train.steps or stopping)
            if stopping:
                distributed.say(f"\nrl: SIGTERM at step {done}; checkpoint saved, stopping")
                break
    ckpts.close()
    writers.close()
    if not multi_process:
        signal.signal(signal.SIGTERM, previous)
    return _summary(config, base, mesh, workdir, wall_start, ckpts.directory, step=ckpts.latest_step or 0,
                    updates=int(distributed.fetch(state["step"])), steps=train.steps,
                    stopped_by_signal=stop["signal"] is not None)


# ------------------------------------------------------------------------------------------------
# STaR, ReST, Guided-ReST
# ------------------------------------------------------------------------------------------------


def _expert_iteration(config, workdir, mesh, base, nums, target) -> dict[str, Any]:
    import jax
    from flax import nnx
    from tqdm import tqdm

    from sos_jax.jobs import evaluate
    from sos_jax.rl import expert_iteration as ei
    from sos_jax.rl import rollout
    from sos_jax.search.countdown_python import solve
    from sos_jax.train import checkpoint, metrics, optim

    wall_start = time.perf_counter()
    expert = config.expert
    graphdef, base_params = base["graphdef"], base["state"]
    _, _, rest = nnx.split(nnx.merge(graphdef, base_params), nnx.Param, ...)
    prompts_all, lengths_all = evaluate.encode_prompts(nums, target)
    width = prompts_all.shape[1]
    max_new = _max_new(config, base["model"], width)
    batch, group = config.rollout.prompts_per_step, config.rollout.group_size
    reward = rollout.RewardParams()
    sample = rollout.Rollouts(graphdef, base_params, _sampling(config, max_new, group), reward, mesh=mesh,
                              batch_size=batch, prompt_len=width)
    guided = config.algorithm == "guided_rest" and expert.guide_rounds > 0
    if guided:  # continuations of edited traces: prompts up to the whole budget, then the rest of it
        cont_width = min(width + max_new, base["model"].max_len - 1)
        cont_new = min(max_new, base["model"].max_len - cont_width)
        cont = rollout.Rollouts(graphdef, base_params, _sampling(config, cont_new, 1), reward, mesh=mesh,
                                batch_size=batch * group, prompt_len=cont_width)
        solutions = [solve([int(v) for v in n], int(t)) for n, t in zip(nums, target)]
    seq_len = min(width + max_new + 1, base["model"].max_len)
    ckpts = checkpoint.Checkpoints(workdir, every=1, keep=expert.rounds)
    done_rounds = ckpts.latest_step or 0
    params = base_params
    if done_rounds:
        params = ckpts.restore({"params": base_params}, None)["params"]
        distributed.say(f"rl: resumed after round {done_rounds} ({ckpts.directory}/{done_rounds})")
    saved = _saved_config(config, base)
    writers = metrics.Writers(workdir)
    key = jax.random.key(config.seed)
    calls = -(-len(target) // batch)
    distributed.say(f"rl: {config.algorithm} from {base['checkpoint']}, {len(target)} problems x {group} samples of "
                    f"up to {max_new} tokens, rounds {done_rounds}..{expert.rounds}")
    for round_index in range(done_rounds, expert.rounds):
        t0 = time.perf_counter()
        kept_traces, kept_lengths, logged = [], [], {"guided_solved": 0}
        totals = {"reward": 0.0, "solve_rate": 0.0, "tokens_per_trace": 0.0, "rollout_tokens": 0.0, "rollout_s": 0.0}
        rng = random.Random(config.seed * 1000 + round_index)
        with tqdm(total=calls, unit="batch", desc=f"{config.algorithm} round {round_index + 1} sampling",
                  dynamic_ncols=True, leave=False, disable=not distributed.is_main_process()) as bar:
            for call in range(calls):
                chosen = np.arange(call * batch, (call + 1) * batch) % len(target)
                t_call = time.perf_counter()
                out = sample(params, prompts_all[chosen], lengths_all[chosen], nums[chosen], target[chosen],
                             jax.random.fold_in(jax.random.fold_in(key, round_index), call))
                jax.block_until_ready(out)
                part = _host_metrics(out, time.perf_counter() - t_call)
                for k in ("reward", "solve_rate", "tokens_per_trace"):
                    totals[k] += part[k] / calls
                totals["rollout_tokens"] += part["tokens_per_trace"] * batch * group
                totals["rollout_s"] += part["rollout_s"]
                traces, lengths = ei.solved_traces(out)
                kept_traces.append(traces)
                kept_lengths.append(lengths)
                if guided:
                    rep = np.repeat(chosen, group)
                    guide_key = jax.random.fold_in(jax.random.fold_in(key, 10_000 + round_index), call)
                    traces, lengths = ei.guided_traces(cont, params, out, nums[rep], target[rep],
                                                       [solutions[i] for i in rep], max_new=max_new,
                                                       rounds=expert.guide_rounds, rng=rng, key=guide_key)
                    kept_traces.append(traces)
                    kept_lengths.append(lengths)
                    logged["guided_solved"] += len(lengths)
                bar.update(1)
        traces, lengths = ei.stack(kept_traces, kept_lengths)
        sampling_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        steps_per_epoch = -(-max(len(lengths), 1) // expert.batch_size)
        total_steps = expert.epochs * steps_per_epoch
        tx = optim.make_optimizer(learning_rate=expert.learning_rate, warmup_steps=expert.warmup_steps,
                                  total_steps=total_steps, end_fraction=0.1, b1=0.9, b2=0.95,
                                  weight_decay=config.train.weight_decay, clip_norm=config.train.clip_norm)
        lr = optim.schedule(peak=expert.learning_rate, warmup_steps=expert.warmup_steps, total_steps=total_steps,
                            end_fraction=0.1)
        with tqdm(total=total_steps if len(lengths) else 0, unit="step",
                  desc=f"{config.algorithm} round {round_index + 1} fine-tuning", dynamic_ncols=True,
                  leave=False, disable=not distributed.is_main_process()) as bar:
            params, tuned = ei.finetune(base_params, rest, graphdef, traces, lengths, tx=tx, lr=lr, mesh=mesh,
                                        batch=expert.batch_size, seq_len=seq_len, epochs=expert.epochs,
                                        seed=config.seed + round_index, bar=bar)
        logged.update(reward=totals["reward"], solve_rate=totals["solve_rate"],
                      tokens_per_trace=totals["tokens_per_trace"],
                      rollout_tokens_per_s=totals["rollout_tokens"] / max(totals["rollout_s"], 1e-9),
                      kept=len(lengths), finetune_steps=tuned["steps"], sampling_s=sampling_s,
                      update_s=time.perf_counter() - t1)
        if tuned["steps"]:  # no loss without a step (nothing kept)
            logged["finetune_loss"] = tuned["loss"]
        writers.write(round_index + 1, {f"rl/{k}": v for k, v in logged.items()})
        ckpts.save(round_index + 1, {"params": params}, None, saved, force=True)
        ckpts.wait()
        distributed.say(f"rl: round {round_index + 1}/{expert.rounds}: solve rate {logged['solve_rate']:.1%} of "
                        f"{len(target) * group} samples, kept {len(lengths)} traces"
                        + (f" ({logged['guided_solved']} from guided continuations)" if guided else "")
                        + (f", fine-tuned {tuned['steps']} steps (loss {tuned['loss']:.3f})" if tuned["steps"]
                           else "; nothing to fine-tune on, the round's model is the pretrained one"))
    ckpts.close()
    writers.close()
    return _summary(config, base, mesh, workdir, wall_start, ckpts.directory, rounds=expert.rounds)


def preset_config(algorithm: str, preset: str):
    """``configs/{algorithm}_countdown.py``: ``default`` improves the quickstart's SoS model
    (``workdir/quickstart/sos``) on its training problems; ``tiny`` is a seconds-long run on
    generated problems for tests (give ``--config.base``)."""
    config = default_config(algorithm)
    preset = preset or "default"
    config.base = "workdir/quickstart/sos"
    config.data.data_dir = "workdir/quickstart/data"
    config.rollout.max_new_tokens = 232  # the quickstart context (256) minus the prompt
    expert = algorithm in EXPERT_ITERATION
    if algorithm == "grpo":
        config.rollout.temperature = 0.7  # the backtracking study's setting
    if algorithm == "star":
        config.rollout.temperature = 0.8  # the SoS paper's STaR
    if expert:
        config.rollout.update(prompts_per_step=64, group_size=1)
        config.data.num_problems = 2000
    if preset == "tiny":
        config.base = ""
        config.data.update(source="generated", num_problems=16)
        config.data.env.update(num_count=3, num_min=1, num_max=12, target_min=10, target_max=50)
        config.rollout.update(prompts_per_step=8, group_size=1 if expert else 2, max_new_tokens=32)
        config.train.update(steps=2, minibatch_rows=8, checkpoint_every=1)
        config.expert.update(rounds=2, epochs=1, batch_size=8, guide_rounds=1)
        if algorithm == "guided_rest":  # room for edited traces to reach the goal, so a round fine-tunes
            config.rollout.max_new_tokens = 128
            config.expert.guide_rounds = 3
    elif preset != "default":
        raise ValueError(f"configs/{algorithm}_countdown.py: unknown preset {preset!r}; choose default or tiny")
    return config
