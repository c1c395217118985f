"""Reading and checking config fields: each error is a ConfigError naming the field."""

from __future__ import annotations

from typing import Any

from sos_jax.jobs import ConfigError, WorkdirError

ENV_FIELDS = ("num_count", "num_min", "num_max", "target_min", "target_max")
MIX_FIELDS = ("dfs", "bfs", "beams", "heuristics")
HEURISTICS = {"sum": 0, "mult": 1}


def env_config():
    """``config.env`` with the reference problem family (fields of ``envs.countdown.CountdownSpec``)."""
    from ml_collections import config_dict

    from sos_jax.envs.countdown import CountdownSpec

    spec = CountdownSpec()
    return config_dict.ConfigDict({name: getattr(spec, name) for name in ENV_FIELDS})


def mix_config():
    """``config.mix``, the published Stream-of-Search mix (``search.countdown.Mix``): in every block
    of ``dfs + bfs`` consecutive problems exactly ``dfs`` are DFS traces; BFS beams and heuristics
    are drawn uniformly from ``beams`` and ``heuristics``."""
    from ml_collections import config_dict

    return config_dict.ConfigDict({"dfs": 1, "bfs": 1, "beams": (1, 2, 3, 4, 5), "heuristics": ("sum", "mult")})


def get(config, path: str) -> Any:
    """The value at dotted ``path`` of ``config``; ConfigError if a part is missing."""
    node = config
    for part in path.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(f"config.{path}: missing field") from None
    return node


def integer(config, path: str, lo: int | None = None) -> int:
    """An int field, at least ``lo`` when given."""
    value = get(config, path)
    if type(value) is not int:
        raise ConfigError(f"config.{path}={value!r}: must be an int, got {type(value).__name__}")
    if lo is not None and value < lo:
        raise ConfigError(f"config.{path}={value}: must be >= {lo}")
    return value


def boolean(config, path: str) -> bool:
    """A bool field (True or False, nothing else)."""
    value = get(config, path)
    if type(value) is not bool:
        raise ConfigError(f"config.{path}={value!r}: must be True or False")
    return value


def choice(config, path: str, choices: tuple[str, ...]) -> str:
    """A field whose value must be one of ``choices``."""
    value = get(config, path)
    if value not in choices:
        raise ConfigError(f"config.{path}={value!r}: must be one of {', '.join(map(repr, choices))}")
    return value


def task(config, path: str = "task"):
    """The ``data.batch.Task`` a config's data belongs to; a config without the field is Countdown's."""
    from sos_jax.data.batch import COUNTDOWN, TASKS

    try:
        get(config, path)
    except ConfigError:
        return COUNTDOWN
    return TASKS[choice(config, path, tuple(TASKS))]


def spec_from_config(config, path: str = "env"):
    """The validated ``CountdownSpec`` at ``config.<path>``; ConfigError names the field at fault."""
    from sos_jax.envs import countdown as env

    known(config, path, ENV_FIELDS)
    fields = {name: integer(config, f"{path}.{name}") for name in ENV_FIELDS}
    try:
        return env.CountdownSpec(**fields).validate()
    except ValueError as e:
        raise ConfigError(f"config.{path}.{e}") from None


def known(config, path: str, names: tuple[str, ...]) -> None:
    """ConfigError if the ConfigDict at ``path`` has a field not in ``names``."""
    extra = sorted(set(get(config, path).keys()) - set(names))
    if extra:
        raise ConfigError(f"config.{path}.{extra[0]}: unknown field; config.{path} has {', '.join(names)}")


def mix_from_config(config, path: str = "mix"):
    """The validated ``search.countdown.Mix`` at ``config.<path>``; ConfigError names the field at fault."""
    from sos_jax.search.countdown import Mix

    known(config, path, MIX_FIELDS)
    dfs, bfs = integer(config, f"{path}.dfs", 0), integer(config, f"{path}.bfs", 0)
    beams, names = get(config, f"{path}.beams"), get(config, f"{path}.heuristics")
    if not isinstance(beams, (tuple, list)):
        raise ConfigError(f"config.{path}.beams={beams!r}: must be a tuple of beam sizes")
    if not isinstance(names, (tuple, list)) or not names or any(h not in HEURISTICS for h in names):
        raise ConfigError(f"config.{path}.heuristics={names!r}: must be a non-empty tuple of 'sum' and 'mult'")
    try:
        return Mix(dfs=dfs, bfs=bfs, beams=tuple(beams), heuristics=tuple(HEURISTICS[h] for h in names)).validate()
    except ValueError as e:
        raise ConfigError(f"config.{path}: {e}") from None


def workdir_free(workdir: str | None, marker: str, overwrite: bool) -> None:
    """Checks that ``workdir`` can take a new run: WorkdirError if ``marker`` (the file a finished
    run leaves) exists there and ``overwrite`` is off."""
    import os

    if not workdir:
        raise WorkdirError("--workdir is required")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir}: exists and is not a folder")
    done = os.path.join(workdir, marker)
    if os.path.exists(done) and not overwrite:
        raise WorkdirError(f"{done} exists (an earlier run); pass --config.overwrite=True to replace it, "
                           "or choose another --workdir")
