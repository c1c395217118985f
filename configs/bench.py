"""The benchmark report: every script in ``benchmarks/`` on the current backend, one table.

Usage::

    python -m sos_jax.main --config=configs/bench.py --workdir=OUT            # on a GPU or TPU
    python -m sos_jax.main --config=configs/bench.py:cpu --workdir=OUT        # on a CPU, 5-10 minutes
    python -m sos_jax.main --config=configs/bench.py --workdir=OUT \\
        --config.benchmarks="('train_throughput', 'sample_throughput')" --config.args.train_throughput.steps=20

``config.benchmarks`` names the benchmarks to run, in order. ``config.args.NAME`` holds the
command-line flags of ``benchmarks/NAME.py``, one field per flag (``max_len`` is ``--max-len``):
an int or a string is passed as ``--flag value``, ``True`` as the bare ``--flag``; ``False`` and
``""`` leave the flag out (the script's default). Each benchmark runs in its own process with
``--json``; ``timeout_s`` bounds each one.

Presets: ``default`` (sizes for one accelerator: each benchmark a few tens of seconds), ``cpu``
(the whole report in about 5-10 minutes on a 2-core CPU) and ``tiny`` (seconds per benchmark; tests).
"""

from ml_collections import config_dict

BENCHMARKS = ("countdown_gen", "sudoku_gen", "data_throughput", "train_throughput", "sample_throughput",
              "rollout_throughput")


def _args() -> config_dict.ConfigDict:
    """Every flag of every benchmark at the scripts' own defaults."""
    return config_dict.ConfigDict({
        "countdown_gen": {"n": 20_000, "batch": 1000, "max_len": 4096, "python_n": 2000, "seed": 0},
        "sudoku_gen": {"n": 16384, "batch": 1024, "variants": 64, "branch": "fewest", "techniques": "full",
                       "max_tokens": 4096, "minimal": False, "python_n": 100, "seed": 0},
        "data_throughput": {"data_dir": "", "seq_len": 4096, "batch": 16, "batches": 30, "worker_count": 0,
                            "records": 2000, "problems": 4000},
        "train_throughput": {"preset": "small", "seq_len": 1024, "batch": 8, "steps": 5, "attention": "", "seed": 0,
                             "no_torch": False, "torch_model": "auto"},
        "sample_throughput": {"preset": "small", "batch": 8, "prompt_len": 16, "new_tokens": 256, "repeats": 3,
                              "seed": 0, "no_torch": False, "torch_model": "auto"},
        "rollout_throughput": {"preset": "tiny", "checkpoint": "", "batch": 16, "group": 8, "new_tokens": 128,
                               "repeats": 3, "seed": 0},
    })


def get_config(preset: str = "default") -> config_dict.ConfigDict:
    config = config_dict.ConfigDict()
    config.job = "bench"
    config.benchmarks = BENCHMARKS
    config.timeout_s = 600  # per benchmark; one that runs longer is stopped and reported as failed
    config.fail_fast = False  # stop at the first failed benchmark (the others are reported as not run)
    config.overwrite = False  # replace the report of an earlier run in the same workdir
    config.args = _args()
    a = config.args

    preset = preset or "default"
    if preset == "default":
        # One accelerator: larger batches than the scripts' CPU-sized defaults.
        config.timeout_s = 300
        a.countdown_gen.batch = 2000
        a.sudoku_gen.batch = 4096
        a.data_throughput.batch = 32
        a.train_throughput.update(batch=32, steps=20)
        a.sample_throughput.update(batch=64, new_tokens=512, repeats=5)
        a.rollout_throughput.update(batch=64, new_tokens=256, repeats=5)
    elif preset == "cpu":
        a.countdown_gen.update(n=4000, python_n=500)
        a.sudoku_gen.update(n=4096, python_n=50)
        a.data_throughput.update(seq_len=2048, batch=8, batches=10, records=1000, problems=1000)
        a.train_throughput.update(seq_len=256, batch=8, steps=3)
        a.sample_throughput.update(new_tokens=64, repeats=2)
        a.rollout_throughput.update(repeats=2)
    elif preset == "tiny":
        a.countdown_gen.update(n=64, batch=32, max_len=512, python_n=16)
        a.sudoku_gen.update(n=64, batch=64, variants=8, max_tokens=1024, python_n=4)
        a.data_throughput.update(seq_len=256, batch=8, batches=2, records=32, problems=64)
        a.train_throughput.update(preset="tiny", seq_len=64, batch=8, steps=1)
        a.sample_throughput.update(preset="tiny", batch=8, prompt_len=8, new_tokens=16, repeats=1)
        a.rollout_throughput.update(batch=8, group=2, new_tokens=32, repeats=1)
    else:
        raise ValueError(f"configs/bench.py: unknown preset {preset!r}; choose default, cpu or tiny")
    return config
