"""The dataset job, the TFDS builder, the importer and the checked reader (tiny configs)."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from config_util import crash_countdown_writer_at, load_config

from sos_jax import main as sos_main
from sos_jax.data import DataError
from sos_jax.data import countdown_problems as problems_lib
from sos_jax.data import countdown_tfds as ct
from sos_jax.data import countdown_writer, records
from sos_jax.envs import countdown as env
from sos_jax.envs.countdown_check import check_trace
from sos_jax.jobs import ConfigError, WorkdirError
from sos_jax.search import countdown_python as oracle
from sos_jax.tokenizers import countdown as tok

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("train", "val_seen", "test_seen", "val_unseen", "test_unseen")


def _records(data_dir, form, split):
    source = ct.open_split(data_dir, form, split)
    return [source[i] for i in range(len(source))]


def _files(data_dir):
    out = {}
    for root, _, names in os.walk(os.path.join(data_dir, ct.NAME)):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, data_dir)] = f.read()
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The tiny dataset, written once by the job: (workdir, summary, printed output)."""
    workdir = str(tmp_path_factory.mktemp("data") / "run")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = sos_main.run(load_config("countdown_data"), workdir)
    return workdir, summary, out.getvalue()


def test_job_output(written):
    workdir, summary, printed = written
    assert "traces/s" in printed and "train/sos/dfs" in printed and "test_unseen/ot/ot" in printed
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert os.path.getsize(os.path.join(workdir, "token_lengths.png")) > 1000
    config = load_config("countdown_data")
    assert summary["num_traces_written"] == 2 * sum(config.splits.values())
    for form in ("sos", "ot"):
        for split in SPLITS:
            group = summary["forms"][form]["splits"][split]["all"]
            assert group["count"] == config.splits[split]
            for key in ("solve_rate", "tokens_median", "tokens_p95", "tokens_max", "one_line_share",
                        "over_context_share", "truncated_share"):
                assert group[key] is not None, key
    assert summary["forms"]["ot"]["splits"]["train"]["all"]["solve_rate"] == 1.0


def test_round_trip_decodes_to_the_reference_text(written):
    """Write, read, decode: DFS and optimal-path records equal the plain-Python oracle's text."""
    workdir, _, _ = written
    sos = _records(workdir, "sos", "train")
    ot = _records(workdir, "ot", "train")
    assert len(sos) == len(ot) == 64
    checked = {"dfs": 0, "bfs": 0}
    for rec_sos, rec_ot in zip(sos, ot):
        nums, target = rec_sos["nums"].tolist(), int(rec_sos["target"])
        assert rec_ot["nums"].tolist() == nums and int(rec_ot["target"]) == target  # same problems, both forms
        assert int(rec_sos["problem"]) == int(rec_ot["problem"])
        text = tok.decode(rec_sos["tokens"])
        assert int(rec_sos["length"]) == len(rec_sos["tokens"]) <= 1024
        cut = int(rec_sos["total"]) > int(rec_sos["length"])
        if int(rec_sos["strategy"]) == 0:
            heuristic = ("sum", "mult")[int(rec_sos["heuristic"])]
            full = oracle.dfs_trace(nums, target, heuristic, target)
            assert len(tok.encode(full)) == int(rec_sos["total"])
            assert (full.startswith(text) if cut else full == text)
            checked["dfs"] += 1
        else:
            assert int(rec_sos["strategy"]) == 1 and 1 <= int(rec_sos["beam"]) <= 5
            assert text.startswith(f"Current State: {target}:{nums}, Operations: []\n")
            checked["bfs"] += 1
        if not cut:
            assert bool(rec_sos["solved"]) == check_trace(text, nums, target).solved
        assert tok.decode(rec_ot["tokens"]) == oracle.ot_trace(nums, target, oracle.solve(nums, target))
        assert bool(rec_ot["solved"]) and int(rec_ot["strategy"]) == 2
    assert checked["dfs"] == checked["bfs"] == 32  # the mix: exactly half DFS


