"""The Sudoku study on the shared jobs: the dataset job's records, Sudoku training batches, the eval's
prompts and scoring, and both study configs end to end (data, pretraining, eval) at tiny scale."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from config_util import load_config

from sos_jax import main as sos_main
from sos_jax.data import batch, sudoku_test, sudoku_tfds
from sos_jax.envs.sudoku_check import replay_text
from sos_jax.eval import sudoku_eval
from sos_jax.jobs import ConfigError
from sos_jax.search import sudoku_python as sp
from sos_jax.tokenizers import sudoku as tok


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny Sudoku dataset (both forms) written by the dataset job."""
    workdir = str(tmp_path_factory.mktemp("sudoku_data"))
    summary = sos_main.run(load_config("sudoku_data", "tiny"), workdir)
    assert summary["builder"] == sudoku_tfds.NAME
    return workdir


def _records(data_dir, form, split):
    source = sudoku_tfds.open_split(data_dir, form, split)
    return [source[i] for i in range(len(source))]


def test_records_are_the_reference_writers_sequences(data_dir):
    config = load_config("sudoku_data", "tiny")
    test_boards = {p.astype(np.int32).tobytes() for p in sudoku_test.load()[0]}
    for split, size in config.splits.items():
        bt, direct = _records(data_dir, "bt", split), _records(data_dir, "direct", split)
        assert len(bt) == len(direct) == size
        for i, (b, d) in enumerate(zip(bt, direct)):
            puzzle = np.asarray(b["puzzle"], np.int32)
            assert np.array_equal(puzzle, d["puzzle"]) and int(b["problem"]) == i
            assert puzzle.tobytes() not in test_boards
            trace = sp.trace(puzzle, config.branch, config.techniques)
            board = tok.puzzle_board_text(puzzle)
            text = tok.decode([tok.START, *b["tokens"].tolist(), tok.END])
            assert text == tok.sequence_text(board, trace), (split, i)
            assert tok.decode([tok.START, *d["tokens"].tolist(), tok.END]) == tok.sequence_text(board, sp.shortcut(trace))
            assert int(b["length"]) == len(b["tokens"]) <= config.max_len - 2
            assert int(b["clues"]) == int((puzzle > 0).sum())
            assert int(b["reverts"]) == trace.count("revert")
            answer = tok.decode(d["tokens"].tolist()).split("SOL_S\n", 1)[1]
            assert replay_text(answer, puzzle.tolist(), np.asarray(d["solution"]).tolist())
    meta = json.load(open(os.path.join(sudoku_tfds.version_dir(data_dir, "bt"), "metadata.json")))
    assert meta["splits"]["train"]["groups"]["all"]["count"] == config.splits.train


def test_the_train_and_val_splits_hold_different_puzzles(data_dir):
    train = {np.asarray(r["puzzle"], np.int32).tobytes() for r in _records(data_dir, "bt", "train")}
    val = {np.asarray(r["puzzle"], np.int32).tobytes() for r in _records(data_dir, "bt", "val")}
    assert len(train) == len(_records(data_dir, "bt", "train")) and not train & val


def test_sudoku_examples_open_with_start_and_close_with_end(data_dir):
    record = _records(data_dir, "bt", "train")[0]
    tokens = np.asarray(record["tokens"], np.int32)
    ex = batch.example(tokens, seq_len=4096, mask_prompt=True, task=batch.SUDOKU)
    assert ex["inputs"][0] == tok.START and ex["targets"][-1] == tok.END
    assert np.array_equal(ex["inputs"][1:], ex["targets"][:-1])
    prompt = sudoku_eval.prompt_ids(record["puzzle"])
    masked = int((ex["weights"] == 0).sum())
    assert masked == len(prompt) - 1  # the prompt's words after START, through SOL_S n
    assert list(ex["inputs"][:len(prompt)]) == prompt


