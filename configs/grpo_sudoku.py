"""GRPO on Sudoku: a backtracking (or direct) model improved with the replay reward.

Usage::

    python -m sos_jax.main --config=configs/grpo_sudoku.py --workdir=workdir/grpo_sudoku \
        [--config.base=RUNS/bt/model --config.data.data_dir=RUNS/bt/data]

The prompts are puzzles of the study's dataset (``train`` split; the 200 test puzzles are never
used), each rolled out 8 times at temperature 0.7; the reward is 1 when the answer's fills replay
to the solution, else 0 (``rl.rollout.sudoku_verdict``); KL loss coefficient 0.001 and learning rate
1e-6, the backtracking study's settings. Score the result against its base on the test puzzles
with configs/sudoku_eval.py (``--config.checkpoint=before=BASE,after=WORKDIR``).

Presets: ``default`` (a study in ``workdir/sudoku_bt``: ``configs/sudoku_bt.py`` run with
``--workdir=workdir/sudoku_bt``), ``tiny`` (tests; give ``--config.base`` and
``--config.data.data_dir``).
"""

from sos_jax.jobs import rl


def get_config(preset: str = "default"):
    config = rl.default_config("grpo")
    config.task = "sudoku"
    config.base = "workdir/sudoku_bt/model"
    config.data.update(source="dataset", data_dir="workdir/sudoku_bt/data", form="bt", split="train",
                       num_problems=0)
    config.rollout.update(prompts_per_step=16, group_size=8, temperature=0.7, max_new_tokens=0)
    config.train.update(steps=200, learning_rate=1e-6, minibatch_rows=32)
    config.grpo.kl_coef = 0.001
    preset = preset or "default"
    if preset == "tiny":
        config.base = config.data.data_dir = ""
        config.data.num_problems = 16
        config.rollout.update(prompts_per_step=8, group_size=2, max_new_tokens=32)
        config.train.update(steps=2, minibatch_rows=8, checkpoint_every=1, learning_rate=1e-4)
    elif preset != "default":
        raise ValueError(f"configs/grpo_sudoku.py: unknown preset {preset!r}; choose default or tiny")
    return config
