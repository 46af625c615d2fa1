"""Training: a seeded fit loop with early stopping, and its validated settings."""

from slimkit.train.config import TrainConfig
from slimkit.train.loop import TrainResult, cross_entropy, fit, seed_everything, shift

__all__ = ["TrainConfig", "TrainResult", "cross_entropy", "fit", "seed_everything", "shift"]
