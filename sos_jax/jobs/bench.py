"""The ``bench`` job: runs the scripts in ``benchmarks/`` and reports them in one table.

Each benchmark named in ``config.benchmarks`` runs in its own process (``python
benchmarks/NAME.py --json`` plus the flags in ``config.args.NAME``, with this process's
environment, so ``JAX_PLATFORMS`` and the like carry over and every benchmark starts with fresh
devices). Its output goes to ``logs/NAME.log`` in the workdir; the last line of its stdout is its
JSON result. The report has one row per benchmark: its headline throughput, the baseline the same
process measured and their ratio, and the wall time, under a header naming the backend, the device
kind and count, the process count, the jax and jaxlib versions, the host and the date (asked of
the same backend by a short probe process before the benchmarks).

Written to the workdir: ``results/NAME.json`` after each benchmark that finished (a rerun in the
same workdir after a crash keeps those run with the same flags on the same devices), then
``summary.json`` (the rows, each benchmark's JSON, the device and the config), ``report.md`` (the
table in Markdown) and ``bench.png`` (each benchmark's speed-up over its baseline). A benchmark
that fails or passes ``config.timeout_s`` is a failed row with its log and the tail of its stderr;
the others still run unless ``config.fail_fast``.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import datetime
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sos_jax
from sos_jax.jobs import ConfigError, fields, write_atomic

SUMMARY = "summary.json"
TAIL_LINES = 15  # lines of a failed benchmark's stderr kept in the report


@dataclasses.dataclass(frozen=True)
class Headline:
    """Where a benchmark's JSON holds the numbers of its row (dotted keys)."""

    measure: str  # what the headline throughput measures
    key: str
    unit: str
    baseline: str  # what the same process compares it with
    baseline_key: str
    ratio_key: str  # headline / baseline, as the benchmark computes it
    reason_key: str = ""  # why there is no baseline number, when there is none
    extras: tuple[tuple[str, str, str], ...] = ()  # (label, key, unit) of secondary numbers


HEADLINES = {
    "countdown_gen": Headline("Countdown SoS-mix traces on device", "traces_per_s", "traces/s",
                              "plain-Python traces", "python_traces_per_s", "ratio"),
    "sudoku_gen": Headline("Sudoku traces + replay check on device", "device.stage_per_s.traces", "traces/s",
                           "plain-Python traces", "python.traces_per_s", "trace_speedup",
                           extras=(("pipeline", "device.puzzles_with_traces_per_s", "puzzles/s"),
                                   ("fresh puzzles", "device.stage_per_s.fresh", "puzzles/s"))),
    "data_throughput": Headline("grain pipeline to jax.Arrays", "grain_device_tokens_per_s", "tokens/s",
                                "read + decode records", "baseline_tokens_per_s", "grain_device_ratio",
                                extras=(("online source", "online_tokens_per_s", "tokens/s"),)),
    "train_throughput": Headline("train step (AdamW)", "tokens_per_s", "tokens/s", "PyTorch, same size",
                                 "torch_tokens_per_s", "ratio_vs_torch", "torch_reason",
                                 extras=(("MFU", "mfu", "%"),)),
    "sample_throughput": Headline("greedy sampling, KV cache", "tokens_per_s", "tokens/s", "PyTorch generate",
                                  "torch_tokens_per_s", "ratio_vs_torch", "torch_reason"),
    "rollout_throughput": Headline("RL rollouts + rewards on device", "device_tokens_per_s", "tokens/s",
                                   "sampler + Python rewards", "host_tokens_per_s", "ratio_end_to_end",
                                   extras=(("reward stage", "ratio_reward_stage", "x"),)),
}

