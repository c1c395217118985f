"""Test helpers: loading the project's config files as ``sos_jax.main`` does, running benchmarks."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_path(name: str) -> str:
    """The path of ``configs/<name>.py``."""
    return os.path.join(REPO, "configs", f"{name}.py")


def load_config(name: str, preset: str = "tiny", **overrides):
    """``configs/<name>.py``'s config for ``preset``, with dotted-path ``overrides``, locked."""
    spec = importlib.util.spec_from_file_location(f"{name}_config", config_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(preset)
    for path, value in overrides.items():
        node = config
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    config.lock()
    return config


def run_benchmark(script: str, *args: str, devices: int | None = None, timeout: int = 300):
    """Runs ``benchmarks/<script>`` with ``--json`` on the CPU; returns ``(last-line JSON, stdout lines)``
    after checking that it succeeded and printed a readable report before the JSON line."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if devices:
        env["JAX_NUM_CPU_DEVICES"] = str(devices)
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", script), *args, "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) > 1  # the readable report comes first
    return json.loads(lines[-1]), lines


def crash_countdown_writer_at(monkeypatch, split: str) -> None:
    """Makes the Countdown dataset writer die (KeyboardInterrupt) when it reaches ``split``, as a
    killed run would (``monkeypatch.undo()`` or the test's end restores it)."""
    from sos_jax.data import countdown_writer

    real = countdown_writer._generated

    def dies(params, form, at, nums, target):
        if at == split:
            raise KeyboardInterrupt("killed")
        yield from real(params, form, at, nums, target)

    monkeypatch.setattr(countdown_writer, "_generated", dies)
