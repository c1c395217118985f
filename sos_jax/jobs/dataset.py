"""The ``dataset`` job: a Countdown or Sudoku dataset in both forms, as ArrayRecord shards in the
TFDS layout.

``config.task="countdown"`` (the default): ``config.source="generate"`` draws the problems of every
split on device (``data.countdown_problems``) and writes their SoS traces (``sos`` form) and optimal
paths (``ot`` form); ``"import"`` converts files in the original SoS JSON format
(``config.files.<split>``). ``config.task="sudoku"`` generates puzzles on device and writes their
backtracking traces (``bt``) and direct solutions (``direct``; ``data.sudoku_writer``). The job
shows a progress bar (traces/s), prints a table per split, form and strategy, and writes
``summary.json`` and ``token_lengths.png`` into the workdir, next to the dataset
(``sos_countdown/<form>/1.0.0/`` or ``sos_sudoku/<form>/1.0.0/``).

The same config gives the same files. A form already written with the same parameters is kept,
and a rerun after a crash only writes the splits that were not finished (``data.records``);
a form written with other parameters is replaced only with ``config.overwrite=True``, and only
once the new one is complete. An interrupted run never leaves a form that looks finished.

On several processes (``--distributed``) the traces of each batch are made on the devices of all
of them; the main process writes the files, the table, the summary and the plot, and the files are
the same as those of one process.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from sos_jax import distributed
from sos_jax.jobs import ConfigError, WorkdirError, fields, report, write_atomic

SUMMARY = "summary.json"
PLOT = "token_lengths.png"
SOURCES = ("generate", "import")
MIN_MAX_LEN = 64
SUDOKU_MIN_MAX_LEN = 400  # a direct solution alone takes 334 words


def sudoku_config(preset: str = "default"):
    """The config of ``configs/sudoku_data.py`` at ``preset`` (``default``, ``small`` or ``tiny``)."""
    from ml_collections import config_dict

    config = config_dict.ConfigDict()
    config.job = "dataset"
    config.task = "sudoku"
    config.source = "generate"
    config.seed = 0  # puzzles and their symmetries derive from it; each split has keys of its own
    config.splits = config_dict.ConfigDict({"train": 2_800_000, "val": 2_000})  # puzzles per split
    config.forms = ("bt", "direct")
    config.clues = "minimal"  # "minimal": one removal pass; "range": clue_min..clue_max asked (slower)
    config.clue_min = 22
    config.clue_max = 28
    config.variants = 64  # random symmetries written per fresh puzzle
    config.branch = "fewest"  # branch cell: "fewest" candidates or "row-major"
    config.techniques = "full"  # deductions before a guess: "full" or "singles"
    config.max_len = 4_096  # puzzles whose backtracking sequence is longer are left out (of both forms)
    config.context_len = 4_096  # the table reports the share of sequences longer than this
    config.batch_size = 1_024  # puzzles per on-device call (does not change the data)
    config.overwrite = False

    preset = preset or "default"
    if preset == "small":
        config.splits.update({"train": 20_000, "val": 500})
    elif preset == "tiny":
        config.splits.update({"train": 48, "val": 16})
        config.variants = 4
        config.batch_size = 32
        config.max_len = 1_024
        config.context_len = 1_024
    elif preset != "default":
        raise ValueError(f"unknown preset {preset!r}; choose default, small or tiny")
    return config


def _store(config):
    """``(tfds module, writer module)`` of the config's task."""
    if fields.task(config).name == "sudoku":
        from sos_jax.data import sudoku_tfds, sudoku_writer

        return sudoku_tfds, sudoku_writer
    from sos_jax.data import countdown_tfds, countdown_writer

    return countdown_tfds, countdown_writer


def _splits(config) -> dict[str, int]:
    if fields.task(config).name == "sudoku":
        from sos_jax.data.sudoku_tfds import SPLITS
    else:
        from sos_jax.data.countdown_problems import SPLITS

    names = tuple(SPLITS)
    fields.known(config, "splits", names)
    sizes = {split: fields.integer(config, f"splits.{split}", 0) for split in names if split in config.splits}
    if config.source == "generate" and not any(sizes.values()):
        raise ConfigError("config.splits: every split has 0 problems; nothing to write")
    return sizes


def _files(config) -> dict[str, str]:
    from sos_jax.data.countdown_problems import SPLITS

    fields.known(config, "files", tuple(SPLITS))
    files = {split: fields.get(config, f"files.{split}") for split in config.files}
    for split, path in files.items():
        if not isinstance(path, str):
            raise ConfigError(f"config.files.{split}={path!r}: must be a path (or '' to leave the split out)")
        if path and not os.path.isfile(path):
            raise ConfigError(f"config.files.{split}={path!r}: no such file")
    files = {split: path for split, path in files.items() if path}
    if not files:
        raise ConfigError("config.files: source='import' needs at least one file, e.g. --config.files.train=PATH")
    return files


