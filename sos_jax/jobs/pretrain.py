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
with checkpoints resumes from the newest, to the same numbers as a run never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

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
    """The config of ``configs/countdown_{sos,ot}.py`` for a model preset and a data form."""
    from ml_collections import config_dict

    from sos_jax.models.gpt import PRESETS

    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    seq_len, batch, steps, lr, warmup = TRAIN_PRESETS[preset]
    config = config_dict.ConfigDict()
    config.job = "pretrain"
    config.seed = 0  # parameters and dropout
    model = PRESETS[preset]
    config.model = config_dict.ConfigDict({name: getattr(model, name) for name in MODEL_FIELDS})
    config.mesh = config_dict.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})  # -1: the devices left over
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


def mesh_shape(config) -> tuple[int, int, int]:
    import jax

    fields.known(config, "mesh", ("data", "fsdp", "tensor"))
    sizes = [fields.integer(config, f"mesh.{a}", -1) for a in ("data", "fsdp", "tensor")]
    if any(s == 0 for s in sizes) or sizes.count(-1) > 1:
        raise ConfigError(f"config.mesh={dict(zip(('data', 'fsdp', 'tensor'), sizes))}: sizes must be >= 1, with at "
                          "most one -1 (the devices left over)")
    known = -1 * sizes[0] * sizes[1] * sizes[2] if -1 in sizes else sizes[0] * sizes[1] * sizes[2]
    count = jax.device_count()
    if -1 in sizes:
        if count % known:
            raise ConfigError(f"config.mesh: {count} devices do not divide by the fixed axes' {known}")
        sizes[sizes.index(-1)] = count // known
    elif known != count:
        raise ConfigError(f"config.mesh={dict(zip(('data', 'fsdp', 'tensor'), sizes))}: {known} devices, but there "
                          f"are {count}")
    return tuple(sizes)


