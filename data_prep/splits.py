"""Deterministic train/validation assignment.

The validation rows are a seeded random sample of input positions, drawn once before any
row is converted, so the split depends only on (seed, number of input rows, val size) —
not on worker count, timing, or which rows later turn out to be invalid.
"""

from __future__ import annotations

import numpy as np

TRAIN = "train"
VAL = "val"
SPLITS = (TRAIN, VAL)


def validation_count(num_rows: int, val_size: float) -> int:
    """Rows to hold out: a fraction of `num_rows` when 0 < val_size < 1, else a row count.

    Raises ValueError when that leaves no training row or val_size is negative/fractional > 1.
    """
    if val_size < 0:
        raise ValueError(f"--val-size must be >= 0, got {val_size}")
    if 0 < val_size < 1:
        count = int(round(val_size * num_rows))
    elif float(val_size).is_integer():
        count = int(val_size)
    else:
        raise ValueError(f"--val-size is a fraction in (0, 1) or a whole row count, got {val_size}")
    if count >= num_rows > 0:
        raise ValueError(f"--val-size {val_size} holds out {count} of {num_rows} rows, leaving none for training")
    return count


class SplitAssigner:
    """Maps an input position (0-based, < num_rows) to "train" or "val"."""

    def __init__(self, num_rows: int, val_size: float, seed: int):
        count = validation_count(num_rows, val_size)
        rng = np.random.default_rng(seed)
        self.num_rows = num_rows
        self.val_positions = (
            frozenset(rng.choice(num_rows, size=count, replace=False).tolist()) if count else frozenset()
        )

    def __call__(self, position: int) -> str:
        if not 0 <= position < self.num_rows:
            raise IndexError(f"input position {position} outside 0..{self.num_rows - 1}")
        return VAL if position in self.val_positions else TRAIN