def test_splits_are_kept_apart(written):
    workdir, _, _ = written
    spec = env.CountdownSpec()
    unseen = set(env.held_out_targets(4))
    codes = {}
    for split in SPLITS:
        recs = _records(workdir, "sos", split)
        nums = np.stack([r["nums"] for r in recs])
        target = np.array([int(r["target"]) for r in recs])
        assert [int(r["problem"]) for r in recs] == list(range(len(recs)))
        assert (set(target.tolist()) <= unseen) == split.endswith("unseen")
        assert not (set(target.tolist()) & unseen) or split.endswith("unseen")
        codes[split] = problems_lib.problem_codes(nums, target, spec)
    for split in SPLITS[1:]:
        assert len(set(codes[split].tolist())) == len(codes[split]), split  # no repeat within an eval split
    assert not set(codes["val_seen"].tolist()) & set(codes["train"].tolist())
    assert not set(codes["test_seen"].tolist()) & (set(codes["train"].tolist()) | set(codes["val_seen"].tolist()))
    assert not set(codes["test_unseen"].tolist()) & set(codes["val_unseen"].tolist())


def test_eval_split_skips_problems_already_taken():
    """Dedup is real: with a tiny number range most candidates repeat, and none is kept twice."""
    spec = env.CountdownSpec(num_count=3, num_min=1, num_max=4, target_min=10, target_max=12).validate()
    out = problems_lib.select(0, {"train": 16, "val_seen": 8}, spec, 4, 16)
    train = set(problems_lib.problem_codes(*out["train"], spec).tolist())
    val = problems_lib.problem_codes(*out["val_seen"], spec).tolist()
    assert len(set(val)) == 8 and not set(val) & train
    with pytest.raises(RuntimeError, match="too small"):
        problems_lib.select(0, {"train": 16, "val_seen": 200}, spec, 4, 16)


def test_tfds_reads_the_dataset(written):
    workdir, _, _ = written
    builder = tfds.builder(f"{ct.NAME}/sos", data_dir=workdir)
    assert str(builder.info.version) == ct.VERSION
    assert set(builder.info.splits) == set(SPLITS)
    assert builder.info.splits["train"].num_examples == 64
    assert set(builder.info.features.keys()) == {"tokens", "nums", "target", "problem", "strategy", "heuristic",
                                                 "beam", "solved", "length", "total"}
    assert builder.info.features["tokens"].np_dtype == np.uint8
    source = tfds.data_source(f"{ct.NAME}/ot", data_dir=workdir)
    assert len(source["val_unseen"]) == 16
    first = source["val_unseen"][0]
    assert tok.decode(first["tokens"]).startswith("Current State: ")


