"""deepdrid_two_stage: resnet18 fine-tuned on a large DR set first (stage 1), then on DeepDRiD.

The course's task b. Stage 1 fine-tunes the ImageNet model on APTOS 2019 or Kaggle DR Resized
(`--set stage1_data=DIR`; its reader is found from its CSV), once per stage-1 data and
configuration: every trial, member and reproduction of the run starts from that one model,
kept in the run folder's `stage1/` (trainables.train.stage1). Or start from a file:
`--set stage1_weights=PATH` (another run's member). Stage 2 fine-tunes it on DeepDRiD and is
what the search explores: lr, unfreeze depth, augmentation. The final step trains one more
model beside its members, the best configuration without stage 1 (the single-stage baseline on
the same budget), and the report sets the two side by side.

    python -m search.run deepdrid_two_stage --demo              # APTOS-format demo -> DeepDRiD demo
    python -m search.run deepdrid_two_stage --data /data/DeepDRiD \\
        --set stage1_data=/data/aptos2019 --set stage1_epochs=8 --gpus-per-trial 0.5
"""

from __future__ import annotations

from typing import Any

from spaces.base import Budget, Experiment
from spaces.deepdrid_finetune import DATA_FORMAT, DEFAULTS, search_training
from trainables.tasks import GRADING

DEMO = {  # the APTOS-format demo (another camera) then the DeepDRiD demo, on a CPU
    "model": "efficientnet_lite0", "weights": "bundled", "image_size": 128, "epochs": 5,
    "batch_size": 32, "lr": 1e-3, "stage1_epochs": 4, "stage1_lr": 1e-3,
}


def space(trial: Any) -> None:
    """Define-by-run space (module-level: Ray pickles the searcher with it)."""
    search_training(trial)  # lr, augment, unfreeze_depth


EXPERIMENT = Experiment(
    name="deepdrid_two_stage",
    summary="resnet18: stage 1 on APTOS 2019 or Kaggle DR (trained once, shared), stage 2 on "
            "DeepDRiD",
    dataset="deepdrid",
    data_format=DATA_FORMAT + "; stage 1: --set stage1_data=DIR (APTOS 2019 or Kaggle DR "
                              "Resized) or --set stage1_weights=FILE",
    task=GRADING,
    defaults={**DEFAULTS, "stage1_epochs": 5, "stage1_lr": 3e-4},
    demo=DEMO,
    searched=("lr", "augment", "unfreeze_depth"),
    space=space,
    budget=Budget(num_samples=30, max_epochs=15, grace_period=2, startup_trials=8),
    demo_budget=Budget(num_samples=8, max_epochs=5, grace_period=1, startup_trials=4),
    demo_data={"stage1_data": "aptos"},
    needs_one_of=("stage1_data", "stage1_weights"),
)
