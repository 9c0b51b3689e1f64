"""idrid_two_phase: resnet18 on IDRiD grading in two phases; QWK, with accuracy reported.

The IDRiD seed: phase 1 trains the head and the last stage, phase 2 unfreezes more stages at a
lower lr and starts from phase 1's best epoch. Its lesson: the best epoch comes early and is not
the last, so every phase hands on its best epoch and the trial's best epoch is the one kept.
Searches each phase's lr and epochs and phase 2's unfreeze depth. The data is IDRiD's
`B. Disease Grading` release (validation drawn from training, seeded and stratified).

    python -m search.run idrid_two_phase --demo                   # IDRiD-format demo, CPU
    python -m search.run idrid_two_phase --data "/data/IDRiD" --gpus-per-trial 0.5
"""

from __future__ import annotations

from typing import Any

from spaces.base import Budget, Experiment
from trainables.tasks import GRADING

PHASES = [
    {"name": "1", "epochs": 5, "lr": 3e-4, "scheduler": "cosine", "unfreeze_depth": 1},
    {"name": "2", "epochs": 10, "lr": 5e-5, "scheduler": "cosine", "unfreeze_depth": 3},
]
DEFAULTS = {
    "model": "resnet18", "weights": "imagenet", "image_size": 384, "preprocess": "circle",
    "batch_size": 16, "augment": "flip+rotate", "val_fraction": 0.2, "phases": PHASES,
    "phase_metric": "val/kappa",
}
DEMO = {  # generated IDRiD-format photographs on a CPU: the bundled EfficientNet-Lite0
    "model": "efficientnet_lite0", "weights": "bundled", "image_size": 128, "batch_size": 32,
    "phases": [{**PHASES[0], "epochs": 3, "lr": 1e-3}, {**PHASES[1], "epochs": 3, "lr": 2e-4}],
}


def search_phases(trial: Any, lr_1: tuple[float, float], epochs_1: tuple[int, int],
                  lr_2: tuple[float, float], epochs_2: tuple[int, int]) -> None:
    """Each phase's lr and epochs in the given ranges, and phase 2's unfreeze depth."""
    trial.suggest_float("phase_1_lr", *lr_1, log=True)
    trial.suggest_int("phase_1_epochs", *epochs_1)
    trial.suggest_float("phase_2_lr", *lr_2, log=True)
    trial.suggest_int("phase_2_epochs", *epochs_2)
    trial.suggest_categorical("phase_2_unfreeze_depth", [2, 3, 4, "all"])


def space(trial: Any) -> None:
    """Define-by-run space (module-level: Ray pickles the searcher with it)."""
    search_phases(trial, (1e-4, 3e-3), (2, 6), (1e-5, 5e-4), (2, 10))


def demo_space(trial: Any) -> None:
    """The demo's shorter phases (its budget is 6 epochs)."""
    search_phases(trial, (3e-4, 3e-3), (2, 3), (3e-5, 1e-3), (2, 3))


EXPERIMENT = Experiment(
    name="idrid_two_phase",
    summary="resnet18 on IDRiD grading: head and last stage, then more stages; QWK",
    dataset="idrid",
    data_format="IDRiD 'B. Disease Grading' (CSV of Image name, Retinopathy grade; .jpg images)",
    task=GRADING,
    defaults=DEFAULTS,
    demo=DEMO,
    searched=("phase_1_lr", "phase_1_epochs", "phase_2_lr", "phase_2_epochs",
              "phase_2_unfreeze_depth"),
    space=space,
    demo_space=demo_space,
    budget=Budget(num_samples=30, max_epochs=16, grace_period=3, startup_trials=8),
    demo_budget=Budget(num_samples=6, max_epochs=6, grace_period=2, startup_trials=3),
)
