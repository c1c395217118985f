"""The quickstart: Countdown data, an SoS model and an optimal-path model, and their evaluation, on the CPU.

Usage (``make quickstart`` runs this)::

    python -m sos_jax.main --config=configs/quickstart.py --workdir=workdir/quickstart

A small setting chosen so that learning shows within minutes on a 2-core CPU: 3 numbers in 1..12,
targets 10..50 (the held-out 10% of targets form the unseen split); 6,000 training problems, 100
test problems on seen and 100 on unseen targets (none of them in train). Both models are the same
4-layer, 128-wide GPT (873,856 parameters) trained on 8 rows of 256 tokens: 2,400 steps on the SoS
streams, 600 on the optimal paths (about the same epochs); then greedy decoding and 4 samples per
test problem, up to 232 new tokens (the trained context). About 13 minutes on a 2-core CPU. Every stage is a field group that
takes the usual overrides, e.g. ``--config.pretrain.train.steps=2000``.
"""

import importlib.util
import os

from ml_collections import config_dict


def _sibling(name: str, preset: str) -> config_dict.ConfigDict:
    """``get_config(preset)`` of another file in this folder."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"sos_jax_configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def get_config(preset: str = "default") -> config_dict.ConfigDict:
    config = config_dict.ConfigDict()
    config.job = "quickstart"

    config.dataset = _sibling("countdown_data", "default")
    env = {"num_count": 3, "num_min": 1, "num_max": 12, "target_min": 10, "target_max": 50}
    config.dataset.env.update(env)
    config.dataset.splits.update({"train": 6_000, "val_seen": 0, "val_unseen": 0, "test_seen": 100, "test_unseen": 100})
    config.dataset.max_len = 1_024
    config.dataset.context_len = 256

    config.pretrain = _sibling("countdown_sos", "tiny")
    config.pretrain.model.update({"num_layers": 4, "d_model": 128, "d_ff": 512, "num_heads": 2, "max_len": 512})
    config.pretrain.data.source = "dataset"
    config.pretrain.data.update({"seq_len": 256, "global_batch_size": 8})  # small batches learn faster here
    config.pretrain.data.env.update(env)
    config.pretrain.train.update({"steps": 2400, "learning_rate": 2e-3, "warmup_steps": 20, "eval_every": 0,
                                  "log_every": 50, "checkpoint_every": 200})

    config.ot_train_steps = 600  # about as many epochs over the train problems as the SoS model (paths are ~1/4 as long)

    config.eval = _sibling("countdown_eval", "default")
    config.eval.data.num_problems = 100
    config.eval.sampling.batch_size = 50
    config.eval.sampling.num_samples = 4
    config.eval.sampling.max_new_tokens = 256 - 24  # the trained context (longer prompts have up to 24 tokens)
    config.eval.budgets = (64, 128, 232)
    config.eval.ks = (1, 2, 4)

    preset = preset or "default"
    if preset == "tiny":  # tests: the same pipeline in seconds
        config.dataset.splits.update({"train": 64, "test_seen": 8, "test_unseen": 8})
        config.dataset.batch_size = 32
        config.pretrain.data.update({"seq_len": 128, "global_batch_size": 8})
        config.pretrain.model.update({"num_layers": 1, "d_model": 32, "d_ff": 64, "max_len": 256})
        config.pretrain.train.update({"steps": 2, "log_every": 1, "checkpoint_every": 2})
        config.ot_train_steps = 1
        config.eval.data.num_problems = 8
        config.eval.sampling.update({"batch_size": 8, "num_samples": 2, "max_new_tokens": 32})
        config.eval.ks = (1, 2)
    elif preset != "default":
        raise ValueError(f"configs/quickstart.py: unknown preset {preset!r}; choose default or tiny")
    return config
