"""GLUE metrics as the official evaluation defines them, on a 0-100 scale like the paper.

Matthews correlation (CoLA), accuracy, binary F1 of the positive class (MRPC, QQP),
Pearson and Spearman correlation (STS-B). Written on numpy/scipy so the definitions are
visible; a degenerate case (constant predictions) scores 0 rather than NaN, as sklearn does.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def accuracy(preds, labels) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    return 100.0 * float((preds == labels).mean())


def f1_binary(preds, labels, positive: int = 1) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    tp = int(((preds == positive) & (labels == positive)).sum())
    fp = int(((preds == positive) & (labels != positive)).sum())
    fn = int(((preds != positive) & (labels == positive)).sum())
    if tp == 0:
        return 0.0
    return 100.0 * 2 * tp / (2 * tp + fp + fn)


def matthews_corr(preds, labels) -> float:
    """Binary MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)); 0 when undefined."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    tp = float(((preds == 1) & (labels == 1)).sum())
    tn = float(((preds == 0) & (labels == 0)).sum())
    fp = float(((preds == 1) & (labels == 0)).sum())
    fn = float(((preds == 0) & (labels == 1)).sum())
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else 100.0 * (tp * tn - fp * fn) / denom


def _corr(fn, preds, labels) -> float:
    preds, labels = np.asarray(preds, dtype=float), np.asarray(labels, dtype=float)
    if len(preds) < 2 or np.std(preds) == 0 or np.std(labels) == 0:
        return 0.0  # correlation of a constant is undefined; an untrained model often predicts one
    return 100.0 * float(fn(preds, labels)[0])


def pearson(preds, labels) -> float:
    return _corr(stats.pearsonr, preds, labels)


def spearman(preds, labels) -> float:
    return _corr(stats.spearmanr, preds, labels)


METRICS = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews_corr, "pearson": pearson, "spearman": spearman}


def glue_scores(metric_names, preds, labels) -> dict[str, float]:
    """{metric: score} for a task's metric list; preds are class ids (or floats for STS-B)."""
    return {m: METRICS[m](preds, labels) for m in metric_names}
