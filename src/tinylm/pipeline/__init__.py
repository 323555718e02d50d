"""The main job: a recipe's stages run in order in one run directory (run.py), wired by the artifacts each
stage declares in `tinylm.core.stages` (wiring.py), ending with report.md (report.py)."""

from .run import run_pipeline

__all__ = ["run_pipeline"]
