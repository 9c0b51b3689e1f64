"""classes: single-label, n named classes; cross-entropy with label smoothing and optional
class weights; accuracy, macro F1 and balanced accuracy (the experiment picks which one the
search optimises)."""

from __future__ import annotations

import numpy as np

from trainables.tasks.base import register_task
from trainables.tasks.single import SingleLabel


@register_task
class Classes(SingleLabel):
    kind = "classes"
    columns = (("accuracy", "accuracy"), ("f1_macro", "macro F1"),
               ("balanced_accuracy", "balanced acc"))
    usual = "val/f1_macro"
    named = True

    def scores(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        from trainables.tasks.metrics import class_metrics

        return class_metrics(labels, probs)
