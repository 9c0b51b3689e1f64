"""What each task optimises; a light module, so the CLI can know it without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    metric: str  # the key a search and a trial's best checkpoint optimise
    mode: str  # "max" or "min"
    trainable: str  # "module:function" of the Ray Tune function trainable
    fit: str  # "module:function" fit(cfg, reporter, until_epoch=...) the trainable calls


GRADING = Task(metric="val/kappa", mode="max", trainable="trainables.grading:train_grading",
               fit="trainables.grading:fit")
