"""What the single-label kinds (grading, classes) share: argmax decisions, softmax, the
cross-entropy family, a row per image with its class."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from trainables.tasks.base import Task, prob_columns

if TYPE_CHECKING:
    import pandas as pd
    import torch


class SingleLabel(Task):
    """One class per image, decided by argmax."""

    output = "softmax over classes"
    losses = ("ce",)
    unit: ClassVar[str] = "class"  # what a label is called in the labels' table
    named: ClassVar[bool] = False  # labels are names (class folders), not numbers (grades)

    def value(self, labels: np.ndarray, probs: np.ndarray) -> float:
        from trainables.tasks.metrics import single_label_value

        return single_label_value(self.key, labels, probs)

    def resampled(self, labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        from trainables.tasks.metrics import single_label_resampled

        values = single_label_resampled(self.key, labels, probs, weights)
        return self.per_draw(labels, probs, weights) if values is None else values

    def decide(self, probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        return probs.argmax(axis=1)

    def targets(self, rows: pd.DataFrame, width: int) -> np.ndarray:
        return rows["label"].to_numpy(np.int64)

    def label_table(self, index: Any, splits: Iterable[str]) -> tuple[str, pd.DataFrame]:
        import pandas as pd

        f = index.frame
        names = dict(enumerate(index.class_names)) if self.named else {}
        table = pd.crosstab(f["split"], f["label"].map(
            lambda v: "unlabelled" if v < 0 else names.get(v, str(v))), margins=True,
            margins_name="total")
        return f"images per split and {self.unit}:", table

    def submission(self, ids: list[str], probs: np.ndarray, names: list[str], *,
                   with_probs: bool = False) -> pd.DataFrame:
        import pandas as pd

        frame = pd.DataFrame({"ID": ids, "TARGET": self.decide(probs).astype(int)})
        if self.named:
            frame["class"] = [names[c] for c in frame["TARGET"]]
        if with_probs:
            for c, name in enumerate(prob_columns(probs.shape[1])):
                frame[name] = probs[:, c]
        return frame

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=1)

    def eval_loss(self, labels: np.ndarray, probs: np.ndarray) -> float:
        """The negative log-likelihood of the true class."""
        import torch
        import torch.nn.functional as F

        return F.nll_loss(torch.from_numpy(np.log(np.clip(probs, 1e-12, 1.0))),
                          torch.from_numpy(labels.astype(np.int64))).item()

    def plain_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(logits, targets)
