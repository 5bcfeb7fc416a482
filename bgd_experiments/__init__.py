"""Backtracking gradient descent: line-search methods, MBT optimizers, paper experiments."""

__version__ = "0.1.0"
