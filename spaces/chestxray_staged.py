"""chestxray_staged: efficientnet_b0 on chest X-ray class folders, trained in two phases.

The chest X-ray seed: phase a trains the head on a frozen ImageNet backbone (5 epochs, lr 3e-4,
step schedule), phase b unfreezes the last block at a lower lr (8 epochs, lr 1e-4, cosine) and
starts from phase a's best epoch. Classes NORMAL / PNEUMONIA / TUBERCULOSIS (any class folders
work); macro F1 picks the best epoch and is the search's metric, accuracy is reported beside it.
Searches each phase's lr, phase b's unfreeze depth, augmentation and weight decay. The data is
one folder per class (split here 70/15/15, seeded and stratified) or train/val/test folders.

    python -m search.run chestxray_staged --demo                  # generated radiographs, CPU
    python -m search.run chestxray_staged --data /data/chest_xray --gpus-per-trial 0.5
    python -m search.run chestxray_staged --data DIR --set phase_b_epochs=12
"""

from __future__ import annotations

from typing import Any

from spaces.base import Budget, Experiment
from trainables.tasks import classes_task

PHASES = [
    {"name": "a", "epochs": 5, "lr": 3e-4, "scheduler": "step", "unfreeze_depth": 0},
    {"name": "b", "lr": 1e-4, "scheduler": "cosine", "unfreeze_depth": 1},  # the rest: 8
]
DEFAULTS = {
    "model": "efficientnet_b0", "weights": "imagenet", "image_size": 224, "preprocess": "none",
    "epochs": 13, "batch_size": 32, "augment": "flip+tilt", "val_fraction": 0.15,
    "test_fraction": 0.15, "phases": PHASES, "phase_metric": "val/f1_macro",
}
DEMO = {  # generated radiographs on a CPU: the bundled ImageNet EfficientNet-Lite0 at 96 px
    "model": "efficientnet_lite0", "weights": "bundled", "image_size": 96, "epochs": 6,
    "phases": [{**PHASES[0], "epochs": 2, "lr": 1e-3}, {**PHASES[1], "lr": 5e-4}],
}


def space(trial: Any) -> None:
    """Define-by-run space (module-level: Ray pickles the searcher with it)."""
    trial.suggest_float("phase_a_lr", 1e-4, 3e-3, log=True)
    trial.suggest_float("phase_b_lr", 1e-5, 1e-3, log=True)
    trial.suggest_categorical("phase_b_unfreeze_depth", [1, 2, 3])
    trial.suggest_categorical("augment", ["none", "flip", "tilt", "flip+tilt", "flip+tilt+scale"])
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)


EXPERIMENT = Experiment(
    name="chestxray_staged",
    summary="efficientnet_b0 on chest X-ray class folders: frozen backbone, then the last "
            "block; macro F1",
    dataset="imagefolder",
    data_format="class folders DIR/<class>/* (split here 70/15/15) or "
                "DIR/{train,val,test}/<class>/*",
    task=classes_task("val/f1_macro"),
    defaults=DEFAULTS,
    demo=DEMO,
    searched=("phase_a_lr", "phase_b_lr", "phase_b_unfreeze_depth", "augment", "weight_decay"),
    space=space,
    budget=Budget(num_samples=24, max_epochs=13, grace_period=6, startup_trials=8),
    demo_budget=Budget(num_samples=6, max_epochs=6, grace_period=3, startup_trials=3),
    demo_set="chestxray",
)
