"""Evaluation: bits per byte, any task's held-out score (`eval run`), reward models judged and used, and
preference pairs judged from a model's own answers."""
