"""Backtracking gradient descent: line-search methods, MBT optimizers and the paper's experiments."""

__version__ = "0.1.0"
