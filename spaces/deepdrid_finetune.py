"""deepdrid_finetune: fine-tune an ImageNet resnet18 on DeepDRiD fundus photos, 5 DR grades.

Searches lr, weight decay, batch size, augmentation policy, fundus preprocessing, unfreeze
depth and label smoothing; the metric is quadratic weighted kappa on validation (max).

    python -m search.train deepdrid_finetune --demo          # one trial, generated data
    python -m search.train deepdrid_finetune --data /data/DeepDRiD
"""

from spaces.base import Experiment
from trainables.tasks import GRADING

DEMO = {  # generated data on a CPU: the bundled ImageNet EfficientNet-Lite0 at 128 px
    "model": "efficientnet_lite0", "weights": "bundled", "image_size": 128, "epochs": 6,
    "batch_size": 32, "lr": 1e-3,
}

DATA_FORMAT = "DeepDRiD: course layout ({train,val,test}.csv) or the original release"
DEFAULTS = {  # a real DeepDRiD run on a GPU
    "model": "resnet18", "weights": "imagenet", "image_size": 384, "epochs": 15, "batch_size": 32,
    "lr": 3e-4, "preprocess": "circle", "augment": "flip+rotate",
}

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
)
