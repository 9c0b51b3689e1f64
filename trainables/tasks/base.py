"""What a task is, kind by kind, and "best" by a metric's mode: the seam every part outside
the trainer asks.

A task kind is one class, registered under its name (`register_task`, as timm registers its
models): `grading`, `classes` and `multilabel` (trainables/tasks/: one file each). It owns
what differs between kinds: its metrics and their short names, the metric a search optimises
unless an experiment says, the losses that fit it, the output activation and the plain loss
of probabilities, decisions, the bootstrap's fast metric, the submission's columns, the
labels' table and whether it is decided label by label. Nothing outside this package asks
which kind a task is: it asks the task (`task_of(cfg.task, cfg.metric)`). A fourth kind is
one file registered in `trainables/tasks/__init__.py`.

This package stays light (numpy; pandas, scikit-learn and torch on first use) so the CLI can
know a task without importing torch. A trial's config names its task kind (`task`) and
metric, so a checkpoint, a member's metadata and `search.reproduce` know it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch

TRAINABLE = "trainables.train.tune_entry:train"  # light: the driver imports no torch
FIT = "trainables.train.trainable:fit"

REGISTRY: dict[str, type[Task]] = {}  # kind -> its class, in the order registered
TaskClass = TypeVar("TaskClass", bound="type[Task]")


def register_task(cls: TaskClass) -> TaskClass:
    """Register a task class under its `kind` (a class decorator)."""
    REGISTRY[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class Task:
    """A task kind (a registered subclass) and the validation metric its searches optimise
    (`val/<name>`; default: the kind's usual one)."""

    metric: str = ""
    mode: str = "max"
    trainable: str = TRAINABLE  # "module:function" of the Ray Tune function trainable
    fit: str = FIT  # "module:function" fit(cfg, reporter, until_epoch=...) the trainable calls

    kind: ClassVar[str]
    columns: ClassVar[tuple[tuple[str, str], ...]]  # (metric key, short name), every epoch
    usual: ClassVar[str]  # the metric searched unless an experiment names another
    output: ClassVar[str]  # what the model's outputs are, in words (a member's metadata)
    losses: ClassVar[tuple[str, ...]]  # the loss options that fit (loss=auto: the first)
    per_label: ClassVar[bool] = False  # scored and decided label by label, at thresholds
    votes: ClassVar[bool] = True  # a majority vote of its decisions is a bag

    def __post_init__(self) -> None:
        if not self.metric:
            object.__setattr__(self, "metric", self.usual)
        keys = [f"val/{k}" for k, _ in self.columns]
        assert self.metric in keys, f"{self.kind} task cannot optimise {self.metric}: {keys}"

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

    # ---- what each kind answers
    def scores(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """The epoch metrics of `probs` against `labels` (unprefixed keys)."""
        raise NotImplementedError

    def value(self, labels: np.ndarray, probs: np.ndarray) -> float:
        """The metric the search optimises, alone (as in `scores`, faster): what a bootstrap
        computes a thousand times."""
        return self.scores(labels, probs)[self.key]

    def resampled(self, labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """`value` on each bootstrap draw at once (`weights`: draws x rows, how often each row
        was drawn); NaN where undefined on a draw. This way: a draw at a time."""
        return self.per_draw(labels, probs, weights)

    def per_draw(self, labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The plain way to `resampled`: each draw's rows repeated, scored by `value`."""
        out = np.full(len(weights), np.nan)
        for d, counts in enumerate(weights):
            rows = np.repeat(np.arange(len(labels)), counts.astype(np.int64))
            with contextlib.suppress(ValueError):  # undefined on this draw: NaN
                out[d] = self.value(labels[rows], probs[rows])
        return out

    def decide(self, probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """Predictions: the class (argmax), or 0/1 per label at `thresholds`."""
        raise NotImplementedError

    def cuts(self, labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
        """What the final step chooses on validation besides the bag (per-label thresholds)."""
        return {}

    def targets(self, rows: pd.DataFrame, width: int) -> np.ndarray:
        """A split's labels from its index rows: int64 (N,), or float32 (N, width) 0/1."""
        raise NotImplementedError

    def label_table(self, index: Any, splits: Iterable[str]) -> tuple[str, pd.DataFrame]:
        """`search.data`'s table of an index's labels, with its heading."""
        raise NotImplementedError

    def submission(self, ids: list[str], probs: np.ndarray, names: list[str], *,
                   with_probs: bool = False) -> pd.DataFrame:
        """The submission of `probs` (N, C) in the task's format."""
        raise NotImplementedError

    # ---- the torch side (imported on first use)
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The task's probabilities of its logits."""
        raise NotImplementedError

    def eval_loss(self, labels: np.ndarray, probs: np.ndarray) -> float:
        """The plain (unweighted, unsmoothed) loss of probabilities."""
        raise NotImplementedError

    def plain_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The usual loss of logits (what a hand-written loop trains with)."""
        raise NotImplementedError


def prob_columns(num_classes: int) -> list[str]:
    """The probability columns of a prediction CSV: p0 .. pK."""
    return [f"p{c}" for c in range(num_classes)]


def task_class(kind: str) -> type[Task]:
    """The registered class of a task kind."""
    return REGISTRY[kind]


def task_of(kind: str, metric: str = "") -> Task:
    """The task of a kind with `metric` (a trial config's), or with the kind's usual metric
    (a record that names only the kind)."""
    return REGISTRY[kind](metric)


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


def describe_metrics(metrics: dict[str, Any]) -> str:
    """`QWK 0.4120  accuracy 0.5000 ...` for the val/ metrics present in `metrics`."""
    names = {k: n for cls in REGISTRY.values() for k, n in cls.columns}
    return "  ".join(f"{names[k[4:]]} {v:.4f}" for k, v in metrics.items()
                     if k.startswith("val/") and k[4:] in names)