# Run in a fresh process with the benchmarks' environment: the devices they will see.
_PROBE = """
import json, os, jax, jaxlib
devices = jax.devices()
try:
    platform_version = devices[0].client.platform_version
except Exception:
    platform_version = ""
print(json.dumps({"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
                  "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
                  "process_count": jax.process_count(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                  "platform_version": platform_version, "host_cpus": os.cpu_count()}))
"""
_SAME_DEVICES = ("backend", "device_kind", "device_count", "process_count", "jax", "jaxlib")
_STATUS = {"failed": "FAILED", "timeout": "TIMED OUT", "not run": "not run"}  # as the report shows a row's status


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder of the checkout the ``sos_jax`` package lives in."""
    return Path(sos_jax.__file__).resolve().parents[1] / "benchmarks"


def script_flags(script: Path) -> dict[str, str]:
    """The flags a benchmark script's argparse parser defines, read from its source (nothing is
    imported): ``{field name: "bool" | "int" | "float" | "str"}``, ``--max-len`` as ``max_len``."""
    found = {}
    for node in ast.walk(ast.parse(script.read_text(), str(script))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument" and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        flag = node.args[0].value
        if not (isinstance(flag, str) and flag.startswith("--")) or flag == "--json":
            continue
        kw = {k.arg: k.value for k in node.keywords}
        if isinstance(kw.get("action"), ast.Constant) and kw["action"].value == "store_true":
            kind = "bool"
        elif isinstance(kw.get("type"), ast.Name) and kw["type"].id in ("int", "float"):
            kind = kw["type"].id
        else:
            kind = "str"
        found[flag[2:].replace("-", "_")] = kind
    return found


def _check_args(config, name: str, script: Path) -> list[str]:
    """The command-line flags of ``config.args.<name>``; ConfigError for a field the script lacks or
    a value of the wrong type."""
    flags = script_flags(script)
    node = config.args.get(name)
    if node is None:
        return []
    if not hasattr(node, "items"):
        raise ConfigError(f"config.args.{name}={node!r}: must be a ConfigDict of {script.name}'s flags")
    argv = []
    for field, value in node.items():
        path = f"config.args.{name}.{field}"
        if field not in flags:
            raise ConfigError(f"{path}: {script.name} has no flag --{field.replace('_', '-')}; its flags: "
                              f"{', '.join(sorted(flags))}")
        kind, flag = flags[field], "--" + field.replace("_", "-")
        if kind == "bool":
            if type(value) is not bool:
                raise ConfigError(f"{path}={value!r}: {flag} is a switch; must be True or False")
            argv += [flag] if value else []
        elif kind == "int":
            if type(value) is not int:
                raise ConfigError(f"{path}={value!r}: {flag} takes an int")
            argv += [flag, str(value)]
        elif kind == "float":
            if type(value) not in (int, float):
                raise ConfigError(f"{path}={value!r}: {flag} takes a number")
            argv += [flag, str(value)]
        else:
            if type(value) is not str:
                raise ConfigError(f"{path}={value!r}: {flag} takes a string ('' leaves it out)")
            argv += [flag, value] if value else []
    return argv


def commands(config) -> dict[str, list[str]]:
    """``{benchmark: its flags after --json}`` for ``config.benchmarks``, checked against the scripts."""
    folder = benchmarks_dir()
    if not folder.is_dir():
        raise ConfigError(f"config.benchmarks: no benchmarks folder at {folder}; the bench job runs the scripts of "
                          "a source checkout (clone the repository and pip install -e it)")
    names = fields.get(config, "benchmarks")
    if isinstance(names, str) or not isinstance(names, (tuple, list)) or not names:
        raise ConfigError(f"config.benchmarks={names!r}: must be a non-empty tuple of benchmark names")
    for name in names:
        if name not in HEADLINES:
            raise ConfigError(f"config.benchmarks: unknown benchmark {name!r}; choose from {', '.join(HEADLINES)}")
    if len(set(names)) < len(names):
        raise ConfigError(f"config.benchmarks={tuple(names)!r}: a benchmark is named twice")
    args = fields.get(config, "args")
    for name in args.keys():
        if name not in HEADLINES:
            raise ConfigError(f"config.args.{name}: unknown benchmark; choose from {', '.join(HEADLINES)}")
    out = {}
    for name in names:
        script = folder / f"{name}.py"
        if not script.is_file():
            raise ConfigError(f"config.benchmarks: {name!r} has no script {script}")
        out[name] = ["--json"] + _check_args(config, name, script)
    return out


def validate(config, workdir: str | None) -> None:
    """Checks the job's fields, every benchmark's flags against its script, and the workdir."""
    if fields.get(config, "job") != "bench":
        raise ConfigError(f"config.job={config.job!r}: this is the 'bench' job")
    fields.integer(config, "timeout_s", 1)
    fields.boolean(config, "fail_fast")
    commands(config)
    fields.workdir_free(workdir, SUMMARY, fields.boolean(config, "overwrite"))


def _dig(result: dict, key: str) -> Any:
    """The value at dotted ``key`` of a benchmark's JSON, or None."""
    node = result
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def fmt_number(value: float | None, unit: str = "") -> str:
    """A throughput as people read it: ``1,234``, ``12.3``, ``2.35 M``; ``%`` and ``x`` units as such."""
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.1%}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        return f"{value:.1f} s"
    v = abs(value)
    text = (f"{value / 1e6:,.2f} M" if v >= 1e6 else f"{value:,.0f}" if v >= 100 else f"{value:.1f}" if v >= 1
            else f"{value:.3g}")
    return f"{text} {unit}".rstrip()


