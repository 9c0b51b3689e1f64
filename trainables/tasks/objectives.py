"""The training loss of a trial: its task's loss option, weighted from the training labels
(the torch side of trainables.tasks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from trainables.tasks import Task, task_of
from trainables.train.config import TrainConfig

MAX_POS_WEIGHT = 100.0  # a label with one positive in 10k images would otherwise dominate


@dataclass
class Objective:
    """Loss on logits and the activation that turns logits into probabilities."""

    task: Task
    loss_name: str
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    weight: torch.Tensor | None = None  # class weights (ce) or pos_weight (bce)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "ce":
            return F.cross_entropy(logits, targets, weight=self.weight,
                                   label_smoothing=self.label_smoothing)
        if self.loss_name == "bce":
            return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.weight)
        # alpha=-1: no fixed class balance, gamma focuses on the hard labels
        return sigmoid_focal_loss(logits, targets, alpha=-1, gamma=self.focal_gamma,
                                  reduction="mean")

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return self.task.probabilities(logits)


def make_objective(cfg: TrainConfig, train_labels: np.ndarray,
                   device: torch.device) -> Objective:
    """The config's loss, its weights computed from the training labels."""
    weight = None
    task = task_of(cfg.task, cfg.metric)
    name = cfg.loss if cfg.loss != "auto" else task.losses[0]
    if name == "bce":
        positives = train_labels.sum(axis=0)
        ratio = (len(train_labels) - positives) / np.maximum(positives, 1)
        weight = torch.tensor(np.clip(ratio, 1.0, MAX_POS_WEIGHT), dtype=torch.float32)
    elif name == "ce" and cfg.class_weights:
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(train_labels)
        balanced = compute_class_weight("balanced", classes=present, y=train_labels)
        full = np.ones(cfg.num_classes)
        full[present] = balanced
        weight = torch.tensor(full, dtype=torch.float32)
    return Objective(task, name, cfg.label_smoothing, cfg.focal_gamma,
                     None if weight is None else weight.to(device))
