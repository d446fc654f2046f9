"""Task metrics from scikit-learn and scipy, as the paper reports them (docs/paper.md §B.1). Values are fractions."""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from beft.errors import choices_error


def _correlation(fn):
    def metric(preds, labels):
        # A constant prediction has no correlation; report 0 rather than NaN so tables stay numeric.
        if np.std(preds) == 0 or np.std(labels) == 0:
            return 0.0
        return float(fn(preds, labels)[0])
    return metric


METRICS = {
    "accuracy": lambda p, y: float(accuracy_score(y, p)),
    "f1": lambda p, y: float(f1_score(y, p, average="binary")),
    "macro_f1": lambda p, y: float(f1_score(y, p, average="macro")),
    "mcc": lambda p, y: float(matthews_corrcoef(y, p)),
    "pearson": _correlation(pearsonr),
    "spearman": _correlation(spearmanr),
}


def check_metrics(names) -> None:
    for name in names:
        if name not in METRICS:
            raise choices_error("metric", name, METRICS)


def compute(names, predictions, labels) -> dict[str, float]:
    """Each named metric of predictions against labels (class ids, or floats for regression metrics)."""
    check_metrics(names)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return {name: METRICS[name](predictions, labels) for name in names}


def predictions_from_logits(logits: np.ndarray, regression: bool) -> np.ndarray:
    return logits.reshape(-1) if regression else logits.argmax(axis=-1)
