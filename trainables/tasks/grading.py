"""grading: ordinal classes (DR grades); cross-entropy with label smoothing; QWK."""

from __future__ import annotations

import numpy as np

from trainables.tasks.base import register_task
from trainables.tasks.single import SingleLabel


@register_task
class Grading(SingleLabel):
    kind = "grading"
    columns = (("kappa", "QWK"), ("accuracy", "accuracy"), ("f1_macro", "macro F1"))
    usual = "val/kappa"
    unit = "grade"

    def scores(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        from trainables.tasks.metrics import grading_metrics

        return grading_metrics(labels, probs)
