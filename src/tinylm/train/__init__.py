"""Training: one loop (`loop.train`), one lifecycle every stage runs through (`stage.run_stage`), and one
short file per stage (`stages/`) holding its data and objective."""

from .config import TrainConfig
from .loop import Objective, TrainResult, seed_everything, train

__all__ = ["Objective", "TrainConfig", "TrainResult", "seed_everything", "train"]
