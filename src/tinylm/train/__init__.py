"""Training: one loop shared by every stage (`loop.train`), and one short file per stage on top of it."""

from .config import TrainConfig
from .loop import Objective, TrainResult, seed_everything, train

__all__ = ["Objective", "TrainConfig", "TrainResult", "seed_everything", "train"]