def make_row(name: str, result: dict, device: dict) -> dict[str, Any]:
    """The report's row for one finished benchmark's JSON ``result``."""
    h = HEADLINES[name]
    value, base, ratio = _dig(result, h.key), _dig(result, h.baseline_key), _dig(result, h.ratio_key)
    row = {"benchmark": name, "status": "ok", "measure": h.measure, "value": value, "unit": h.unit,
           "baseline": h.baseline, "baseline_value": base, "ratio": ratio, "note": "",
           "extras": {label: _dig(result, key) for label, key, _ in h.extras},
           "extras_text": ", ".join(f"{label} {fmt_number(_dig(result, key), unit)}" for label, key, unit in h.extras
                                    if _dig(result, key) is not None)}
    if not isinstance(value, (int, float)):
        row.update(status="failed", note=f"its JSON has no number at {h.key!r}")
        return row
    notes = []
    if base is None:
        reason = _dig(result, h.reason_key) if h.reason_key else None
        notes.append(f"no baseline: {reason}" if reason else "no baseline number")
    for key in ("backend", "device_count"):
        seen = _dig(result, key) if key in result else _dig(result, f"device.{key}")  # sudoku_gen: under "device"
        if seen is not None and seen != device.get(key):
            notes.append(f"ran with {key} {seen!r}, the probe saw {device.get(key)!r}")
    row["note"] = "; ".join(notes)
    return row


class _Runner:
    """Runs one benchmark process: output streamed to its log, progress shown, timeout enforced."""

    def __init__(self, name: str, argv: list[str], log_path: str, timeout_s: int, label: str):
        self.name, self.log_path, self.timeout_s, self.label = name, log_path, timeout_s, label
        self.cmd = [sys.executable, str(benchmarks_dir() / f"{name}.py"), *argv]
        self.stdout = collections.deque(maxlen=50)
        self.stderr = collections.deque(maxlen=TAIL_LINES)
        self.lock = threading.Lock()

    def _pump(self, stream, log, keep) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode(errors="replace")
            with self.lock:
                log.write(text)
                log.flush()
            keep.extend(part.rstrip() for part in text.replace("\r", "\n").splitlines() if part.strip())

    def _progress(self, elapsed: float, last_shown: float) -> float:
        if sys.stdout.isatty():
            print(f"\r{self.label} {self.name}: {elapsed:5.0f} s", end="", flush=True)
            return elapsed
        if elapsed - last_shown >= 60:
            print(f"{self.label} {self.name}: still running after {elapsed:.0f} s", flush=True)
            return elapsed
        return last_shown

    def run(self) -> tuple[str, float, dict | None, str]:
        """``(status, wall seconds, JSON result or None, error text)``; status "ok", "failed" or "timeout"."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        start = time.monotonic()
        timed_out = False
        with open(self.log_path, "w") as log:
            log.write(f"$ {shlex.join(self.cmd)}\n")
            log.flush()
            proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    start_new_session=True)  # its own process group, stopped as one
            pumps = [threading.Thread(target=self._pump, args=(proc.stdout, log, self.stdout), daemon=True),
                     threading.Thread(target=self._pump, args=(proc.stderr, log, self.stderr), daemon=True)]
            for t in pumps:
                t.start()
            try:
                shown = 0.0
                while True:
                    try:
                        proc.wait(timeout=1.0)
                        break
                    except subprocess.TimeoutExpired:
                        elapsed = time.monotonic() - start
                        if elapsed > self.timeout_s:
                            timed_out = True
                            break
                        shown = self._progress(elapsed, shown)
            finally:
                if proc.poll() is None:  # timed out, or this process interrupted (Ctrl-C)
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:  # it ended meanwhile
                        pass
                    proc.wait()
                for t in pumps:
                    t.join(timeout=10)
            wall_s = time.monotonic() - start
            if sys.stdout.isatty():
                print("\r" + " " * 60 + "\r", end="", flush=True)
            if timed_out:
                log.write(f"\n[stopped after config.timeout_s={self.timeout_s} s]\n")
        tail = "\n".join(self.stderr)
        if timed_out:
            return "timeout", wall_s, None, f"stopped after config.timeout_s={self.timeout_s} s\n{tail}".rstrip()
        if proc.returncode != 0:
            return "failed", wall_s, None, f"exit status {proc.returncode}\n{tail}".rstrip()
        last = self.stdout[-1] if self.stdout else ""
        try:
            result = json.loads(last)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            return "failed", wall_s, None, f"the last line of its stdout is not a JSON object: {last[:200]!r}"
        return "ok", wall_s, result, ""


def probe_devices() -> dict[str, Any]:
    """The backend, device kind and count, process count and versions a benchmark process sees
    (asked of a fresh process with this environment), plus the host name and the date."""
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"bench: jax could not start its backend in a fresh process: {tail}")
    device = json.loads(lines[-1])
    device["host"] = socket.gethostname()
    device["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return device


def device_line(device: dict) -> str:
    """The report's header: backend, devices, processes, versions, host and date."""
    procs = device["process_count"]
    return (f"backend {device['backend']}: {device['device_count']} x {device['device_kind']}, {procs} "
            f"process{'es' if procs > 1 else ''}; jax {device['jax']}, jaxlib {device['jaxlib']}; "
            f"host {device['host']} ({device['host_cpus']} CPUs); {device['date']}")