def test_scoring_replays_the_answer():
    puzzles, solutions = sudoku_test.load()
    puzzle, solution = puzzles[0].astype(np.int32), solutions[0].astype(np.int32)
    prompts, prompt_lengths = sudoku_eval.encode_prompts(puzzle[None])
    trace = sp.trace(puzzle, "fewest", "full")
    answer = tok.encode(trace) + [tok.NEWLINE, tok.SOL_E, tok.END]
    cut = answer[: len(answer) // 2]
    rows = np.zeros((3, len(answer)), np.int32)
    rows[0, :len(answer)], rows[1, :len(cut)], rows[2, :len(answer) - 3] = answer, cut, answer[:-3]
    lengths = np.asarray([len(answer), len(cut), len(answer) - 3], np.int32)
    verdict = sudoku_eval.score(np.repeat(puzzle[None], 3, 0), np.repeat(solution[None], 3, 0),
                                np.repeat(prompts, 3, 0), np.repeat(prompt_lengths, 3), rows, lengths,
                                np.asarray([False, True, False]))
    assert verdict["solved"].tolist() == [True, False, True]  # the fills decide, not the closing words
    assert verdict["malformed"].tolist() == [False, False, True]  # stopped without SOL_E, not cut
    assert verdict["tokens"].tolist() == lengths.tolist()


def test_sudoku_eval_rejects_countdown_splits(tmp_path):
    config = load_config("sudoku_eval", "tiny", checkpoint="bt=/x", **{"data.splits": ("test_seen",)})
    with pytest.raises(ConfigError, match="data.splits"):
        sos_main.run(config, str(tmp_path))


def test_both_study_configs_run_end_to_end_compare_in_one_table_and_grpo_improves_on_one(tmp_path, capsys):
    runs = {}
    for form in ("bt", "direct"):
        workdir = str(tmp_path / form)
        summary = sos_main.run(load_config(f"sudoku_{form}", "tiny"), workdir)
        assert set(summary["seconds"]) == {"data", "model", "eval"}
        assert np.isfinite(summary["final_loss"])
        model = json.load(open(os.path.join(workdir, "model", "summary.json")))
        assert model["config"]["model"]["vocab_size"] == tok.VOCAB_SIZE and model["step"] == 2
        assert "eval/val/loss" in open(os.path.join(workdir, "model", "metrics.jsonl")).read()
        results = summary["results"]
        assert results["greedy"][form]["test"]["problems"] == 8
        runs[form] = os.path.join(workdir, "model")
    assert "sampled" in summary["results"]  # the direct study samples for pass@k
    capsys.readouterr()
    checkpoint = ",".join(f"{form}={path}" for form, path in runs.items())
    out = sos_main.run(load_config("sudoku_eval", "tiny", checkpoint=checkpoint), str(tmp_path / "eval"))
    printed = capsys.readouterr().out
    assert set(out["results"]["greedy"]) == set(out["results"]["sampled"]) == {"bt", "direct"}
    table = printed.split("Sudoku test puzzles, % solved")[1]
    assert "bt " in table and "direct " in table and "pass@2" in table
    assert os.path.getsize(tmp_path / "eval" / "study.png") > 1000

    grpo = load_config("grpo_sudoku", "tiny", base=runs["bt"], **{"data.data_dir": str(tmp_path / "bt" / "data")})
    summary = sos_main.run(grpo, str(tmp_path / "grpo"))
    assert summary["step"] == 2 and summary["updates"] == 4  # 16 rows per step in minibatches of 8
    assert 0.0 <= summary["last"]["solve_rate"] <= 1.0 and np.isfinite(summary["last"]["kl"])


def test_sudoku_rl_refuses_the_test_puzzles_and_other_algorithms(tmp_path):
    with pytest.raises(ConfigError, match="test puzzles"):
        sos_main.run(load_config("grpo_sudoku", "tiny", base="x", **{"data.source": "test200"}), str(tmp_path))
    with pytest.raises(ConfigError, match="grpo"):
        sos_main.run(load_config("grpo_sudoku", "tiny", base="x", algorithm="ppo"), str(tmp_path))
