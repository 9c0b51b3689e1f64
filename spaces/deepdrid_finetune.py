"""deepdrid_finetune: fine-tune an ImageNet resnet18 on DeepDRiD fundus photos, 5 DR grades.

Searches lr (1e-5 to 1e-2: three decades, where a poor choice is costly), weight decay, batch
size, augmentation policy, fundus preprocessing, unfreeze depth and label smoothing; the metric
is quadratic weighted kappa on validation (max). `search.bench efficiency` and its recorded
learning curves (`search.bench collect`) search this space.

    python -m search.run deepdrid_finetune --demo                 # search on generated data
    python -m search.run deepdrid_finetune --data /data/DeepDRiD --gpus-per-trial 0.5
    python -m search.train deepdrid_finetune --demo               # one trial, no Ray
"""

from __future__ import annotations

from typing import Any

from spaces.base import Budget, Experiment
from trainables.tasks import GRADING

DATA_FORMAT = "DeepDRiD: course layout ({train,val,test}.csv) or the original release"
DEFAULTS = {  # a real DeepDRiD run on a GPU
    "model": "resnet18", "weights": "imagenet", "image_size": 384, "epochs": 15, "batch_size": 32,
    "lr": 3e-4, "preprocess": "circle", "augment": "flip+rotate",
}
DEMO = {  # generated data on a CPU: the bundled ImageNet EfficientNet-Lite0 at 128 px
    "model": "efficientnet_lite0", "weights": "bundled", "image_size": 128, "epochs": 6,
    "batch_size": 32, "lr": 1e-3,
}
AUGMENT_POLICIES = ["none", "flip", "flip+rotate", "flip+rotate+scale", "flip+rotate+scale+color"]
UNFREEZE_DEPTHS = [0, 1, 2, 3, "all"]
BUDGET = Budget(num_samples=40, max_epochs=15, grace_period=2, reduction_factor=2, startup_trials=8)
DEMO_BUDGET = Budget(num_samples=12, max_epochs=6, grace_period=1, reduction_factor=2,
                     startup_trials=4)  # about 3 minutes on 2 CPU cores


LR_RANGE = (1e-4, 3e-3)  # the other DeepDRiD experiments: a range that mostly works
WIDE_LR_RANGE = (1e-5, 1e-2)  # three decades, as a fine-tuning search really covers: from too
# slow to learn in the budget to enough to wreck the ImageNet features (search.bench efficiency)


def search_training(trial: Any, lr_range: tuple[float, float] = LR_RANGE) -> None:
    """The optimisation knobs every DeepDRiD experiment searches (scientific: lr, augment)."""
    trial.suggest_float("lr", *lr_range, log=True)
    trial.suggest_categorical("augment", AUGMENT_POLICIES)
    trial.suggest_categorical("unfreeze_depth", UNFREEZE_DEPTHS)


def space(trial: Any) -> None:
    """Define-by-run space (module-level: Ray pickles the searcher with it)."""
    search_training(trial, WIDE_LR_RANGE)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    trial.suggest_categorical("batch_size", [16, 32])
    trial.suggest_categorical("preprocess", ["none", "circle", "ben"])
    trial.suggest_float("label_smoothing", 0.0, 0.2)


EXPERIMENT = Experiment(
    name="deepdrid_finetune",
    summary="resnet18 fine-tuned on DeepDRiD, 5 DR grades",
    dataset="deepdrid",
    data_format=DATA_FORMAT,
    task=GRADING,
    defaults=DEFAULTS,
    demo=DEMO,
    searched=("lr", "weight_decay", "batch_size", "augment", "preprocess", "unfreeze_depth",
              "label_smoothing"),
    space=space,
    budget=BUDGET,
    demo_budget=DEMO_BUDGET,
)
