"""Scaling laws: a sweep of pretraining runs over sizes × budgets, the Chinchilla fits, and predictions."""