def validate(config, workdir: str | None) -> None:
    """Checks every field the job reads (before anything compiles); raises ConfigError / WorkdirError."""
    if fields.get(config, "job") != "pretrain":
        raise ConfigError(f"config.job={config.job!r}: this is the 'pretrain' job")
    fields.integer(config, "seed", 0)
    model = model_config(config)
    data_rows, fsdp, _ = mesh_shape(config)
    for name in ("steps", "warmup_steps", "grad_accum", "log_every", "eval_every", "eval_batches",
                 "checkpoint_every", "keep_checkpoints"):
        fields.integer(config, f"train.{name}", 0 if name in ("warmup_steps", "eval_every") else 1)
    for name in ("learning_rate", "end_fraction", "b1", "b2", "weight_decay", "clip_norm", "peak_flops"):
        value = fields.get(config, f"train.{name}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"config.train.{name}={value!r}: must be a number >= 0")
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
    """Trains (or resumes) and returns the summary it wrote to ``summary.json``."""
    import jax
    from tqdm import tqdm

    from sos_jax.models import sharding
    from sos_jax.train import checkpoint, metrics, optim, step

    validate(config, workdir)
    train = config.train
    if train.eval_every and config.data.source == "dataset":
        _check_eval_splits(config)
    os.makedirs(workdir, exist_ok=True)
    wall_start = time.perf_counter()
    gpt_config = model_config(config)
    mesh = sharding.make_mesh(mesh_shape(config))
    model = sharding.create_sharded_model(gpt_config, mesh, config.seed)
    tx = optim.make_optimizer(learning_rate=train.learning_rate, warmup_steps=train.warmup_steps,
                              total_steps=train.steps, end_fraction=train.end_fraction, b1=train.b1, b2=train.b2,
                              weight_decay=train.weight_decay, clip_norm=train.clip_norm)
    lr = optim.schedule(peak=train.learning_rate, warmup_steps=train.warmup_steps, total_steps=train.steps,
                        end_fraction=train.end_fraction)
    graphdef, rest, state = step.init_state(model, tx, config.seed, mesh)
    del model
    data = inputs.make_batches(config, mesh=mesh)
    ckpts = checkpoint.Checkpoints(workdir, every=train.checkpoint_every, keep=train.keep_checkpoints)
    start = ckpts.latest_step or 0
    if start:
        state = ckpts.restore(state, data)
        print(f"pretrain: resumed from {ckpts.directory}/{start}", flush=True)

    batch_shape = (config.data.global_batch_size, config.data.seq_len)
    compile_start = time.perf_counter()
    steps = step.compile_steps(graphdef, rest, state, tx, lr, mesh, batch_shape=batch_shape,
                               accum=train.grad_accum, dropout=gpt_config.dropout > 0)
    compile_s = time.perf_counter() - compile_start
    n_params = gpt_config.num_params()
    peak, peak_source = metrics.peak_flops_per_device(float(train.peak_flops))
    flops_per_token = gpt_config.flops_per_token(config.data.seq_len)
    memory = f"{steps.memory_bytes / 2**20:,.1f} MiB" if steps.memory_bytes else "not reported"
    print(f"pretrain: {n_params:,} parameters, mesh {dict(mesh.shape)}, batches of {batch_shape}, steps {start}.."
          f"{train.steps}; compiled in {compile_s:.1f}s, memory estimate {memory}; MFU peak {peak:.3g} FLOP/s per "
          f"device ({peak_source})", flush=True)

    stop = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
    writers = metrics.Writers(workdir)
    config_json = json.loads(json.dumps(config.to_dict()))
    last: dict[str, float] = {}
    pending = None  # (step, device metrics) fetched one step late
    window = [time.perf_counter(), 0.0]  # start time and tokens since the last log

    def log(step_done: int, device_metrics) -> None:
        host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
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

    with tqdm(total=train.steps, initial=start, unit="step", desc="pretrain", dynamic_ncols=True) as bar:
        for step_index in range(start, train.steps):
            state, device_metrics = steps.train(state, next(data))
            if pending is not None:
                log(*pending)
            pending = (step_index + 1, device_metrics)
            bar.update(1)
            done = step_index + 1
            if train.eval_every and done % train.eval_every == 0:
                writers.write(done, _evaluate(config, mesh, steps, state))
            stopping = stop["signal"] is not None
            ckpts.save(done, state, data, config_json, force=done == train.steps or stopping)
            if stopping:
                print(f"\npretrain: SIGTERM at step {done}; checkpoint saved, stopping", flush=True)
                break
        if pending is not None:
            log(*pending)
    ckpts.close()
    writers.close()
    signal.signal(signal.SIGTERM, previous)

    final_step = int(jax.device_get(state["step"]))
    summary = {
        "job": "pretrain",
        "step": final_step,
        "steps": train.steps,
        "stopped_by_signal": stop["signal"] is not None,
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
    write_atomic(os.path.join(workdir, SUMMARY), json.dumps(summary, indent=2) + "\n")
    print(f"pretrain: step {final_step}, loss {summary['loss']}, {summary['tokens_per_s'] or 0:,.0f} tokens/s, "
          f"MFU {summary['mfu'] or 0:.1%}; wrote {os.path.join(workdir, SUMMARY)}", flush=True)
    return summary


def _check_eval_splits(config) -> None:
    """ConfigError now, not at the first eval, when the dataset lacks a split the eval reads."""
    from sos_jax.data import DataError, countdown_tfds

    for split in ("val_seen", "val_unseen"):
        try:
            countdown_tfds.open_split(config.data.data_dir, config.data.form, split)
        except DataError as e:
            raise ConfigError(f"config.train.eval_every={config.train.eval_every}: the eval reads {split}, but {e}; "
                              "write that split or pass --config.train.eval_every=0") from None


def _fingerprint(params) -> str:
    """SHA-256 of every parameter's bytes, in tree order: equal exactly when the parameters are."""
    import hashlib

    import jax
    import numpy as np

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _evaluate(config, mesh, steps, state) -> dict[str, float]:
    """Eval loss and accuracy on ``train.eval_batches`` fixed batches of held-out problems from each
    of two sources: the ``val_seen`` and ``val_unseen`` splits of a dataset, or fresh problems on
    the seen and on the unseen targets from the generator (a seed the training stream never uses)."""
    import jax

    from ml_collections import config_dict

    out = {}
    for kind in ("seen", "unseen"):
        eval_config = config_dict.ConfigDict({"data": config.data.to_dict()})
        eval_config.data.shuffle = False
        eval_config.data.seed = config.data.seed + 1
        if config.data.source == "dataset":
            eval_config.data.split = name = f"val_{kind}"
        else:
            eval_config.data.targets = kind
            name = f"{kind}_targets"
        batches = inputs.make_batches(eval_config, mesh=mesh)
        sums = {"loss_sum": 0.0, "correct": 0.0, "tokens": 0.0}
        for _ in range(config.train.eval_batches):
            result = jax.device_get(steps.eval(state, next(batches)))
            for k in sums:
                sums[k] += float(result[k])
        if hasattr(batches, "close"):
            batches.close()
        tokens = max(sums["tokens"], 1.0)
        out.update({f"eval/{name}/loss": sums["loss_sum"] / tokens, f"eval/{name}/accuracy": sums["correct"] / tokens})
    return out
