"""deepdrid_attention: resnet18 with multi-head self-attention over its last feature map.

Searches attention on/off, heads, layer norm on/off, residual on/off (the last three only
when attention is on), lr, augmentation and unfreeze depth; the metric is quadratic weighted
kappa on validation (max).

    python -m search.run deepdrid_attention --demo
    python -m search.run deepdrid_attention --data /data/DeepDRiD --gpus-per-trial 1
    python -m search.train deepdrid_attention --demo --set heads=8
"""

from __future__ import annotations

from typing import Any

from spaces.base import Experiment
from spaces.deepdrid_finetune import (
    BUDGET,
    DATA_FORMAT,
    DEFAULTS,
    DEMO,
    DEMO_BUDGET,
    search_training,
)
from trainables.tasks import GRADING


def space(trial: Any) -> None:
    """Define-by-run space: heads, layer norm and residual exist only when attention is on."""
    search_training(trial)
    if trial.suggest_categorical("attention", [True, False]):
        trial.suggest_categorical("heads", [1, 2, 4, 8])
        trial.suggest_categorical("layer_norm", [True, False])
        trial.suggest_categorical("residual", [True, False])


EXPERIMENT = Experiment(
    name="deepdrid_attention",
    summary="resnet18 + self-attention head on DeepDRiD, 5 DR grades",
    dataset="deepdrid",
    data_format=DATA_FORMAT,
    task=GRADING,
    defaults={**DEFAULTS, "attention": True, "heads": 4},  # search.train trains with attention
    demo=DEMO,
    searched=("attention", "heads", "layer_norm", "residual", "lr", "augment",
              "unfreeze_depth"),
    space=space,
    budget=BUDGET,
    demo_budget=DEMO_BUDGET,
)
