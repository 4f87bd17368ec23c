"""Coincidence-level precision, recall and F1.

A predicted coincidence (sample, crystal_a, crystal_b, step) is a true positive when a true pair of
the same sample has the same two crystals (in either order) and its time (the step of its later
hit) is within ``tol`` steps; each true pair is matched at most once. Recall = TP / (TP + FN).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def truth_table(pairs: np.ndarray) -> np.ndarray:
    """(sample, a, b, step) rows from the (sample, a, step_a, b, step_b) rows of a data set."""
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
    a, b = np.minimum(p[:, 1], p[:, 3]), np.maximum(p[:, 1], p[:, 3])
    return np.stack([p[:, 0], a, b, np.maximum(p[:, 2], p[:, 4])], axis=1)


def match(pred: np.ndarray, truth: np.ndarray, tol: int = 1) -> tuple[int, int, int]:
    """(TP, FP, FN) of predictions against truth, both (sample, a, b, step) rows."""
    pred = np.asarray(pred, dtype=np.int64).reshape(-1, 4)
    truth = np.asarray(truth, dtype=np.int64).reshape(-1, 4)
    pa, pb = np.minimum(pred[:, 1], pred[:, 2]), np.maximum(pred[:, 1], pred[:, 2])
    open_times: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for s, a, b, t in truth.tolist():
        open_times[(s, a, b)].append(t)
    tp = 0
    order = np.argsort(pred[:, 3], kind="stable")
    for i in order.tolist():
        times = open_times.get((int(pred[i, 0]), int(pa[i]), int(pb[i])))
        if not times:
            continue
        t = int(pred[i, 3])
        best = min(range(len(times)), key=lambda k: abs(times[k] - t))
        if abs(times[best] - t) <= tol:
            times.pop(best)
            tp += 1
    return tp, len(pred) - tp, len(truth) - tp


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
