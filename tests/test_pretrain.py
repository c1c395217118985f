"""The pretrain job at the tiny preset on 8 fake devices: a run, exact resume, SIGTERM, config errors."""

import json
import os
import signal

import pytest
from config_util import load_config

from sos_jax import main as sos_main
from sos_jax.jobs import ConfigError
from sos_jax.train import checkpoint

STEPS = dict(**{"train.steps": 6, "train.log_every": 2, "train.eval_every": 3, "train.eval_batches": 1,
                "train.checkpoint_every": 3, "train.warmup_steps": 2})


def _config(**overrides):
    return load_config("countdown_sos", "tiny", **{**STEPS, **overrides})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pretrain") / "run")
    return workdir, sos_main.run(_config(), workdir)


def test_run_writes_metrics_checkpoints_and_summary(uninterrupted):
    workdir, summary = uninterrupted
    assert summary["step"] == 6 and not summary["stopped_by_signal"]
    assert summary["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1} and summary["num_params"] < 1_000_000
    assert summary["loss"] > 0 and summary["tokens_per_s"] > 0 and 0 < summary["mfu"] < 1
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == [2, 4, 6]
    assert [r["step"] for r in rows if "eval/unseen_targets/loss" in r] == [3, 6]
    assert [r["step"] for r in rows if "eval/seen_targets/loss" in r] == [3, 6]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tb")))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["params_sha256"] == summary["params_sha256"]


def test_loss_goes_down_on_a_longer_run(tmp_path):
    summary = sos_main.run(_config(**{"train.steps": 40, "train.log_every": 5, "train.eval_every": 0,
                                      "train.checkpoint_every": 40}), str(tmp_path / "run"))
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        losses = [json.loads(line)["train/loss"] for line in f]
    assert losses[-1] < 0.7 * losses[0], losses


def test_killed_run_resumes_to_the_same_parameters(uninterrupted, tmp_path, monkeypatch):
    """Killed right after the step-3 checkpoint, restarted: bitwise the parameters of a run never stopped."""
    workdir = str(tmp_path / "run")
    real_save = checkpoint.Checkpoints.save

    def save_then_die(self, step, *args, **kwargs):
        saved = real_save(self, step, *args, **kwargs)
        if step == 3:
            self.wait()
            raise KeyboardInterrupt("killed after the step-3 checkpoint")
        return saved

    monkeypatch.setattr(checkpoint.Checkpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        sos_main.run(_config(), workdir)
    monkeypatch.setattr(checkpoint.Checkpoints, "save", real_save)
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    resumed = sos_main.run(_config(), workdir)
    assert resumed["step"] == 6
    assert resumed["params_sha256"] == uninterrupted[1]["params_sha256"]
    assert resumed["loss"] == uninterrupted[1]["loss"]


def test_sigterm_saves_and_stops(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    real_save = checkpoint.Checkpoints.save

    def save_and_signal(self, step, *args, **kwargs):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpoints, "save", save_and_signal)
    summary = sos_main.run(_config(), workdir)
    assert summary["stopped_by_signal"] and summary["step"] == 3
    assert "3" in os.listdir(os.path.join(workdir, "checkpoints"))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's abandoned reads
def test_incompatible_checkpoint_is_named_and_kept(uninterrupted, tmp_path):
    import shutil

    workdir = str(tmp_path / "run")
    shutil.copytree(uninterrupted[0], workdir)
    with pytest.raises(checkpoint.CheckpointError, match="checkpoints/6") as err:
        sos_main.run(_config(**{"model.d_model": 96, "train.steps": 8}), workdir)
    assert "another --workdir" in str(err.value)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]


@pytest.mark.parametrize("overrides, field", [
    ({"mesh.data": 3}, "config.mesh"),
    ({"mesh.data": -1, "mesh.fsdp": -1}, "config.mesh"),
    ({"data.global_batch_size": 12}, "config.data.global_batch_size"),
    ({"train.grad_accum": 3}, "config.data.global_batch_size"),
    ({"data.seq_len": 4096}, "config.data.seq_len"),
    ({"model.num_heads": 5}, "config.model"),
    ({"train.learning_rate": -1.0}, "config.train.learning_rate"),
])
def test_config_errors_name_the_field(tmp_path, overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        sos_main.run(_config(**overrides), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_sigkilled_process_resumes_to_the_same_parameters(tmp_path):
    """A real SIGKILL of a training process after its first checkpoint, then a restart."""
    import subprocess
    import sys
    import time

    from config_util import REPO, config_path

    flags = ["--config.train.steps=30", "--config.train.checkpoint_every=3", "--config.train.eval_every=0",
             "--config.train.log_every=5"]

    def command(workdir):
        return [sys.executable, "-m", "sos_jax.main", f"--config={config_path('countdown_sos')}:tiny",
                f"--workdir={workdir}", *flags]

    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2", PYTHONPATH=REPO)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "3").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "summary.json").exists()
    outputs = []
    for workdir in (killed, tmp_path / "straight"):
        done = subprocess.run(command(workdir), env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    assert "resumed from" in outputs[0] and "resumed from" not in outputs[1]
    with open(killed / "summary.json") as f, open(tmp_path / "straight" / "summary.json") as g:
        resumed, straight = json.load(f), json.load(g)
    assert resumed["step"] == straight["step"] == 30
    assert resumed["params_sha256"] == straight["params_sha256"]


def test_gradient_accumulation_gives_the_same_update():
    import jax
    import numpy as np

    from sos_jax import parallel
    from sos_jax.models import gpt, sharding
    from sos_jax.train import optim, step

    config = gpt.PRESETS["tiny"]
    mesh = sharding.make_mesh()
    kwargs = dict(learning_rate=1e-3, warmup_steps=0, total_steps=10, end_fraction=0.1)
    tx = optim.make_optimizer(b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0, **kwargs)
    lr = optim.schedule(peak=1e-3, warmup_steps=0, total_steps=10, end_fraction=0.1)
    rng = np.random.default_rng(0)
    host = {"inputs": rng.integers(3, 100, (16, 64)), "targets": rng.integers(3, 100, (16, 64)),
            "weights": (rng.random((16, 64)) < 0.7).astype(np.float32),
            "segment_ids": np.ones((16, 64)), "positions": np.tile(np.arange(64), (16, 1))}
    from sos_jax.data.batch import BATCH_DTYPES

    batch = {k: jax.device_put(v.astype(BATCH_DTYPES[k]), parallel.batch_sharding(mesh)) for k, v in host.items()}
    results = []
    for accum in (1, 2):
        graphdef, rest, state = step.init_state(sharding.create_sharded_model(config, mesh, 0), tx, 0, mesh)
        steps = step.compile_steps(graphdef, rest, state, tx, lr, mesh, batch_shape=(16, 64), accum=accum,
                                   dropout=False)
        new, metrics = steps.train(state, batch)
        results.append((jax.device_get(new["params"]), jax.device_get(metrics)))
    (params_1, m_1), (params_2, m_2) = results
    np.testing.assert_allclose(m_1["loss"], m_2["loss"], rtol=1e-6)
    assert m_1["tokens"] == m_2["tokens"] == host["weights"].sum()
    for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_2)):
        # Adam's first step moves each parameter by about lr * sign(grad) (1e-3 here); gradients at
        # rounding level (about 1e-12, on near-constant directions) may flip sign between the two
        # summation orders and move by less than 1e-6. A wrong accumulation would differ by ~1e-3.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's abandoned reads
def test_corrupt_checkpoint_is_named_and_kept(uninterrupted, tmp_path):
    import shutil

    workdir = str(tmp_path / "run")
    shutil.copytree(uninterrupted[0], workdir)
    newest = os.path.join(workdir, "checkpoints", "6")
    damaged = 0
    for root, _, names in os.walk(newest):
        for name in names:
            if "state" in root and os.path.getsize(os.path.join(root, name)) > 64:
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(16)
                damaged += 1
    assert damaged
    with pytest.raises(checkpoint.CheckpointError, match="checkpoints/6"):
        sos_main.run(_config(**{"train.steps": 8}), workdir)
    assert os.path.isdir(newest)


@pytest.mark.parametrize("name", ["countdown_sos", "countdown_ot"])
@pytest.mark.parametrize("preset", ["tiny", "small", "sos-250m", "bt-3m", "bt-17m", "bt-38m", "bt-144m"])
def test_every_preset_validates(name, preset):
    from sos_jax.jobs import pretrain

    config = load_config(name, preset)
    pretrain.validate(config, "unused")
    assert config.data.seq_len <= config.model.max_len and config.data.strategy == name.split("_")[1]


def _imported_dataset(tmp_path, splits):
    """A small dataset imported from the golden records (no compilation), one file per split."""
    with open(os.path.join(os.path.dirname(__file__), "data", "countdown_examples.jsonl")) as f:
        golden = [json.loads(line) for line in f]
    rows = [{"nums": r["nums"], "target": r["target"], "search_path": r["trace"], "optimal_path": r["optimal_path"]}
            for r in golden]
    files = {}
    for i, split in enumerate(splits):
        files[f"files.{split}"] = str(tmp_path / f"{split}.json")
        with open(files[f"files.{split}"], "w") as f:
            json.dump(rows[40 * i: 40 * i + 40], f)
    data_dir = str(tmp_path / "data")
    sos_main.run(load_config("countdown_data", source="import", **files), data_dir)
    return data_dir


def test_pretrain_on_a_dataset(tmp_path):
    data_dir = _imported_dataset(tmp_path, ("train", "val_seen", "val_unseen"))
    summary = sos_main.run(_config(**{"data.source": "dataset", "data.data_dir": data_dir, "train.steps": 2,
                                      "train.eval_every": 2, "train.checkpoint_every": 2, "train.log_every": 1}),
                           str(tmp_path / "run"))
    assert summary["step"] == 2 and summary["loss"] > 0
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert any("eval/val_seen/loss" in r and "eval/val_unseen/loss" in r for r in rows)


def test_a_finite_dataset_ends_the_run_with_a_checkpoint(tmp_path):
    """One epoch of 40 records in batches of the tiny preset's rows: the run stops when they end,
    with a checkpoint there, and says so in its summary."""
    data_dir = _imported_dataset(tmp_path, ("train",))
    config = _config(**{"data.source": "dataset", "data.data_dir": data_dir, "data.packing": False,
                        "data.num_epochs": 1, "train.steps": 50, "train.eval_every": 0, "train.checkpoint_every": 50})
    summary = sos_main.run(config, str(tmp_path / "run"))
    epoch_steps = 40 // config.data.global_batch_size
    assert summary["step"] == summary["data_ended_after_step"] == epoch_steps < 50
    assert os.listdir(tmp_path / "run" / "checkpoints") == [str(epoch_steps)]


def test_missing_eval_split_is_a_config_error(tmp_path):
    """A dataset without the val splits fails before training, not at the first eval."""
    data_dir = _imported_dataset(tmp_path, ("train",))
    config = _config(**{"data.source": "dataset", "data.data_dir": data_dir})
    with pytest.raises(ConfigError, match=r"config\.train\.eval_every=3: the eval reads val_seen"):
        sos_main.run(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
