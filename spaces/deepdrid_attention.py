"""deepdrid_attention: resnet18 with multi-head self-attention over its last feature map.

Searches attention on/off, heads, layer norm on/off, residual on/off, lr, augmentation and
unfreeze depth; the metric is quadratic weighted kappa on validation (max).

    python -m search.train deepdrid_attention --demo --set attention=true --set heads=4
    python -m search.train deepdrid_attention --data /data/DeepDRiD
"""

from spaces.base import Experiment
from spaces.deepdrid_finetune import DATA_FORMAT, DEFAULTS, DEMO
from trainables.tasks import GRADING

EXPERIMENT = Experiment(
    name="deepdrid_attention",
    summary="resnet18 + self-attention head on DeepDRiD, 5 DR grades",
    dataset="deepdrid",
    data_format=DATA_FORMAT,
    task=GRADING,
    defaults={**DEFAULTS, "attention": True, "heads": 4},
    demo=DEMO,
    searched=("attention", "heads", "layer_norm", "residual", "lr", "augment",
              "unfreeze_depth"),
)
