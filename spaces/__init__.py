"""The experiments, one module each, listed in one explicit dict."""

from __future__ import annotations

from spaces import deepdrid_attention, deepdrid_finetune, imagefolder, medmnist, rfmid_multilabel
from spaces.base import Experiment
from trainables.errors import ConfigError

EXPERIMENTS: dict[str, Experiment] = {
    "deepdrid_finetune": deepdrid_finetune.EXPERIMENT,
    "deepdrid_attention": deepdrid_attention.EXPERIMENT,
    "rfmid_multilabel": rfmid_multilabel.EXPERIMENT,
    "medmnist": medmnist.EXPERIMENT,
    "imagefolder": imagefolder.EXPERIMENT,
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


__all__ = ["EXPERIMENTS", "Experiment", "get_experiment"]
