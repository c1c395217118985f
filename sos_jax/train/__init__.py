"""Supervised pretraining: the optimizer, the compiled train and eval steps, checkpoints, metrics."""