def _forms(config) -> tuple[str, ...]:
    FORMS = _store(config)[0].FORMS
    forms = tuple(fields.get(config, "forms"))
    if not forms or any(f not in FORMS for f in forms) or len(set(forms)) != len(forms):
        raise ConfigError(f"config.forms={forms!r}: must name each of {', '.join(map(repr, FORMS))} at most once")
    return forms


def params_from_config(config):
    """The builder parameters of the run (``GenerateParams``, ``ImportParams`` or ``SudokuParams``)."""
    from sos_jax.data import countdown_tfds as ct

    if fields.task(config).name == "sudoku":
        return _sudoku_params(config)
    if config.source == "import":
        return ct.ImportParams(files=tuple(sorted(_files(config).items())))
    sizes = _splits(config)
    return ct.GenerateParams(seed=config.seed, split_seed=config.split_seed,
                             sizes=tuple((s, n) for s, n in sizes.items() if n), spec=fields.spec_from_config(config),
                             mix=fields.mix_from_config(config), max_len=config.max_len, batch_size=config.batch_size)


def _sudoku_params(config):
    """``SudokuParams`` of the config, every field checked (ConfigError names the field)."""
    from sos_jax.data import sudoku_tfds as st
    from sos_jax.envs.sudoku import MIN_CLUES
    from sos_jax.search import sudoku as search

    if config.source != "generate":
        raise ConfigError(f"config.source={config.source!r}: Sudoku datasets are generated ('generate')")
    clue_min = fields.integer(config, "clue_min", MIN_CLUES)
    clue_max = fields.integer(config, "clue_max", clue_min)
    if clue_max > 80:
        raise ConfigError(f"config.clue_max={clue_max}: must be <= 80")
    sizes = _splits(config)
    return st.SudokuParams(seed=fields.integer(config, "seed", 0), sizes=tuple((s, n) for s, n in sizes.items() if n),
                           clues=fields.choice(config, "clues", st.CLUE_SOURCES), clue_min=clue_min, clue_max=clue_max,
                           variants=fields.integer(config, "variants", 1),
                           branch=fields.choice(config, "branch", search.BRANCH_ORDERS),
                           techniques=fields.choice(config, "techniques", search.TECHNIQUES),
                           max_len=fields.integer(config, "max_len", SUDOKU_MIN_MAX_LEN),
                           batch_size=fields.integer(config, "batch_size", 1))


def _check_sudoku_batch(params) -> None:
    import jax

    fresh = params.batch_size // params.variants
    if params.batch_size % params.variants or fresh % jax.device_count():
        raise ConfigError(f"config.batch_size={params.batch_size}: must be config.variants={params.variants} times a "
                          f"multiple of {jax.device_count()} (the devices), so that every device makes whole batches "
                          "of fresh puzzles")


def validate(config, workdir: str | None) -> None:
    """Checks every field the job reads and the workdir; raises ConfigError / WorkdirError."""
    from sos_jax.envs import countdown as env
    from sos_jax.search.countdown import DFS_MAX_NUMBERS

    if fields.get(config, "job") != "dataset":
        raise ConfigError(f"config.job={config.job!r}: this is the 'dataset' job")
    fields.choice(config, "source", SOURCES)
    fields.integer(config, "seed", 0)
    if fields.task(config).name == "countdown":
        fields.integer(config, "split_seed", 0)
    fields.integer(config, "max_len", MIN_MAX_LEN)
    fields.integer(config, "context_len", 1)
    batch = fields.integer(config, "batch_size", 1)
    overwrite = fields.boolean(config, "overwrite")
    forms = _forms(config)
    params = params_from_config(config)
    if fields.task(config).name == "sudoku":
        _check_sudoku_batch(params)
    elif config.source == "generate":
        if "sos" in forms and params.spec.num_count > DFS_MAX_NUMBERS:
            raise ConfigError(f"config.env.num_count={params.spec.num_count}: the SoS form needs DFS traces, which "
                              f"support up to {DFS_MAX_NUMBERS} numbers; use config.forms=('ot',) or fewer numbers")
        for kind in ("seen", "unseen"):
            try:
                env.split_targets(params.spec, kind, seed=config.split_seed)
            except ValueError as e:
                raise ConfigError(f"config.env: {e}") from None
        import jax

        rows = params.mix.block * jax.device_count()
        if batch % rows:
            raise ConfigError(f"config.batch_size={batch}: must be a multiple of {rows} ({params.mix.block} x "
                              f"{jax.device_count()} devices), so that every device holds whole blocks of the SoS mix")
    fields.workdir_free(workdir, SUMMARY, overwrite)
    for form in forms:
        written = _written_params(workdir, form, _store(config)[0])
        if written is not None and written != params.describe() and not overwrite:
            raise WorkdirError(f"{workdir}: holds a {form} dataset written with other settings; pass "
                               "--config.overwrite=True to replace it, or choose another --workdir")


