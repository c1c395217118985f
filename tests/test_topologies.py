"""Topology presets (``PRESET@TOPOLOGY``), the start-of-run device check and the plan (``train.plan_only``)."""

import json
import math
import os
from types import SimpleNamespace

import jax
import pytest
from config_util import load_config

from sos_jax import main as sos_main
from sos_jax import topologies
from sos_jax.jobs import ConfigError, pretrain
from sos_jax.jobs.plan import PLAN


def test_every_topology_mesh_covers_its_devices():
    assert {"v5e-256", "v5p-128", "8xH100", "2x8xH100", "cpu-8"} <= set(topologies.TOPOLOGIES)
    for name, topology in topologies.TOPOLOGIES.items():
        assert topology.name == name
        assert math.prod(topology.mesh) == topology.devices, name
        assert topology.devices % topology.hosts == 0, name
        assert (topology.hbm_bytes is None) == (topology.device_kind == "cpu"), name


@pytest.mark.parametrize("preset", sorted(pretrain.TRAIN_PRESETS))
def test_every_preset_at_every_topology_splits_its_batch(preset):
    preset_batch = pretrain.TRAIN_PRESETS[preset][1]
    assert pretrain.default_config(preset, "sos").topology == ""
    for name, topology in topologies.TOPOLOGIES.items():
        config = pretrain.default_config(f"{preset}@{name}", "sos")
        rows = topology.mesh[0] * topology.mesh[1]
        batch = config.data.global_batch_size
        assert config.topology == name and dict(config.mesh) == topology.mesh_dict()
        assert batch % rows == 0 and batch >= preset_batch, (preset, name, batch)
        assert batch == preset_batch if preset_batch % rows == 0 else batch < preset_batch + rows, (preset, name)


def test_unknown_topology_names_the_choices():
    with pytest.raises(ConfigError, match=r"config.topology='v9-1': unknown topology; choose one of cpu-8, .*8xH100"):
        load_config("countdown_sos", "bt-3m@v9-1")


def test_device_count_mismatch_is_a_config_error(tmp_path):
    config = load_config("countdown_sos", "tiny@v5e-256")
    with pytest.raises(ConfigError, match=r"config.topology='v5e-256' has 256 devices, but this run has 8"):
        sos_main.run(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_device_kind_is_checked_on_accelerators_only():
    def devices(n, platform, kind):
        return [SimpleNamespace(platform=platform, device_kind=kind)] * n

    topologies.check(topologies.get("v5e-8"), devices(8, "tpu", "TPU v5 lite"))
    topologies.check(topologies.get("8xH100"), devices(8, "cpu", "cpu"))  # fake CPU devices stand in
    with pytest.raises(ConfigError, match=r"made of 'TPU v5 lite' devices, but this run's are 'TPU v5'"):
        topologies.check(topologies.get("v5e-8"), devices(8, "tpu", "TPU v5"))
    with pytest.raises(ConfigError, match=r"'NVIDIA H100 80GB HBM3' devices, but this run's are 'NVIDIA A100"):
        topologies.check(topologies.get("8xH100"), devices(8, "gpu", "NVIDIA A100-SXM4-80GB"))


def test_optimizer_moments_are_sharded_like_the_parameters():
    from sos_jax.models import sharding
    from sos_jax.train import step

    config = load_config("countdown_sos", "tiny@cpu-8")
    mesh = sharding.make_mesh(pretrain.mesh_shape(config))
    model = sharding.create_sharded_model(pretrain.model_config(config), mesh, 0)
    tx, _ = pretrain.optimizer(config)
    _, _, state = step.init_state(model, tx, 0, mesh)
    params = {jax.tree_util.keystr(path): leaf.sharding for path, leaf in jax.tree.leaves_with_path(state["params"])}
    assert any("fsdp" in str(s.spec) for s in params.values())
    moments = 0
    for path, leaf in jax.tree.leaves_with_path(state["opt_state"]):
        key = jax.tree_util.keystr(path)
        param = next((p for p in params if key.endswith(p)), None)
        if param is not None and leaf.ndim:
            moments += 1
            assert leaf.sharding.is_equivalent_to(params[param], leaf.ndim), key
    assert moments == 2 * len(params)  # AdamW's mu and nu


def test_plan_only_prints_and_writes_the_plan_and_trains_nothing(tmp_path, capsys):
    workdir = tmp_path / "plan"
    config = load_config("countdown_sos", "tiny@cpu-8", **{"train.plan_only": True})
    plan = sos_main.run(config, str(workdir))
    assert sorted(os.listdir(workdir)) == [PLAN]  # no checkpoint, no summary, no metrics
    with open(workdir / PLAN) as f:
        assert json.load(f) == json.loads(json.dumps(plan))
    assert plan["topology"] == "cpu-8" and plan["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert plan["rows_per_device"] == config.data.global_batch_size // 8 == 1
    assert plan["tokens_per_device"] == config.data.seq_len
    assert plan["compiled_memory"]["total"] > plan["compiled_memory"]["temp"] > 0
    full = plan["num_params"] * 4  # float32
    assert full / 4 < plan["param_bytes_per_device"] < full  # fsdp=4 splits most of them
    assert 0 <= plan["optimizer_bytes_per_device"] - 2 * plan["param_bytes_per_device"] < 64  # mu, nu, counts
    assert plan["fits"] is None and not plan["cpu_compiler_estimate"]
    out = capsys.readouterr().out
    assert "data 2 x fsdp 4 x tensor 1" in out and "1 rows = 256 tokens per step" in out


def test_plan_of_an_accelerator_topology_on_cpu_devices_says_so(tmp_path):
    config = load_config("countdown_sos", "tiny@8xH100", **{"train.plan_only": True, "data.global_batch_size": 16})
    plan = sos_main.run(config, str(tmp_path / "plan"))
    assert plan["cpu_compiler_estimate"] and plan["backend"] == "cpu"
    assert plan["target_device_kind"] == "NVIDIA H100 80GB HBM3"
    assert plan["usable_bytes"] == int(0.75 * plan["hbm_bytes"]) > 59 * 2**30
    assert plan["rows_per_device"] == 2 and plan["fits"] is True and plan["verdict"].startswith("fits")


def test_a_run_at_its_topology_passes_the_device_check(tmp_path):
    pretrain.validate(load_config("countdown_sos", "tiny@cpu-8"), str(tmp_path / "run"))
    pretrain.validate(load_config("countdown_sos", "tiny@8xH100"), str(tmp_path / "run"))  # 8 CPU devices stand in


@pytest.mark.slow
def test_plan_for_more_devices_than_here_compiles_on_fake_cpu_devices(tmp_path, capsys):
    config = load_config("countdown_sos", "tiny@v4-32", **{"train.plan_only": True})
    plan = sos_main.run(config, str(tmp_path / "plan"))
    assert plan["device_count"] == plan["target_devices"] == 16 and plan["cpu_compiler_estimate"]
    assert plan["mesh"] == {"data": 4, "fsdp": 4, "tensor": 1} and plan["global_batch"] == 16
    assert plan["rows_per_device"] == 1 and plan["compiled_memory"]["total"] > 0
    assert "16 fake CPU devices" in capsys.readouterr().out
