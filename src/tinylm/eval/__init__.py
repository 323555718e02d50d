"""Evaluation: metrics, programmatic rewards, task scoring and reports."""
