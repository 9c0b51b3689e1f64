"""Task metrics through scikit-learn; keys are namespaced by the caller."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
)


def grading_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Quadratic weighted kappa, accuracy and macro F1 of argmax predictions."""
    preds = probs.argmax(axis=1)
    return {"kappa": quadratic_kappa(labels, preds), **_single_label(labels, preds, probs.shape[1])}


def quadratic_kappa(labels: np.ndarray, preds: np.ndarray) -> float:
    if len(np.unique(np.concatenate([labels, preds]))) < 2:
        return 0.0  # undefined when truth and prediction are one class: no agreement beyond chance
    return float(cohen_kappa_score(labels, preds, weights="quadratic"))


def metric_value(kind: str, key: str, labels: np.ndarray, probs: np.ndarray) -> float:
    """One of the task's metrics (`kind`'s metrics dict, key `key`) alone: what a bootstrap
    computes a thousand times (every metric of a grading task costs ten times QWK alone)."""
    if kind == "multilabel":
        if key != "auroc_macro":
            return multilabel_metrics(labels, probs)[key]
        keep = scorable_labels(labels)
        if not len(keep):
            raise ValueError("no label has both a positive and a negative image in this split")
        return float(roc_auc_score(labels[:, keep], probs[:, keep], average="macro"))
    preds = probs.argmax(axis=1)
    if key == "kappa":
        return quadratic_kappa(labels, preds)
    if key == "accuracy":
        return float(accuracy_score(labels, preds))
    if key == "balanced_accuracy":
        return float(balanced_accuracy_score(labels, preds))
    return _single_label(labels, preds, probs.shape[1])[key]


def class_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1 and balanced accuracy (mean per-class recall) of argmax predictions."""
    preds = probs.argmax(axis=1)
    return {**_single_label(labels, preds, probs.shape[1]),
            "balanced_accuracy": float(balanced_accuracy_score(labels, preds))}


def _single_label(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(labels, preds)),
            "f1_macro": float(f1_score(labels, preds, average="macro",
                                       labels=list(range(num_classes)), zero_division=0))}


def scorable_labels(labels: np.ndarray) -> np.ndarray:
    """Indices of the labels with at least one positive and one negative (AUROC is defined)."""
    positives = labels.sum(axis=0)
    return np.flatnonzero((positives > 0) & (positives < len(labels)))


def multilabel_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Macro AUROC and mAP over the scorable labels, macro F1 at 0.5 over every label."""
    keep = scorable_labels(labels)
    if not len(keep):
        raise ValueError("no label has both a positive and a negative image in this split")
    y, p = labels[:, keep], probs[:, keep]
    return {"auroc_macro": float(roc_auc_score(y, p, average="macro")),
            "map": float(average_precision_score(y, p, average="macro")),
            "f1_macro": float(f1_score(labels, (probs >= 0.5).astype(int), average="macro",
                                       zero_division=0))}


def f1_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per label, the probability threshold with the best F1 on (`labels`, `probs`); 0.5 for a
    label without a positive. Chosen on validation, so F1 there is optimistic."""
    out = np.full(labels.shape[1], 0.5)
    for j in range(labels.shape[1]):
        if labels[:, j].sum() == 0:
            continue
        precision, recall, cuts = precision_recall_curve(labels[:, j], probs[:, j])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        out[j] = float(cuts[int(np.argmax(f1[:-1]))]) if len(cuts) else 0.5
    return out


def per_label_table(labels: np.ndarray, probs: np.ndarray, names: list[str],
                    thresholds: np.ndarray) -> list[dict[str, object]]:
    """A row per label: positives, AUROC and AP (None when undefined), threshold, F1 there."""
    rows: list[dict[str, object]] = []
    defined = set(scorable_labels(labels).tolist())
    for j, name in enumerate(names):
        y, p = labels[:, j], probs[:, j]
        rows.append({
            "label": name, "positives": int(y.sum()), "images": len(y),
            "auroc": float(roc_auc_score(y, p)) if j in defined else None,
            "ap": float(average_precision_score(y, p)) if j in defined else None,
            "threshold": float(thresholds[j]),
            "f1": float(f1_score(y, (p >= thresholds[j]).astype(int), zero_division=0)),
        })
    return rows
