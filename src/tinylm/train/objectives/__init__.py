"""Losses the stages train with, each a plain function of (model, batch)."""
