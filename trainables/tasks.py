"""What a label is and how it is scored: the seam every part outside the trainer asks.

Three kinds of task share one trainable (`trainables.trainable`):
- grading: ordinal classes (DR grades); cross-entropy with label smoothing; QWK.
- classes: single-label, n classes; cross-entropy with label smoothing and optional class
  weights; accuracy and macro F1 (the experiment picks which one the search optimises).
- multilabel: n independent labels; BCE-with-logits with pos_weight, or a focal loss; macro
  AUROC over the labels with a positive and a negative in validation, mAP, macro F1.

This module stays light (numpy; scikit-learn on first use) so the CLI can know a task without
importing torch. A trial's config names its task kind (`task`), so a checkpoint, a member's
metadata and `search.reproduce` know it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

KINDS = ("grading", "classes", "multilabel")
TRAINABLE = "trainables.tune_entry:train"  # light: the driver imports no torch
FIT = "trainables.trainable:fit"

# the metrics every epoch reports (under val/), per kind, with their short names
EPOCH_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "grading": (("kappa", "QWK"), ("accuracy", "accuracy"), ("f1_macro", "macro F1")),
    "classes": (("accuracy", "accuracy"), ("f1_macro", "macro F1"),
                ("balanced_accuracy", "balanced acc")),
    "multilabel": (("auroc_macro", "macro AUROC"), ("map", "mAP"), ("f1_macro", "macro F1")),
}


@dataclass(frozen=True)
class Task:
    """A task kind and the validation metric its searches optimise (`val/<name>`)."""

    kind: str
    metric: str
    mode: str = "max"
    trainable: str = TRAINABLE  # "module:function" of the Ray Tune function trainable
    fit: str = FIT  # "module:function" fit(cfg, reporter, until_epoch=...) the trainable calls

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"task kind {self.kind!r} not in {KINDS}"
        keys = [f"val/{k}" for k, _ in EPOCH_METRICS[self.kind]]
        assert self.metric in keys, f"{self.kind} task cannot optimise {self.metric}: {keys}"

    @property
    def multilabel(self) -> bool:
        return self.kind == "multilabel"

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """(metric key, short name) of what the final step and the report tabulate."""
        return EPOCH_METRICS[self.kind]

    def scores(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """The epoch metrics of `probs` against `labels` (unprefixed keys)."""
        return epoch_scores(self.kind, labels, probs)

    def value(self, labels: np.ndarray, probs: np.ndarray) -> float:
        """The metric the search optimises, alone (as in `scores`, faster)."""
        from trainables.metrics import metric_value

        return metric_value(self.kind, self.key, labels, probs)

    def resampled(self, labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """`value` on each bootstrap draw at once (`weights`: draws x rows, how often each row
        was drawn); NaN where undefined on a draw."""
        from trainables.metrics import resampled_values

        return resampled_values(self.kind, self.key, labels, probs, weights)

    @property
    def output(self) -> str:
        """What the model's outputs are, in words (a member's metadata)."""
        return "a sigmoid per label" if self.multilabel else "softmax over classes"

    @property
    def sign(self) -> float:
        """+1 where higher is better, -1 where lower is."""
        return sign(self.mode)

    @property
    def key(self) -> str:
        """The metric's key in `scores` (`kappa` of `val/kappa`)."""
        return self.metric.split("/", 1)[1]

    @property
    def name(self) -> str:
        """The metric's short name (QWK)."""
        return dict(self.columns)[self.key]

    def decide(self, probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """Predictions: the class (argmax), or 0/1 per label at `thresholds` (default 0.5)."""
        if self.multilabel:
            cut = 0.5 if thresholds is None else thresholds
            return (probs >= cut).astype(np.int64)
        return probs.argmax(axis=1)


# "best" by a metric's mode ("max": higher is better, "min": lower), written once
T = TypeVar("T")


def sign(mode: str) -> float:
    """+1 where higher is better (mode "max"), -1 where lower is ("min")."""
    return 1.0 if mode == "max" else -1.0


def better(a: float, b: float, mode: str) -> bool:
    """Whether `a` is strictly better than `b`."""
    return a > b if mode == "max" else a < b


def best(values: Iterable[float], mode: str) -> float:
    return max(values) if mode == "max" else min(values)


def best_so_far(values: Iterable[float], mode: str) -> list[float]:
    """The best value up to each position (NaN never counts; NaN before the first number)."""
    out: list[float] = []
    so_far: float | None = None
    for v in values:
        if v == v:
            so_far = v if so_far is None or better(v, so_far, mode) else so_far
        out.append(float("nan") if so_far is None else so_far)
    return out


def best_of_rows(table: np.ndarray, mode: str) -> np.ndarray:
    """Each row's best value of a 2-d array."""
    return table.max(axis=1) if mode == "max" else table.min(axis=1)


def best_by(items: Iterable[T], mode: str, key: Callable[[T], float]) -> T:
    """The item whose `key` is best (the first of equals)."""
    return max(items, key=key) if mode == "max" else min(items, key=key)


def direction(mode: str) -> Literal["maximize", "minimize"]:
    """Optuna's name for a mode."""
    return "maximize" if mode == "max" else "minimize"


GRADING = Task("grading", "val/kappa")
MULTILABEL = Task("multilabel", "val/auroc_macro")


def classes_task(metric: str = "val/f1_macro") -> Task:
    return Task("classes", metric)


def task_of(kind: str, metric: str = "") -> Task:
    """The task of a kind with `metric` (a trial config's), or with the kind's usual metric
    (a record that names only the kind)."""
    usual = {"grading": GRADING, "classes": classes_task(), "multilabel": MULTILABEL}[kind]
    return Task(kind, metric) if metric and metric != usual.metric else usual


def epoch_scores(kind: str, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    from trainables import metrics

    if kind == "multilabel":
        return metrics.multilabel_metrics(labels, probs)
    if kind == "classes":
        return metrics.class_metrics(labels, probs)
    return metrics.grading_metrics(labels, probs)


def describe_metrics(metrics: dict[str, Any]) -> str:
    """`QWK 0.4120  accuracy 0.5000 ...` for the val/ metrics present in `metrics`."""
    names = {k: n for table in EPOCH_METRICS.values() for k, n in table}
    return "  ".join(f"{names[k[4:]]} {v:.4f}" for k, v in metrics.items()
                     if k.startswith("val/") and k[4:] in names)
