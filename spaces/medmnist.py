"""medmnist: resnet18 on Medical MNIST-style class folders or a MedMNIST .npz; accuracy.

Searches lr (1e-5 to 1e-2), augmentation (flips and small rotations: no colour ops on
grayscale images), unfreeze depth and weight decay; the best epoch is the one with the best
validation accuracy. The data is class folders with train/ and val/ (Medical MNIST's seed
layout, test/ optional) or a MedMNIST .npz, by path or by name in ~/.medmnist (nothing
downloads at run time).

    python -m search.run medmnist --demo                          # generated 6-class shapes, CPU
    python -m search.run medmnist --data /data/medical_mnist --gpus-per-trial 0.5
    python -m search.run medmnist --data pathmnist_64             # ~/.medmnist/pathmnist_64.npz
    python -m search.train medmnist --demo --set lr=1e-3
"""

from __future__ import annotations

from typing import Any

from spaces.base import Budget, Experiment
from trainables.tasks import classes_task

DEFAULTS = {  # Medical MNIST is 64 px grayscale
    "model": "resnet18", "weights": "imagenet", "image_size": 64, "preprocess": "none",
    "epochs": 10, "batch_size": 64, "lr": 1e-3, "augment": "flip+tilt",
}
DEMO = {  # the bundled ImageNet EfficientNet-Lite0 on generated shapes, on a CPU
    "model": "efficientnet_lite0", "weights": "bundled", "epochs": 5, "batch_size": 32,
}
UNFREEZE_DEPTHS = [0, 1, 2, 3, "all"]


def space(trial: Any) -> None:
    """Define-by-run space (module-level: Ray pickles the searcher with it)."""
    trial.suggest_float("lr", 1e-5, 1e-2, log=True)  # three decades: a poor lr is costly
    trial.suggest_categorical("augment", ["none", "flip", "tilt", "flip+tilt"])
    trial.suggest_categorical("unfreeze_depth", UNFREEZE_DEPTHS)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)


EXPERIMENT = Experiment(
    name="medmnist",
    summary="resnet18 on Medical MNIST-style class folders or a MedMNIST .npz, accuracy",
    dataset="medmnist",
    data_format="class folders DIR/{train,val[,test]}/<class>/*, or a MedMNIST .npz (a path, "
                "or a name such as pathmnist_64 in ~/.medmnist)",
    task=classes_task("val/accuracy"),
    defaults=DEFAULTS,
    demo=DEMO,
    searched=("lr", "augment", "unfreeze_depth", "weight_decay"),
    space=space,
    budget=Budget(num_samples=30, max_epochs=10, grace_period=2, startup_trials=8),
    demo_budget=Budget(num_samples=8, max_epochs=5, grace_period=1, startup_trials=4),
)
