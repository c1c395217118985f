"""Loading the project's config files in tests, as ``sos_jax.main`` does."""

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
