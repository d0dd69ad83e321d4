"""Reusable pieces of the training recipes: configs, checkpoints, run artifacts."""
