"""The ``pretrain`` job: a GPT trained from scratch on Countdown streams, sharded and resumable.

The mesh (``config.mesh``: data x fsdp x tensor) is built first, the model is created already
sharded, the train step is compiled ahead of time (its memory estimate is printed) and batches come
from ``config.data`` (the online generator or a written dataset). Metrics are fetched one step
late, so the device never waits for the host; every ``train.log_every`` steps they go to
``metrics.jsonl``, TensorBoard event files (``tb/``) and the progress bar (loss, tokens/s), with
tokens/s per device and MFU. Every ``train.eval_every`` steps the eval loss is measured on
``train.eval_batches`` batches of held-out problems. Checkpoints (``checkpoints/``: train state,
data-iterator state, config) are saved asynchronously every ``train.checkpoint_every`` steps, at
the end and on SIGTERM; the last ``train.keep_checkpoints`` are kept. A run started in a workdir
with checkpoints resumes from the newest, to the same numbers as a run never interrupted. A
dataset read for a finite ``data.num_epochs`` that ends before ``train.steps`` stops the run there,
with a checkpoint (``summary.json``: ``data_ended_after_step``).

Over several processes (``sos_jax.distributed``) every process feeds its rows of each global batch
and saves its part of each checkpoint; process 0 alone prints, logs and writes ``summary.json``.
A SIGTERM there stops every process at the same step (JAX's preemption sync point), and a finite
dataset ends for all of them at the same step (``data.pipeline.Batches``).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from typing import Any

from sos_jax import distributed
from sos_jax.distributed import say
from sos_jax.jobs import ConfigError, fields, inputs, write_atomic

SUMMARY = "summary.json"
MODEL_FIELDS = ("vocab_size", "num_layers", "num_heads", "d_model", "d_ff", "max_len", "positions",
                "tie_embeddings", "dropout", "param_dtype", "dtype", "attention")
TRAIN_PRESETS = {  # model preset -> (seq_len, global batch, steps, learning rate, warmup)
    "tiny": (256, 8, 20, 3e-3, 5),
    "small": (1024, 16, 2000, 1e-3, 100),
    "sos-250m": (4096, 32, 50000, 1e-4, 1000),  # the SoS paper's model and context
    "bt-3m": (4096, 32, 20000, 1e-3, 500),  # the backtracking study's sizes
    "bt-17m": (4096, 32, 20000, 6e-4, 500),
    "bt-38m": (4096, 32, 20000, 4e-4, 500),
    "bt-144m": (4096, 32, 20000, 2e-4, 500),
}


def default_config(preset: str, form: str):
    """The config of ``configs/countdown_{sos,ot}.py`` for a model preset and a data form.

    ``preset`` may name a topology too, ``PRESET@TOPOLOGY`` (``bt-144m@v5e-256``; see
    ``sos_jax.topologies``): the mesh is then the topology's, the global batch the preset's rounded up
    to a multiple of data x fsdp, and ``config.topology`` makes the run check its devices at start.
    """
    from ml_collections import config_dict

    from sos_jax import topologies
    from sos_jax.models.gpt import PRESETS

    preset, _, topology_name = preset.partition("@")
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    seq_len, batch, steps, lr, warmup = TRAIN_PRESETS[preset]
    topology = topologies.get(topology_name) if topology_name else None
    config = config_dict.ConfigDict()
    config.job = "pretrain"
    config.seed = 0  # parameters and dropout
    model = PRESETS[preset]
    config.model = config_dict.ConfigDict({name: getattr(model, name) for name in MODEL_FIELDS})
    config.mesh = config_dict.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})  # -1: the devices left over
    config.topology = ""  # a sos_jax.topologies name: the devices this run must find at start ("": any)
    if topology is not None:
        config.topology = topology.name
        config.mesh = config_dict.ConfigDict(topology.mesh_dict())
        batch = topology.batch_for(batch)
    config.data = inputs.data_config()
    config.data.seq_len = seq_len
    config.data.global_batch_size = batch
    config.data.form = form  # source="dataset"
    config.data.strategy = form  # source="online"
    config.train = config_dict.ConfigDict({
        "steps": steps, "learning_rate": lr, "warmup_steps": warmup, "end_fraction": 0.1, "b1": 0.9, "b2": 0.95,
        "weight_decay": 0.1, "clip_norm": 1.0, "grad_accum": 1, "log_every": max(1, min(50, steps // 10)),
        "eval_every": max(1, steps // 4), "eval_batches": 2, "checkpoint_every": max(1, steps // 4),
        "keep_checkpoints": 3, "peak_flops": 0.0,  # per device; 0: from the table, or measured on CPU
        "plan_only": False,  # True: print the mesh, batch and memory plan, write plan.json, train nothing
    })
    if preset == "tiny":
        config.data.env.num_count = 3
    return config


def model_config(config):
    from sos_jax.models.gpt import GPTConfig

    fields.known(config, "model", MODEL_FIELDS)
    try:
        return GPTConfig(**{name: fields.get(config, f"model.{name}") for name in MODEL_FIELDS}).validate()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config.model: {e}") from None


def mesh_shape(config, count: int | None = None) -> tuple[int, int, int]:
    """``(data, fsdp, tensor)`` of ``config.mesh`` on ``count`` devices (default: this run's)."""
    import jax

    fields.known(config, "mesh", ("data", "fsdp", "tensor"))
    sizes = [fields.integer(config, f"mesh.{a}", -1) for a in ("data", "fsdp", "tensor")]
    if any(s == 0 for s in sizes) or sizes.count(-1) > 1:
        raise ConfigError(f"config.mesh={dict(zip(('data', 'fsdp', 'tensor'), sizes))}: sizes must be >= 1, with at "
                          "most one -1 (the devices left over)")
    known = -1 * sizes[0] * sizes[1] * sizes[2] if -1 in sizes else sizes[0] * sizes[1] * sizes[2]
    count = jax.device_count() if count is None else count
    if -1 in sizes:
        if count % known:
            raise ConfigError(f"config.mesh: {count} devices do not divide by the fixed axes' {known}")
        sizes[sizes.index(-1)] = count // known
    elif known != count:
        raise ConfigError(f"config.mesh={dict(zip(('data', 'fsdp', 'tensor'), sizes))}: {known} devices, but there "
                          f"are {count}")
    return tuple(sizes)


def _topology(config, check_devices: bool):
    """The ``sos_jax.topologies`` entry ``config.topology`` names (None for ``""``), with this run's
    devices checked against it when ``check_devices``."""
    from sos_jax import topologies

    name = fields.get(config, "topology")
    if not isinstance(name, str):
        raise ConfigError(f"config.topology={name!r}: must be a topology name, or '' for any devices")
    if not name:
        return None
    topology = topologies.get(name)
    if check_devices:
        topologies.check(topology)
    return topology


def rows_per_device(global_batch: int, mesh_sizes: tuple[int, int, int]) -> int:
    """Rows of each global batch one device holds: the batch split over data x fsdp (the devices of
    one ``tensor`` group share their rows)."""
    return global_batch // (mesh_sizes[0] * mesh_sizes[1])


def optimizer(config):
    """``(tx, lr)``: the optimizer and the learning-rate schedule ``config.train`` describes."""
    from sos_jax.train import optim

    train = config.train
    tx = optim.make_optimizer(learning_rate=train.learning_rate, warmup_steps=train.warmup_steps,
                              total_steps=train.steps, end_fraction=train.end_fraction, b1=train.b1, b2=train.b2,
                              weight_decay=train.weight_decay, clip_norm=train.clip_norm)
    lr = optim.schedule(peak=train.learning_rate, warmup_steps=train.warmup_steps, total_steps=train.steps,
                        end_fraction=train.end_fraction)
    return tx, lr


def validate(config, workdir: str | None) -> None:
    """Checks every field the job reads (before anything compiles); raises ConfigError / WorkdirError."""
    if fields.get(config, "job") != "pretrain":
        raise ConfigError(f"config.job={config.job!r}: this is the 'pretrain' job")
    fields.integer(config, "seed", 0)
    model = model_config(config)
    plan_only = fields.boolean(config, "train.plan_only")
    topology = _topology(config, check_devices=not plan_only)
    data_rows, fsdp, _ = mesh_shape(config, topology.devices if topology is not None and plan_only else None)
    for name in ("steps", "warmup_steps", "grad_accum", "log_every", "eval_every", "eval_batches",
                 "checkpoint_every", "keep_checkpoints"):
        fields.integer(config, f"train.{name}", 0 if name in ("warmup_steps", "eval_every") else 1)
    for name in ("learning_rate", "end_fraction", "b1", "b2", "weight_decay", "clip_norm", "peak_flops"):
        value = fields.get(config, f"train.{name}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"config.train.{name}={value!r}: must be a number >= 0")
    task = fields.task(config, "data.task")
    if model.vocab_size < task.vocab_size:
        raise ConfigError(f"config.model.vocab_size={model.vocab_size}: the {task.name} vocabulary has "
                          f"{task.vocab_size} ids")
    seq_len = fields.integer(config, "data.seq_len", inputs.MIN_SEQ_LEN)
    if seq_len > model.max_len:
        raise ConfigError(f"config.data.seq_len={seq_len}: longer than the model's context "
                          f"config.model.max_len={model.max_len}")
    batch = fields.integer(config, "data.global_batch_size", 1)
    rows = data_rows * fsdp * config.train.grad_accum
    if batch % rows:
        raise ConfigError(f"config.data.global_batch_size={batch}: must be a multiple of mesh data x fsdp x "
                          f"train.grad_accum = {rows}")
    if not workdir:
        from sos_jax.jobs import WorkdirError

        raise WorkdirError("--workdir is required")


def run(config, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) and returns the summary it wrote to ``summary.json``; with
    ``train.plan_only``, only sizes the run (``sos_jax.jobs.plan``) and returns the plan."""
    import jax
    from jax.experimental import multihost_utils
    from tqdm import tqdm

    from sos_jax.models import sharding
    from sos_jax.train import checkpoint, metrics, step

    validate(config, workdir)
    train = config.train
    if train.plan_only:
        from sos_jax.jobs import plan

        return plan.run(config, workdir)
    main_process = distributed.is_main_process()
    if train.eval_every and config.data.source == "dataset":
        _check_eval_splits(config)
    os.makedirs(workdir, exist_ok=True)
    wall_start = time.perf_counter()
    gpt_config = model_config(config)
    mesh = sharding.make_mesh(mesh_shape(config))
    model = sharding.create_sharded_model(gpt_config, mesh, config.seed)
    tx, lr = optimizer(config)
    graphdef, rest, state = step.init_state(model, tx, config.seed, mesh)
    del model
    data = inputs.make_batches(config, mesh=mesh)
    ckpts = checkpoint.Checkpoints(workdir, every=train.checkpoint_every, keep=train.keep_checkpoints)
    start = ckpts.latest_step or 0
    if start:
        state = ckpts.restore(state, data)
        say(f"pretrain: resumed from {ckpts.directory}/{start}")

    batch_shape = (config.data.global_batch_size, config.data.seq_len)
    compile_start = time.perf_counter()
    steps = step.compile_steps(graphdef, rest, state, tx, lr, mesh, batch_shape=batch_shape,
                               accum=train.grad_accum, dropout=gpt_config.dropout > 0)
    compile_s = time.perf_counter() - compile_start
    n_params = gpt_config.num_params()
    peak, peak_source = metrics.peak_flops_per_device(float(train.peak_flops))
    flops_per_token = gpt_config.flops_per_token(config.data.seq_len)
    memory = f"{steps.memory_bytes / 2**20:,.1f} MiB" if steps.memory_bytes else "not reported"
    rows = rows_per_device(batch_shape[0], tuple(mesh.shape.values()))
    say(f"pretrain: {n_params:,} parameters, mesh {dict(mesh.shape)}, batches of {batch_shape} ({rows} rows = "
        f"{rows * batch_shape[1]:,} tokens per device), steps {start}.."
        f"{train.steps}; compiled in {compile_s:.1f}s, memory estimate {memory}; MFU peak {peak:.3g} FLOP/s per "
        f"device ({peak_source})")

    stop = {"signal": None}
    # One process: our handler. Several: JAX's preemption service takes SIGTERM and agrees on a step.
    multi_process = distributed.is_multiprocess()
    if not multi_process:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
    writers = metrics.Writers(workdir)
    config_json = json.loads(json.dumps(config.to_dict()))
    last: dict[str, float] = {}
    pending = None  # (step, device metrics) fetched one step late
    saved = start  # the newest step with a checkpoint
    data_ended = None  # the step after which a finite dataset ran out
    window = [time.perf_counter(), 0.0]  # start time and tokens since the last log

    def log(step_done: int, device_metrics) -> None:
        host = {k: float(v) for k, v in distributed.fetch(device_metrics).items()}
        window[1] += host["tokens"]
        if step_done % train.log_every and step_done != train.steps:
            return
        elapsed = time.perf_counter() - window[0]
        tokens_per_s = window[1] / elapsed
        host.update(tokens_per_s=tokens_per_s, tokens_per_s_per_device=tokens_per_s / jax.device_count(),
                    mfu=tokens_per_s * flops_per_token / (peak * jax.device_count()))
        writers.write(step_done, {f"train/{k}": v for k, v in host.items()})
        last.update(host)
        bar.set_postfix(loss=f"{host['loss']:.4f}", tok_s=f"{tokens_per_s:,.0f}")
        window[:] = [time.perf_counter(), 0.0]

    with tqdm(total=train.steps, initial=start, unit="step", desc="pretrain", dynamic_ncols=True,
              disable=not main_process) as bar:
        for step_index in range(start, train.steps):
            batch = next(data, None)
            if batch is None:  # a finite dataset (data.num_epochs) ran out: stop here, as a signal would
                data_ended = step_index
                say(f"\npretrain: the data (data.num_epochs={config.data.num_epochs}) ended after step {step_index}; "
                    "stopping")
                if step_index > start and saved != step_index:
                    ckpts.save(step_index, state, data, config_json, force=True)
                break
            state, device_metrics = steps.train(state, batch)
            if pending is not None:
                log(*pending)
            pending = (step_index + 1, device_metrics)
            bar.update(1)
            done = step_index + 1
            if train.eval_every and done % train.eval_every == 0:
                writers.write(done, _evaluate(config, mesh, steps, state))
            if multi_process and multihost_utils.reached_preemption_sync_point(done):
                stop["signal"] = signal.SIGTERM
            stopping = stop["signal"] is not None
            if ckpts.save(done, state, data, config_json, force=done == train.steps or stopping):
                saved = done
            if stopping:
                say(f"\npretrain: SIGTERM at step {done}; checkpoint saved, stopping")
                break
        if pending is not None:
            log(*pending)
    ckpts.close()
    writers.close()
    if not multi_process:
        signal.signal(signal.SIGTERM, previous)

    final_step = int(distributed.fetch(state["step"]))
    summary = {
        "job": "pretrain",
        "step": final_step,
        "steps": train.steps,
        "stopped_by_signal": stop["signal"] is not None,
        "data_ended_after_step": data_ended,
        "num_params": n_params,
        "loss": last.get("loss"),
        "accuracy": last.get("accuracy"),
        "tokens_per_s": last.get("tokens_per_s"),
        "tokens_per_s_per_device": last.get("tokens_per_s_per_device"),
        "mfu": last.get("mfu"),
        "peak_flops_per_device": peak,
        "peak_source": peak_source,
        "compile_s": compile_s,
        "memory_estimate_bytes": steps.memory_bytes,
        "mesh": dict(mesh.shape),
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "wall_s": time.perf_counter() - wall_start,
        "checkpoints": ckpts.directory,
        "params_sha256": _fingerprint(state["params"]),
        "config": config_json,
    }
    if main_process:
        write_atomic(os.path.join(workdir, SUMMARY), json.dumps(summary, indent=2) + "\n")
    say(f"pretrain: step {final_step}, loss {summary['loss']}, {summary['tokens_per_s'] or 0:,.0f} tokens/s, "
        f"MFU {summary['mfu'] or 0:.1%}; wrote {os.path.join(workdir, SUMMARY)}")
    return summary


def _check_eval_splits(config) -> None:
    """ConfigError now, not at the first eval, when the dataset lacks a split the eval reads."""
    from sos_jax.data import DataError

    for split in inputs.eval_splits(config):
        try:
            inputs.dataset_store(config).open_split(config.data.data_dir, config.data.form, split)
        except DataError as e:
            raise ConfigError(f"config.train.eval_every={config.train.eval_every}: the eval reads {split}, but {e}; "
                              "write that split or pass --config.train.eval_every=0") from None


def _fingerprint(params) -> str:
    """SHA-256 of every parameter's bytes, in tree order: equal exactly when the parameters are."""
    import hashlib

    import jax
    import numpy as np

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(distributed.fetch(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _evaluate(config, mesh, steps, state) -> dict[str, float]:
    """Eval loss and accuracy on ``train.eval_batches`` fixed batches of held-out problems from each
    source: the held-out splits of a dataset (``inputs.eval_splits``: ``val_seen`` and ``val_unseen``
    of Countdown, ``val`` of Sudoku), or fresh problems on the seen and on the unseen targets from the
    generator (a seed the training stream never uses)."""
    from ml_collections import config_dict

    out = {}
    dataset = config.data.source == "dataset"
    for kind in inputs.eval_splits(config) if dataset else ("seen", "unseen"):
        eval_config = config_dict.ConfigDict({"data": config.data.to_dict()})
        eval_config.data.shuffle = False
        eval_config.data.seed = config.data.seed + 1
        if dataset:
            eval_config.data.split = name = kind
        else:
            eval_config.data.targets = kind
            name = f"{kind}_targets"
        batches = inputs.make_batches(eval_config, mesh=mesh)
        sums = {"loss_sum": 0.0, "correct": 0.0, "tokens": 0.0}
        for batch in itertools.islice(batches, config.train.eval_batches):  # fewer if a finite split runs out
            result = distributed.fetch(steps.eval(state, batch))
            for k in sums:
                sums[k] += float(result[k])
        if hasattr(batches, "close"):
            batches.close()
        if not sums["tokens"]:
            continue  # a finite split too small for one batch: no number rather than a wrong one
        tokens = sums["tokens"]
        out.update({f"eval/{name}/loss": sums["loss_sum"] / tokens, f"eval/{name}/accuracy": sums["correct"] / tokens})
    return out
