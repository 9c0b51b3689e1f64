"""rfmid_multilabel: efficientnet_b0 on RFMiD, 29 labels (Disease_Risk and 28 diseases).

Searches lr, augmentation, unfreeze depth and the loss: BCE-with-logits with pos_weight
(negatives over positives per label, from train) or a focal loss with its gamma (only when
focal). The metric is macro AUROC on validation over the labels with a positive and a negative
there (the others are named in the report). The RFMiD seed: 224 px, batch 16, AMP on CUDA,
reference test AUROC 0.8374.

    python -m search.run rfmid_multilabel --demo                   # generated findings, CPU
    python -m search.run rfmid_multilabel --data /data/RFMiD --gpus-per-trial 1
    python -m search.train rfmid_multilabel --demo --set loss=focal --set focal_gamma=2
"""

from __future__ import annotations

from typing import Any

from spaces.base import Budget, Experiment
from trainables.tasks import MULTILABEL

DEFAULTS = {  # the RFMiD seed on a GPU
    "model": "efficientnet_b0", "weights": "imagenet", "image_size": 224, "batch_size": 16,
    "epochs": 15, "lr": 3e-4, "preprocess": "circle", "augment": "flip+rotate", "loss": "bce",
    "amp": True,
}
DEMO = {  # generated findings on a CPU: the bundled ImageNet EfficientNet-Lite0 at 128 px
    "model": "efficientnet_lite0", "weights": "bundled", "image_size": 128, "epochs": 6,
    "batch_size": 32, "lr": 1e-3,
}


def space(trial: Any) -> None:
    """Define-by-run space: focal_gamma exists only when the loss is focal."""
    trial.suggest_float("lr", 1e-4, 3e-3, log=True)
    trial.suggest_categorical("augment", ["none", "flip", "flip+rotate", "flip+rotate+color"])
    trial.suggest_categorical("unfreeze_depth", [0, 1, 2, 3, "all"])
    if trial.suggest_categorical("loss", ["bce", "focal"]) == "focal":
        trial.suggest_float("focal_gamma", 0.5, 4.0)


EXPERIMENT = Experiment(
    name="rfmid_multilabel",
    summary="efficientnet_b0 on RFMiD, 29 labels (Disease_Risk + 28), macro AUROC",
    dataset="rfmid",
    data_format="RFMiD: RFMiD_{Training,Validation,Testing}_Labels.csv and <ID>.png images",
    task=MULTILABEL,
    defaults=DEFAULTS,
    demo=DEMO,
    searched=("lr", "augment", "unfreeze_depth", "loss", "focal_gamma"),
    space=space,
    budget=Budget(num_samples=30, max_epochs=15, grace_period=2, startup_trials=8),
    demo_budget=Budget(num_samples=10, max_epochs=6, grace_period=1, startup_trials=4),
)