def test_same_config_same_files_and_no_overwrite(written, tmp_path):
    workdir, _, _ = written
    again = str(tmp_path / "again")
    sos_main.run(load_config("countdown_data"), again)
    assert _files(again) == _files(workdir)

    with pytest.raises(WorkdirError, match="overwrite"):  # a finished run is never replaced silently
        sos_main.run(load_config("countdown_data"), again)
    os.remove(os.path.join(again, "summary.json"))
    stamps = {p: os.path.getmtime(os.path.join(again, p)) for p in _files(again)}
    sos_main.run(load_config("countdown_data"), again)  # same settings: both forms kept as they are
    assert {p: os.path.getmtime(os.path.join(again, p)) for p in _files(again)} == stamps
    os.remove(os.path.join(again, "summary.json"))
    with pytest.raises(WorkdirError, match="other settings"):
        sos_main.run(load_config("countdown_data", seed=1), again)


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    crash_countdown_writer_at(monkeypatch, "test_seen")
    with pytest.raises(KeyboardInterrupt):
        sos_main.run(load_config("countdown_data"), workdir)
    with pytest.raises(DataError, match="dataset_info.json missing"):
        ct.open_split(workdir, "sos", "train")
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    partial = os.path.join(os.path.dirname(ct.version_dir(workdir, "sos")), records.PARTIAL + ct.VERSION)
    with open(os.path.join(partial, records.PROGRESS)) as f:
        assert list(json.load(f)["splits"]) == ["train", "val_seen"]  # finished before the crash
    train_shard = [n for n in os.listdir(partial) if "-train." in n]
    stamp = os.path.getmtime(os.path.join(partial, train_shard[0]))

    monkeypatch.undo()
    summary = sos_main.run(load_config("countdown_data"), workdir)  # the rerun completes the dataset
    assert summary["forms"]["sos"]["splits"]["test_seen"]["all"]["count"] == 16
    assert not os.path.exists(partial)
    assert os.path.getmtime(os.path.join(ct.version_dir(workdir, "sos"), train_shard[0])) == stamp  # kept, not redone


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "corrupt_record"])
def test_damaged_shard_is_named(written, tmp_path, damage):
    copy = str(tmp_path / "copy")
    shutil.copytree(written[0], copy)
    info = tfds.builder(f"{ct.NAME}/sos", data_dir=copy).info.splits["val_seen"]
    shard = os.fspath(info.filepaths[0])
    if damage == "missing":
        os.remove(shard)
    else:
        with open(shard, "r+b") as f:
            if damage == "truncated":
                f.truncate(os.path.getsize(shard) // 2)
            elif damage == "garbage":
                f.write(b"\x00not an array record\xff" * 64)
            else:  # records in the middle: the header and the index at the end stay readable
                f.seek(4096)
                f.write(b"\xff" * 8192)
    with pytest.raises(DataError) as err:
        source = ct.open_split(copy, "sos", "val_seen")
        [source[i] for i in range(len(source))]
    assert shard in str(err.value)
    assert len(ct.open_split(copy, "sos", "train")) == 64  # the other splits still read


def test_missing_dataset_and_split_are_named(written, tmp_path):
    with pytest.raises(DataError, match="configs/countdown_data.py"):
        ct.open_split(str(tmp_path), "sos", "train")
    with pytest.raises(DataError, match="no split 'dev'"):
        ct.open_split(written[0], "sos", "dev")


def _original_format(path, records):
    """The golden examples as a file of the original SoS generator's JSON format."""
    rows = [{"nums": r["nums"], "target": r["target"], "search_path": r["trace"], "optimal_path": r["optimal_path"],
             "heuristic": r["heuristic"], "rating": r["generator_rating"], "solution": r["solution"],
             "search_type": "dfs" if r["strategy"] == "dfs" else f"bfs_{r['beam_size']}"} for r in records]
    with open(path, "w") as f:
        json.dump(rows, f)


def test_import_original_format(tmp_path):
    with open(os.path.join(HERE, "data", "countdown_examples.jsonl")) as f:
        golden = [json.loads(line) for line in f][:40]
    _original_format(tmp_path / "train.json", golden[:30])
    _original_format(tmp_path / "val.json", golden[30:])
    config = load_config("countdown_data", source="import", **{"files.train": str(tmp_path / "train.json"),
                                                               "files.val_seen": str(tmp_path / "val.json")})
    workdir = str(tmp_path / "run")
    summary = sos_main.run(config, workdir)
    assert summary["forms"]["sos"]["splits"]["train"]["all"]["count"] == 30
    for form, field in (("sos", "trace"), ("ot", "optimal_path")):
        recs = _records(workdir, form, "train") + _records(workdir, form, "val_seen")
        assert [tok.decode(r["tokens"]) for r in recs] == [g[field] for g in golden]
        assert [bool(r["solved"]) for r in recs] == [check_trace(g[field], g["nums"], g["target"]).solved
                                                      for g in golden]
    sos = _records(workdir, "sos", "train")
    assert [int(r["strategy"]) for r in sos] == [0 if g["strategy"] == "dfs" else 1 for g in golden[:30]]
    assert [int(r["beam"]) for r in sos] == [g["beam_size"] or 0 for g in golden[:30]]
    assert [int(r["heuristic"]) for r in sos] == [0 if g["heuristic"] == "sum_heuristic" else 1 for g in golden[:30]]


@pytest.mark.parametrize("content, message", [
    ('{"nums": [1, 2]}', "JSON list"),
    ("not json", "cannot read"),
    ('[{"nums": [1, 2], "target": 3, "search_path": "Current State: 3:[1, 2]\\u00e9", "optimal_path": ""}]',
     "record 0: search_path: character"),
    ('[{"nums": "1 2", "target": 3, "search_path": "", "optimal_path": ""}]', "record 0: needs 'nums'"),
])
def test_import_bad_file_is_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    config = load_config("countdown_data", source="import", **{"files.train": str(path)})
    with pytest.raises(DataError, match=message) as err:
        sos_main.run(config, str(tmp_path / "run"))
    assert str(path) in str(err.value)
    assert not os.path.exists(ct.version_dir(str(tmp_path / "run"), "sos"))


@pytest.mark.parametrize("overrides, field", [
    ({"forms": ("sos", "sos")}, "config.forms"),
    ({"forms": ("dfs",)}, "config.forms"),
    ({"splits.train": -1}, "config.splits.train"),
    ({"source": "download"}, "config.source"),
    ({"source": "import"}, "config.files"),
    ({"batch_size": 33}, "config.batch_size"),
    ({"mix.beams": (0, 9)}, "config.mix"),
    ({"mix.heuristics": ("sum", "max")}, "config.mix.heuristics"),
    ({"env.num_count": 6, "env.num_max": 30}, "config.env.num_count"),
    ({"max_len": 10}, "config.max_len"),
])
def test_config_errors_name_the_field(tmp_path, overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        sos_main.run(load_config("countdown_data", **overrides), str(tmp_path / "run"))
    assert not os.path.exists(str(tmp_path / "run"))


def _batches_config(**overrides):
    return load_config("countdown_batches", **overrides)


def test_batches_job_over_the_dataset(written, tmp_path):
    workdir, _, _ = written
    summary = sos_main.run(_batches_config(**{"data.source": "dataset", "data.data_dir": workdir}),
                           str(tmp_path / "b"))
    assert summary["batch_shape"] == [8, 256]
    assert 0.5 < summary["fill_rate"] <= 1.0 and summary["traces_per_row"] >= 1.0
    assert summary["tokens_per_s"] > 0
    with open(tmp_path / "b" / "summary.json") as f:
        assert json.load(f)["fill_rate"] == summary["fill_rate"]


def test_batches_job_online(tmp_path, capsys):
    summary = sos_main.run(_batches_config(**{"data.source": "online"}), str(tmp_path / "b"))
    assert summary["batch_shape"] == [8, 256] and 0.3 < summary["fill_rate"] <= 1.0
    assert "Current State: " in capsys.readouterr().out


@pytest.mark.parametrize("overrides, error, message", [
    ({"data.source": "files"}, ConfigError, r"config\.data\.source"),
    ({"data.source": "dataset"}, ConfigError, r"config\.data\.data_dir"),
    ({"data.source": "dataset", "data.data_dir": "/nonexistent/sos"}, DataError, "/nonexistent/sos"),
    ({"data.seq_len": 8}, ConfigError, r"config\.data\.seq_len"),
    ({"data.env.num_count": 9}, ConfigError, r"config\.data\.env\.num_count"),
    ({"data.mix.heuristics": ("sum", "max")}, ConfigError, r"config\.data\.mix\.heuristics"),
    ({"data.global_batch_size": 12}, ConfigError, "global_batch_size=12"),
])
def test_batches_config_errors(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        sos_main.run(_batches_config(**overrides), str(tmp_path / "b"))


def test_records_are_what_tfds_would_write():
    """serialize() equals TFDS's own serialization of the features (fields sorted)."""
    from tensorflow_datasets.proto import tf_example_pb2

    example = {"tokens": np.array([3, 4, 5, 116], np.uint8), "nums": np.array([1, 2, 3, 99], np.int32), "target": 24,
               "problem": 7, "strategy": 1, "heuristic": -1, "beam": 3, "solved": True, "length": 4, "total": 9}
    theirs = tf_example_pb2.Example.FromString(ct.features().serialize_example(example))
    assert countdown_writer.serialize(example) == theirs.SerializeToString(deterministic=True)
    decoded = ct.features().deserialize_example_np(countdown_writer.serialize(example))
    assert decoded["tokens"].tolist() == [3, 4, 5, 116] and decoded["heuristic"] == -1 and bool(decoded["solved"])
