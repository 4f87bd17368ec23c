"""Checks of a task's input data, shared by the tasks that read files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def refuse_non_finite(frame: pd.DataFrame, path: Path | str) -> None:
    """NaN or inf in the input is a data error at set-up, named here, not a divergence (in the
    training split) or a NaN metric stored as ``ok`` (in the test split) later."""
    numeric = frame.select_dtypes("number")
    bad = ~np.isfinite(numeric.to_numpy(dtype=float))
    if bad.any():
        rows, cols = np.nonzero(bad)
        column, value = numeric.columns[cols[0]], numeric.iat[rows[0], cols[0]]
        raise ValueError(f"data error: {path} has {int(bad.sum())} NaN/inf values "
                         f"(first: {value} in column {column!r}, data row {int(rows[0]) + 1})")
