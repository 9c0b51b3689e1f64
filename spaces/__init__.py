"""The experiments, one module each, listed in one explicit dict."""

from __future__ import annotations

from spaces import (
    chestxray_staged,
    deepdrid_attention,
    deepdrid_ensemble,
    deepdrid_finetune,
    deepdrid_two_stage,
    idrid_two_phase,
    imagefolder,
    medmnist,
    rfmid_multilabel,
)
from spaces.base import Experiment
from trainables.errors import ConfigError

EXPERIMENTS: dict[str, Experiment] = {
    "deepdrid_finetune": deepdrid_finetune.EXPERIMENT,
    "deepdrid_attention": deepdrid_attention.EXPERIMENT,
    "rfmid_multilabel": rfmid_multilabel.EXPERIMENT,
    "medmnist": medmnist.EXPERIMENT,
    "imagefolder": imagefolder.EXPERIMENT,
    "chestxray_staged": chestxray_staged.EXPERIMENT,
    "idrid_two_phase": idrid_two_phase.EXPERIMENT,
    "deepdrid_two_stage": deepdrid_two_stage.EXPERIMENT,
    "deepdrid_ensemble": deepdrid_ensemble.EXPERIMENT,
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


__all__ = ["EXPERIMENTS", "Experiment", "get_experiment"]