_COLUMNS = (("benchmark", "<"), ("measure", "<"), ("throughput", ">"), ("baseline", "<"),
            ("baseline throughput", ">"), ("ratio", ">"), ("wall", ">"), ("also", "<"))


def _cells(row: dict) -> list[str]:
    if row["status"] != "ok":
        return [row["benchmark"], _STATUS[row["status"]], "-", "-", "-", "-", fmt_number(row.get("wall_s"), "s"),
                row.get("log", "")]
    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
    name = row["benchmark"] + (" *" if row.get("reused") else "")
    return [name, row["measure"], fmt_number(row["value"], row["unit"]), row["baseline"],
            fmt_number(row["baseline_value"], row["unit"]), ratio, fmt_number(row["wall_s"], "s"),
            row["extras_text"]]


def format_table(rows: list[dict], device: dict) -> str:
    """The report as text: the device header, one line per benchmark, then notes and failures."""
    cells = [_cells(r) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _) in enumerate(_COLUMNS)]

    def line(values):
        return "  ".join(f"{v:{a}{w}}" for v, (_, a), w in zip(values, _COLUMNS, widths)).rstrip()

    head = line([h for h, _ in _COLUMNS])
    out = [device_line(device), "", head, "-" * len(head), *(line(c) for c in cells)]
    if any(r.get("reused") for r in rows):
        out.append("* kept from an earlier run in this workdir (same flags, same devices)")
    for r in rows:
        if r["status"] == "ok" and r["note"]:
            out.append(f"{r['benchmark']}: {r['note']}")
    for r in rows:
        if r["status"] in ("failed", "timeout"):
            out += ["", f"{r['benchmark']} {_STATUS[r['status']]}: log {r['log']}",
                    *("    " + x for x in (r.get("error") or "").splitlines())]
    return "\n".join(out)


