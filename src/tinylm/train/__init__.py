"""Training: one loop shared by every stage (`loop.train`), and one short file per stage on top of it."""

from .config import TrainConfig
from .loop import Task, TrainResult, seed_everything, train

__all__ = ["Task", "TrainConfig", "TrainResult", "seed_everything", "train"]
