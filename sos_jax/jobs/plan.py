"""Sizing a pretraining run before it starts: the pretrain job with ``train.plan_only=True``.

    python -m sos_jax.main --config=configs/countdown_sos.py:bt-144m@v5e-256 --workdir=DIR \
        --config.train.plan_only=True

builds the run's mesh, compiles its train step ahead of time on abstract parameters (nothing is
allocated or trained, no checkpoint is written), prints one table (topology, devices, mesh, global
and per-device batch, parameters, parameter and optimizer bytes per device, the compiled step's
memory per device against the device's memory, and whether it fits) and writes the same numbers, with
the config, to ``DIR/plan.json``.

When this machine lacks the topology's devices (sizing a v5e-256 run on a laptop), the compile runs
in a subprocess on that many fake CPU devices (``JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=N``). The
estimate then comes from the CPU compiler, whose layouts, fusions and attention differ from the TPU
and GPU ones: it is indicative, not exact, and the table says so.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any

from sos_jax.jobs import ConfigError, fields, pretrain, write_atomic

PLAN = "plan.json"
GIB = 2**30


def run(config, workdir: str) -> dict[str, Any]:
    """Sizes the run ``config`` describes (already validated), prints the table and writes it to
    ``plan.json`` in ``workdir``; returns the plan."""
    import jax

    from sos_jax import distributed, topologies

    name = fields.get(config, "topology")
    topology = topologies.get(name) if name else None
    devices = jax.devices()
    here = topology is None or (len(devices) == topology.devices and (
        devices[0].platform == "cpu" or topologies.kind_matches(topology, devices[0].device_kind)))
    plan = estimate(config) if here else _estimate_on_cpu(config, topology.devices)
    plan.update(_target(topology, plan["backend"]))
    plan.update(_verdict(plan))
    plan["config"] = json.loads(json.dumps(config.to_dict()))
    if distributed.is_main_process():
        print(format_table(plan), flush=True)
        os.makedirs(workdir, exist_ok=True)
        write_atomic(os.path.join(workdir, PLAN), json.dumps(plan, indent=2) + "\n")
    return plan


def estimate(config) -> dict[str, Any]:
    """The mesh, batch split, parameter and optimizer bytes and the compiled train step's memory per
    device for ``config`` on this process's devices; compiled on abstract arrays, nothing allocated."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from sos_jax.models import sharding
    from sos_jax.train import step

    gpt_config = pretrain.model_config(config)
    sizes = pretrain.mesh_shape(config)
    mesh = sharding.make_mesh(sizes)
    tx, lr = pretrain.optimizer(config)
    graphdef, abstract = sharding.abstract_model(gpt_config, mesh, config.seed)
    graphdef, params, rest = nnx.split(nnx.merge(graphdef, abstract), nnx.Param, ...)
    opt_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                             jax.eval_shape(tx.init, params), step.opt_state_shardings(tx, params, mesh))
    replicated = NamedSharding(mesh, PartitionSpec())
    rng = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    state = {"params": params, "opt_state": opt_state,
             "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
             "rng": jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=replicated)}
    batch, seq_len = config.data.global_batch_size, config.data.seq_len
    start = time.perf_counter()
    lowered = step.lower_train(graphdef, rest, state, tx, lr, mesh, batch_shape=(batch, seq_len),
                               accum=config.train.grad_accum, dropout=gpt_config.dropout > 0)
    with jax.set_mesh(mesh):
        compiled = lowered.compile()
    rows = pretrain.rows_per_device(batch, sizes)
    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "mesh": dict(mesh.shape),
        "global_batch": batch,
        "seq_len": seq_len,
        "grad_accum": config.train.grad_accum,
        "rows_per_device": rows,
        "tokens_per_device": rows * seq_len,
        "num_params": gpt_config.num_params(),
        "param_bytes_per_device": _bytes_per_device(params),
        "optimizer_bytes_per_device": _bytes_per_device(opt_state),
        "compiled_memory": step.memory_breakdown(compiled),
        "compile_s": time.perf_counter() - start,
    }


