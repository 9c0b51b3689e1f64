"""The tasks' metrics, through scikit-learn and on many bootstrap draws at once; keys are
namespaced by the caller. The task classes (trainables/tasks/) choose among them."""

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


def single_label_value(key: str, labels: np.ndarray, probs: np.ndarray) -> float:
    """One metric of argmax predictions alone (every metric of a grading task costs ten
    times QWK alone)."""
    preds = probs.argmax(axis=1)
    if key == "kappa":
        return quadratic_kappa(labels, preds)
    if key == "accuracy":
        return float(accuracy_score(labels, preds))
    if key == "balanced_accuracy":
        return float(balanced_accuracy_score(labels, preds))
    return _single_label(labels, preds, probs.shape[1])[key]


def macro_auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro AUROC over the scorable labels alone."""
    return float(roc_auc_score(*_scorable(labels, probs), average="macro"))


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


def _scorable(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The columns of the scorable labels; none is an error (AUROC is defined for none)."""
    keep = scorable_labels(labels)
    if not len(keep):
        raise ValueError("no label has both a positive and a negative image in this split")
    return labels[:, keep], probs[:, keep]


def multilabel_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Macro AUROC and mAP over the scorable labels, macro F1 at 0.5 over every label."""
    y, p = _scorable(labels, probs)
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


# ---- a metric on many bootstrap resamples at once (search.engine.gain: a thousand draws, each
# model). A draw is given as weights: how often it took each row. Scored with repeated rows,
# scikit-learn gives the same values (tests/test_gain.py checks that, row by row); these do
# it for every draw in a few array operations instead of a scikit-learn call per draw.

def single_label_resampled(key: str, labels: np.ndarray, probs: np.ndarray,
                           weights: np.ndarray) -> np.ndarray | None:
    """`single_label_value(key, ...)` on each draw (`weights`: draws x rows of counts), from
    each draw's confusion matrix; None for a metric this cannot compute so."""
    confusion = _weighted_confusions(labels, probs.argmax(axis=1), probs.shape[1], weights)
    if key == "kappa":
        return _kappa(confusion)
    if key == "accuracy":
        return np.trace(confusion, axis1=1, axis2=2) / confusion.sum(axis=(1, 2))
    truth, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    if key == "balanced_accuracy":  # recall of each class present in the draw's truth
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(np.where(truth > 0, hits / truth, np.nan), axis=1)
    if key == "f1_macro":  # over every class; 0 where a class is neither true nor predicted
        scored = 2 * hits + (predicted - hits) + (truth - hits)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(scored > 0, 2 * hits / scored, 0.0).mean(axis=1)
    return None


def _weighted_confusions(labels: np.ndarray, preds: np.ndarray, classes: int,
                         weights: np.ndarray) -> np.ndarray:
    """(draws, true class, predicted class): each draw's confusion matrix."""
    cells = np.zeros((len(labels), classes * classes))
    cells[np.arange(len(labels)), labels * classes + preds] = 1.0
    return (weights @ cells).reshape(len(weights), classes, classes)


def _kappa(confusion: np.ndarray) -> np.ndarray:
    """Quadratic weighted kappa of each confusion matrix, as `quadratic_kappa` computes it:
    scikit-learn spaces the classes that occur in the draw (truth or prediction) one apart,
    and a draw where one class alone occurs scores 0."""
    truth, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    present = (truth + predicted) > 0
    rank = np.cumsum(present, axis=1) - 1  # a class's place among the classes present
    distance = (rank[:, :, None] - rank[:, None, :]) ** 2.0
    expected = truth[:, :, None] * predicted[:, None, :] / truth.sum(axis=1)[:, None, None]
    observed = (distance * confusion).sum(axis=(1, 2))
    chance = (distance * expected).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = 1.0 - observed / chance
    return np.where(present.sum(axis=1) < 2, 0.0, kappa)


def weighted_macro_auroc(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro AUROC over the labels with a positive and a negative in the draw: per label, the
    chance that a drawn positive outscores a drawn negative, ties counting half."""
    per_label = np.full((len(weights), labels.shape[1]), np.nan)
    for j in range(labels.shape[1]):
        order = np.argsort(probs[:, j], kind="mergesort")
        scores, positive = probs[order, j], labels[order, j].astype(bool)
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # groups of equal scores
        drawn = weights[:, order]
        pos = np.add.reduceat(np.where(positive, drawn, 0.0), starts, axis=1)
        neg = np.add.reduceat(np.where(positive, 0.0, drawn), starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg  # negatives scored lower than the group
        pairs = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_label[:, j] = np.where(pairs > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / pairs,
                                       np.nan)
    out = np.full(len(weights), np.nan)
    scorable = np.isfinite(per_label).any(axis=1)
    out[scorable] = np.nanmean(per_label[scorable], axis=1)
    return out
