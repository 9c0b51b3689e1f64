"""deepdrid_ensemble: a bag across architectures (efficientnet_b0, resnet18, resnet34) on DeepDRiD.

The course's task d. The search explores the architecture with lr, augmentation and unfreeze
depth; the final step trains the top k trials and the best trial of each architecture, and bags
them by greedy ensemble selection with replacement on validation (`search.final --select
greedy`, this experiment's default). The report sets the greedy bag beside the plain top-k bag
and every member, with its architecture.

On the CPU demo only EfficientNet-Lite0 has ImageNet weights offline (the bundled ones): it
stands in for efficientnet_b0, and resnet18 and resnet34 start from random weights
(weights=none), so the demo's architectures are not on an equal footing.

    python -m search.run deepdrid_ensemble --demo
    python -m search.run deepdrid_ensemble --data /data/DeepDRiD --gpus-per-trial 0.5
    python -m search.final results/deepdrid_ensemble/<run> --select top-k   # the plain bag
"""

from __future__ import annotations

from typing import Any

from spaces.base import Budget, Experiment
from spaces.deepdrid_finetune import DATA_FORMAT, DEFAULTS, search_training
from trainables.tasks import GRADING

MODELS = ["efficientnet_b0", "resnet18", "resnet34"]
DEMO_MODELS = {"efficientnet_lite0": "bundled", "resnet18": "none", "resnet34": "none"}
DEMO = {"model": "efficientnet_lite0", "weights": "bundled", "image_size": 96, "epochs": 5,
        "batch_size": 32, "lr": 1e-3}


def space(trial: Any) -> None:
    """Define-by-run space (module-level: Ray pickles the searcher with it)."""
    trial.suggest_categorical("model", MODELS)
    search_training(trial)  # lr, augment, unfreeze_depth


def demo_space(trial: Any) -> dict[str, Any]:
    """The demo's architectures, each with the only weights it has offline."""
    model = trial.suggest_categorical("model", list(DEMO_MODELS))
    search_training(trial)
    return {"weights": DEMO_MODELS[model]}


EXPERIMENT = Experiment(
    name="deepdrid_ensemble",
    summary="efficientnet_b0, resnet18 and resnet34 searched on DeepDRiD, bagged by greedy "
            "selection",
    dataset="deepdrid",
    data_format=DATA_FORMAT,
    task=GRADING,
    defaults=DEFAULTS,
    demo=DEMO,
    searched=("model", "lr", "augment", "unfreeze_depth"),
    space=space,
    demo_space=demo_space,
    budget=Budget(num_samples=45, max_epochs=15, grace_period=2, startup_trials=9),
    demo_budget=Budget(num_samples=9, max_epochs=5, grace_period=1, startup_trials=6),
    final_select="greedy",
)