def _written_params(workdir: str, form: str, store) -> dict | None:
    """The parameters a complete dataset of ``form`` (``store``: its tfds module) in ``workdir``
    was written with, or None."""
    path = os.path.join(store.version_dir(workdir, form), "metadata.json")
    if not os.path.isfile(os.path.join(store.version_dir(workdir, form), "dataset_info.json")):
        return None
    try:
        with open(path) as f:
            return json.load(f).get("params", {})
    except (OSError, ValueError):
        return {}  # a dataset without readable parameters: not ours to reuse


def run(config, workdir: str) -> dict[str, Any]:
    """Writes the dataset (what is not already there), prints the table, writes the summary and plot."""
    import jax
    from tqdm import tqdm

    validate(config, workdir)
    ct, writer = _store(config)
    task = fields.task(config).name
    wall_start = time.perf_counter()
    params = params_from_config(config)
    forms = _forms(config)
    os.makedirs(workdir, exist_ok=True)

    device = jax.devices()[0]
    what = (f"{', '.join(f'{s} {n:,}' for s, n in params.sizes)} problems" if hasattr(params, "sizes")
            else f"files {', '.join(f'{s}={p}' for s, p in params.files)}")
    main = distributed.is_main_process()  # the only one that writes files and reports
    distributed.say(f"dataset: {what}; forms {', '.join(forms)}; into {workdir} on {jax.device_count()} x "
                    f"{device.platform}{f' ({jax.process_count()} processes)' if jax.process_count() > 1 else ''}")
    write_s: dict[str, float] = {}
    written = 0
    todo = distributed.agree(lambda: [form for form in forms
                                      if _written_params(workdir, form, ct) != params.describe()])
    if todo and task == "countdown" and config.source == "generate":
        start = time.perf_counter()
        with tqdm(total=sum(n for _, n in params.sizes), unit="problem", desc="problems", dynamic_ncols=True,
                  disable=not main) as bar:
            writer.problems(params, progress=bar.update)
        write_s["problems"] = time.perf_counter() - start
    for form in forms:
        if form not in todo:
            distributed.say(f"{form}: already written with these settings in {ct.version_dir(workdir, form)}; kept")
            continue
        total = sum(n for _, n in params.sizes) if hasattr(params, "sizes") else None
        start = time.perf_counter()
        with tqdm(total=total, unit="trace", desc=form, smoothing=0.1, dynamic_ncols=True, disable=not main) as bar:
            writer.write_form(workdir, form, params, context_len=config.context_len, progress=bar.update)
            written += bar.n
        write_s[form] = time.perf_counter() - start
    run_s = sum(write_s.values())
    written = distributed.agree(lambda: written)

    meta = distributed.agree(lambda: {form: dict(ct.load_builder(workdir, form).info.metadata) for form in forms})
    table = {f"{split}/{form}/{group}": s for form in forms for split, rep in meta[form]["splits"].items()
             for group, s in rep["groups"].items() if not (form == "ot" and group == "all")}  # ot: one group
    distributed.say()
    distributed.say(report.format_table(table, label="split/form/group", rule_before=("dfs", "ot")))
    if written:
        distributed.say(f"{written:,} traces in {run_s:.1f}s: {written / run_s:,.1f} traces/s "
                        f"({', '.join(f'{f} {s:.1f}s' for f, s in write_s.items())}; compilation included)")

    plot_split = next(iter(meta[forms[0]]["splits"]))
    hists = {f"{form}/{group}": (counts, f"{form} {group} (n={meta[form]['splits'][plot_split]['groups'][group]['count']})")
             for form in forms for group, counts in meta[form]["splits"][plot_split]["hist"].items()
             if group != "all" or len(meta[form]["splits"][plot_split]["hist"]) == 1}
    plot_path = os.path.join(workdir, PLOT)
    if main:
        report.save_plot(plot_path, hists, config.context_len, "context_len",
                         f"{task.capitalize()} {plot_split} split: token lengths per form and strategy")
    summary = {
        "job": "dataset",
        "data_dir": os.path.abspath(workdir),
        "builder": ct.NAME,
        "version": ct.VERSION,
        "forms": {form: {"path": ct.version_dir(os.path.abspath(workdir), form),
                         "context_len": meta[form]["context_len"],
                         "splits": {split: rep["groups"] for split, rep in meta[form]["splits"].items()}}
                  for form in forms},
        "num_traces_written": written,
        "write_s": write_s,
        "traces_per_s": written / run_s if written else None,
        "wall_s": time.perf_counter() - wall_start,
        "backend": jax.default_backend(),
        "plot": PLOT,
        "config": config.to_dict(),
    }
    summary_path = os.path.join(workdir, SUMMARY)
    if main:
        write_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    distributed.say(f"\nwrote {summary_path} and {plot_path}; read the data with "
                    f"tfds.data_source('{ct.NAME}/{forms[0]}', data_dir='{workdir}')")
    return summary
