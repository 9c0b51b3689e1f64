"""What an experiment is: its task, data, metric, fixed defaults and demo settings."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainables.config import TrainConfig
from trainables.tasks import Task


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str  # one line for `search.list`
    dataset: str  # reader kind, see trainables.datasets.READERS
    data_format: str  # what --data must point at
    task: Task  # metric, mode and trainable
    defaults: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    demo: dict[str, Any] = field(default_factory=dict)  # further overrides under --demo
    searched: tuple[str, ...] = ()  # the config keys its search space sets

    def __post_init__(self) -> None:
        # a typo in an experiment module fails at import, not in the middle of a search
        TrainConfig.from_dict({**self.defaults, **self.demo})
        unknown = set(self.searched) - set(TrainConfig.keys())
        assert not unknown, f"{self.name} searches unknown keys {unknown}"

    @property
    def metric(self) -> str:
        return self.task.metric

    @property
    def mode(self) -> str:
        return self.task.mode

    def trainable(self) -> Callable[[dict[str, Any]], None]:
        """The Ray Tune function trainable (imported on first use: it pulls in torch and timm)."""
        module, _, name = self.task.trainable.partition(":")
        fn: Callable[[dict[str, Any]], None] = getattr(importlib.import_module(module), name)
        return fn

    def config(self, *, demo: bool, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The resolved trial config: defaults, then demo settings, then `overrides`."""
        values = {"dataset": self.dataset, **self.defaults, **(self.demo if demo else {}),
                  **(overrides or {})}
        return TrainConfig.from_dict(values)
