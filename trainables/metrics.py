"""Classification metrics through scikit-learn; keys are namespaced by the caller."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score


def grading_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Quadratic weighted kappa, accuracy and macro F1 of argmax predictions."""
    preds = probs.argmax(axis=1)
    num_classes = probs.shape[1]
    if len(np.unique(np.concatenate([labels, preds]))) < 2:
        kappa = 0.0  # undefined when truth and prediction are one class: no agreement beyond chance
    else:
        kappa = float(cohen_kappa_score(labels, preds, weights="quadratic"))
    return {
        "kappa": kappa,
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1_score(labels, preds, average="macro",
                                   labels=list(range(num_classes)), zero_division=0)),
    }
