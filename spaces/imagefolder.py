"""imagefolder: any timm model on any class-folder tree; macro F1.

Searches lr, augmentation, unfreeze depth, weight decay and label smoothing. The tree is
`DIR/<class>/*` (split here: seeded and stratified, `--set val_fraction=0.2`, `test_fraction`,
`split_seed`; the split is kept in the run folder) or `DIR/{train,val[,test]}/<class>/*`.
Grayscale or RGB, any size; files that are not images are skipped with a count.

    python -m search.run imagefolder --demo                         # generated raw tree, CPU
    python -m search.run imagefolder --data /data/chest_xray --set model=convnext_tiny
    python -m search.train imagefolder --data /data/tree --set model=resnet50 --set image_size=224
"""

from __future__ import annotations

from typing import Any

from spaces.base import Budget, Experiment
from trainables.tasks import classes_task

DEFAULTS = {
    "model": "resnet18", "weights": "imagenet", "image_size": 224, "preprocess": "none",
    "epochs": 12, "batch_size": 32, "lr": 3e-4, "augment": "flip+tilt",
}
DEMO = {  # the bundled ImageNet EfficientNet-Lite0 on the generated shapes, on a CPU
    "model": "efficientnet_lite0", "weights": "bundled", "image_size": 64, "epochs": 5,
    "batch_size": 32, "lr": 1e-3,
}
AUGMENT_POLICIES = ["none", "flip", "flip+tilt", "flip+tilt+scale", "flip+tilt+scale+color"]


def space(trial: Any) -> None:
    """Define-by-run space (module-level: Ray pickles the searcher with it)."""
    trial.suggest_float("lr", 1e-4, 3e-3, log=True)
    trial.suggest_categorical("augment", AUGMENT_POLICIES)
    trial.suggest_categorical("unfreeze_depth", [0, 1, 2, 3, "all"])
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    trial.suggest_float("label_smoothing", 0.0, 0.2)


EXPERIMENT = Experiment(
    name="imagefolder",
    summary="any timm model (--set model=...) on any class-folder tree, macro F1",
    dataset="imagefolder",
    data_format="class folders DIR/<class>/* (split here) or DIR/{train,val[,test]}/<class>/*",
    task=classes_task("val/f1_macro"),
    defaults=DEFAULTS,
    demo=DEMO,
    searched=("lr", "augment", "unfreeze_depth", "weight_decay", "label_smoothing"),
    space=space,
    budget=Budget(num_samples=30, max_epochs=12, grace_period=2, startup_trials=8),
    demo_budget=Budget(num_samples=8, max_epochs=5, grace_period=1, startup_trials=4),
)