def format_markdown(rows: list[dict], device: dict) -> str:
    """The same table in Markdown (for a README), under the device line."""
    head = [h for h, _ in _COLUMNS]
    out = [device_line(device), "", "| " + " | ".join(head) + " |",
           "|" + "|".join("---" if a == "<" else "---:" for _, a in _COLUMNS) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(out) + "\n"


def save_chart(path: str, rows: list[dict], device: dict) -> None:
    """One horizontal bar per benchmark: its speed-up over its baseline (log scale), annotated with
    its headline throughput; benchmarks without a ratio get a label and no bar."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sos_jax.files import write_figure

    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.8), dpi=110)
    ys = list(range(len(rows)))[::-1]
    ratios = [r["ratio"] for r in rows if r["status"] == "ok" and r["ratio"]]
    lo, hi = min(ratios + [1.0]) / 3, max(ratios + [1.0]) * 12
    for y, r in zip(ys, rows):
        if r["status"] == "ok" and r["ratio"]:
            ax.barh(y, r["ratio"] - 1, left=1, height=0.6, color="tab:green" if r["ratio"] >= 1 else "tab:orange")
            text = f"{r['ratio']:.2f}x   {fmt_number(r['value'], r['unit'])}"
            x = r["ratio"]
        elif r["status"] == "ok":
            text, x = f"no baseline   {fmt_number(r['value'], r['unit'])}", 1.0
        else:
            text, x = _STATUS[r["status"]], 1.0
        ax.text(x * 1.08, y, text, va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_yticks(ys, [f"{r['benchmark']}\n{r['measure']}" if r["status"] == "ok" else r["benchmark"] for r in rows],
                  fontsize=8)
    ax.set_xlabel("speed-up over the baseline measured in the same process (log scale)")
    ax.set_title(f"sos_jax benchmarks: {device['device_count']} x {device['device_kind']} ({device['backend']}), "
                 f"jax {device['jax']}", fontsize=10)
    write_figure(path, fig)


def _load_kept(path: str, argv: list[str], device: dict) -> dict | None:
    """An earlier run's saved result at ``path`` if it ran with ``argv`` on the same devices."""
    try:
        with open(path) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return None
    same = all(kept.get("device", {}).get(k) == device.get(k) for k in _SAME_DEVICES)
    return kept if same and kept.get("argv") == argv else None


def run(config, workdir: str) -> dict[str, Any]:
    """Runs the benchmarks one after the other, prints the table and writes the report files."""
    validate(config, workdir)
    argvs = commands(config)
    results_dir, logs_dir = os.path.join(workdir, "results"), os.path.join(workdir, "logs")
    os.makedirs(results_dir, exist_ok=True)
    os.makedirs(logs_dir, exist_ok=True)
    summary_path = os.path.join(workdir, SUMMARY)
    if config.overwrite:  # a fresh report: an interrupted rerun must not look finished or keep old rows
        for path in [summary_path] + [os.path.join(results_dir, f"{n}.json") for n in argvs]:
            if os.path.exists(path):
                os.remove(path)

    device = probe_devices()
    print(f"bench: {len(argvs)} benchmark{'s' if len(argvs) > 1 else ''} on {device_line(device)}", flush=True)
    rows, raw = [], {}
    stop = False
    for i, (name, argv) in enumerate(argvs.items()):
        label = f"[{i + 1}/{len(argvs)}]"
        log_path = os.path.join(logs_dir, f"{name}.log")
        result_path = os.path.join(results_dir, f"{name}.json")
        if stop:
            rows.append({"benchmark": name, "status": "not run", "wall_s": None, "log": "", "error": ""})
            continue
        kept = _load_kept(result_path, argv, device)
        if kept:
            row = {**kept["row"], "reused": True}
            raw[name] = kept["result"]
            print(f"{label} {name}: kept from an earlier run ({result_path})", flush=True)
            rows.append(row)
            continue
        print(f"{label} {name}: {shlex.join(argv)} (log {log_path})", flush=True)
        status, wall_s, result, error = _Runner(name, argv, log_path, config.timeout_s, label).run()
        if status == "ok":
            row = make_row(name, result, device)
            raw[name] = result
            if row["status"] != "ok":
                error = row["note"]
        else:
            row = {"benchmark": name, "status": status}
        row.update(wall_s=wall_s, log=log_path, error=error, reused=False)
        rows.append(row)
        if row["status"] == "ok":
            write_atomic(result_path, json.dumps({"row": row, "result": result, "argv": argv, "device": device},
                                                 indent=2) + "\n")
            print(f"{label} {name}: {fmt_number(row['value'], row['unit'])} ({row['measure']}); "
                  f"{'-' if row['ratio'] is None else format(row['ratio'], '.2f') + 'x'} {row['baseline']}; "
                  f"{wall_s:.1f} s", flush=True)
        else:
            print(f"{label} {name}: {_STATUS[row['status']]} after {wall_s:.1f} s; log {log_path}", flush=True)
            for x in error.splitlines():
                print(f"    {x}", flush=True)
            stop = bool(config.fail_fast)

    failed = [r["benchmark"] for r in rows if r["status"] != "ok"]
    table = format_table(rows, device)
    print("\n" + table, flush=True)
    summary = {"job": "bench", "device": device, "rows": rows, "failed": failed, "results": raw,
               "table": table, "config": config.to_dict()}
    write_atomic(os.path.join(workdir, "report.md"), format_markdown(rows, device))
    save_chart(os.path.join(workdir, "bench.png"), rows, device)
    write_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {summary_path}, report.md and bench.png", flush=True)
    if failed:
        print(f"bench: {len(failed)} of {len(rows)} benchmarks did not finish: {', '.join(failed)}. To rerun only "
              f"those, delete {summary_path} and run the same command again.", flush=True)
    return summary
