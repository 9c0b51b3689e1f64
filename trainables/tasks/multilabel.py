"""multilabel: n independent labels; BCE-with-logits with pos_weight, or a focal loss; macro
AUROC over the labels with a positive and a negative in validation, mAP, macro F1. Decided
label by label at thresholds (the final step's: each label's F1-best cut on validation)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from trainables.tasks.base import Task, register_task

if TYPE_CHECKING:
    import pandas as pd
    import torch


@register_task
class Multilabel(Task):
    kind = "multilabel"
    columns = (("auroc_macro", "macro AUROC"), ("map", "mAP"), ("f1_macro", "macro F1"))
    usual = "val/auroc_macro"
    output = "a sigmoid per label"
    losses = ("bce", "focal")
    per_label = True
    votes = False  # a bag averages probabilities

    def scores(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        from trainables.tasks.metrics import multilabel_metrics

        return multilabel_metrics(labels, probs)

    def value(self, labels: np.ndarray, probs: np.ndarray) -> float:
        from trainables.tasks.metrics import macro_auroc

        return macro_auroc(labels, probs) if self.key == "auroc_macro" else \
            self.scores(labels, probs)[self.key]

    def resampled(self, labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        from trainables.tasks.metrics import weighted_macro_auroc

        if self.key == "auroc_macro":
            return weighted_macro_auroc(labels, probs, weights)
        return self.per_draw(labels, probs, weights)

    def decide(self, probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        cut = 0.5 if thresholds is None else thresholds
        return (probs >= cut).astype(np.int64)

    def cuts(self, labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
        """Per label, the F1-best cut on validation decides "positive"."""
        from trainables.tasks.metrics import f1_thresholds, per_label_table

        cuts = f1_thresholds(labels, probs)
        return {"thresholds": dict(zip(names, cuts.tolist(), strict=True)),
                "per_label": per_label_table(labels, probs, names, cuts)}

    def targets(self, rows: pd.DataFrame, width: int) -> np.ndarray:
        return np.array(rows["labels"].tolist(), dtype=np.float32).reshape(len(rows), width)

    def label_table(self, index: Any, splits: Iterable[str]) -> tuple[str, pd.DataFrame]:
        import pandas as pd

        f = index.frame
        table = pd.DataFrame({s: index.targets(s).sum(axis=0).astype(int)
                              for s in splits if index.labelled(s)},
                             index=index.class_names).T
        table.insert(0, "images", [int((f["split"] == s).sum()) for s in table.index])
        return "images and positives per label, per split:", table

    def submission(self, ids: list[str], probs: np.ndarray, names: list[str], *,
                   with_probs: bool = False) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"ID": ids, **{name: probs[:, j] for j, name in enumerate(names)}})

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    def eval_loss(self, labels: np.ndarray, probs: np.ndarray) -> float:
        """The mean binary cross-entropy over labels and images."""
        import torch
        import torch.nn.functional as F

        p = torch.from_numpy(np.clip(probs, 1e-7, 1 - 1e-7).astype(np.float64))
        return F.binary_cross_entropy(p, torch.from_numpy(labels.astype(np.float64))).item()

    def plain_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits, targets)