def _bytes_per_device(tree) -> int:
    """Bytes one device holds of ``tree`` (abstract arrays with shardings): the largest shard of each."""
    import jax

    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _estimate_on_cpu(config, devices: int) -> dict[str, Any]:
    """:func:`estimate` in a subprocess on ``devices`` fake CPU devices (the config goes in as JSON)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    print(f"plan: no {devices} matching devices here; compiling on {devices} fake CPU devices", flush=True)
    result = subprocess.run([sys.executable, "-m", "sos_jax.jobs.plan"], input=config.to_json(), env=env,
                            capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode == 2:
        raise ConfigError(result.stderr.strip().splitlines()[-1].removeprefix("error: "))
    if result.returncode or not lines:
        raise RuntimeError(f"the plan's compile on {devices} fake CPU devices failed (exit status "
                           f"{result.returncode}): {result.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def _device_limit() -> int | None:
    """Bytes the first local device may use, where the runtime reports it."""
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats()
    except (NotImplementedError, RuntimeError):
        return None
    return (stats or {}).get("bytes_limit")


def _target(topology, backend: str) -> dict[str, Any]:
    """What the run is sized for: the topology's devices and memory, or (without one) this machine's."""
    import jax

    if topology is None:
        limit = None if backend == "cpu" else _device_limit()
        return {"topology": None, "target_device_kind": jax.devices()[0].device_kind,
                "target_devices": jax.device_count(), "hosts": jax.process_count(), "hbm_bytes": limit,
                "usable_bytes": limit, "cpu_compiler_estimate": False}
    return {"topology": topology.name, "target_device_kind": topology.device_kind, "target_devices": topology.devices,
            "hosts": topology.hosts, "hbm_bytes": topology.hbm_bytes, "usable_bytes": topology.usable_bytes,
            "cpu_compiler_estimate": backend == "cpu" and topology.hbm_bytes is not None}


def _verdict(plan: dict[str, Any]) -> dict[str, Any]:
    """``fits`` (True, False, or None when there is no estimate or no memory limit) and a sentence."""
    memory, usable = plan["compiled_memory"], plan["usable_bytes"]
    if memory is None:
        return {"fits": None, "verdict": "unknown: the compiler reported no memory estimate"}
    if usable is None:
        return {"fits": None, "verdict": "no device-memory limit (host memory)"}
    share = memory["total"] / usable
    if share <= 1:
        return {"fits": True, "verdict": f"fits ({share:.0%} of the usable memory)"}
    return {"fits": False, "verdict": f"does not fit ({share:.0%} of the usable memory): try fewer rows per device "
                                      "(train.grad_accum, data.global_batch_size), a larger mesh.fsdp or "
                                      "model.dtype='bfloat16'"}


def _gib(n: int | None) -> str:
    """Bytes for people: GiB, or MiB below one GiB."""
    if n is None:
        return "-"
    return f"{n / GIB:,.2f} GiB" if n >= GIB else f"{n / 2**20:,.1f} MiB"


def format_table(plan: dict[str, Any]) -> str:
    """The plan as a two-column table (one line per row), for people."""
    mesh = plan["mesh"]
    target = (f"{plan['target_devices']} x {plan['target_device_kind']}, {plan['hosts']} host(s)"
              + (f", {_gib(plan['hbm_bytes'])} each" if plan["hbm_bytes"] else ""))
    if plan["cpu_compiler_estimate"]:
        compiled_on = (f"{plan['device_count']} fake CPU devices: the CPU compiler's estimate (layouts, fusions "
                       "and attention differ on TPU/GPU), indicative")
    else:
        compiled_on = f"this machine: {plan['device_count']} x {plan['device_kind']}"
    memory = plan["compiled_memory"]
    step = "not reported" if memory is None else (
        f"{_gib(memory['total'])} (arguments {_gib(memory['argument'])}, outputs {_gib(memory['output'])}, "
        f"donated {_gib(memory['alias'])}, temporaries {_gib(memory['temp'])})")
    usable = plan["usable_bytes"]
    device_memory = "-" if usable is None else (
        f"{_gib(usable)} usable" + (f" of {_gib(plan['hbm_bytes'])}" if plan["hbm_bytes"] != usable else ""))
    rows = [
        ("topology", plan["topology"] or "(this machine)"),
        ("devices", target),
        ("compiled on", f"{compiled_on}; {plan['compile_s']:.1f}s"),
        ("mesh", f"data {mesh['data']} x fsdp {mesh['fsdp']} x tensor {mesh['tensor']}"),
        ("global batch", f"{plan['global_batch']} rows x {plan['seq_len']:,} tokens, grad_accum {plan['grad_accum']}"),
        ("per device", f"{plan['rows_per_device']} rows = {plan['tokens_per_device']:,} tokens per step"),
        ("parameters", f"{plan['num_params']:,}"),
        ("params + optimizer", f"{_gib(plan['param_bytes_per_device'])} + "
                               f"{_gib(plan['optimizer_bytes_per_device'])} per device"),
        ("compiled step", f"{step} per device"),
        ("device memory", device_memory),
        ("verdict", plan["verdict"]),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(["plan:"] + [f"  {label:<{width}}  {value}" for label, value in rows])


def _main() -> None:
    """The subprocess of :func:`_estimate_on_cpu`: a config as JSON on stdin, the estimate as JSON on stdout."""
    from ml_collections import config_dict

    config = config_dict.ConfigDict(json.loads(sys.stdin.read()))
    try:
        plan = estimate(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(plan))


if __name__ == "__main__":
    _main()
