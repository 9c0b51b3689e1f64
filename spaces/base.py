"""What an experiment is: its task, data, metric, fixed defaults and demo settings."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError
from trainables.tasks import Task
from trainables.train.config import TrainConfig, is_config_key


@dataclass(frozen=True)
class Budget:
    """How much a search spends, and how ASHA and TPE spend it."""

    num_samples: int = 40  # trials in total
    max_epochs: int = 15  # epochs of a trial that ASHA never stops
    grace_period: int = 1  # epochs every trial runs before ASHA may stop it
    reduction_factor: int = 2  # ASHA keeps the best 1/rf at each rung
    startup_trials: int = 6  # random trials before TPE models the space
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    top_k: int = 3  # configurations the final step retrains


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str  # one line for `search.list`
    dataset: str  # reader kind, see trainables.data.formats.readers()
    data_format: str  # what --data must point at
    task: Task  # the kind of labels, the metric the search optimises, and the trainable
    defaults: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    demo: dict[str, Any] = field(default_factory=dict)  # further overrides under --demo
    searched: tuple[str, ...] = ()  # the config keys its search space sets
    # define-by-run: fn(optuna.Trial), module-level; it may return constants that follow its
    # choices ({"weights": ...}), which join the trial's config
    space: Callable[[Any], Any] | None = None
    budget: Budget = field(default_factory=lambda: Budget())
    demo_budget: Budget = field(default_factory=lambda: Budget(num_samples=12, max_epochs=4))
    demo_set: str = ""  # the generated set `--demo` uses (trainables.data.demo_sets); "" = dataset
    demo_space: Callable[[Any], Any] | None = None  # the space under --demo; None = `space`
    demo_data: dict[str, str] = field(default_factory=dict)  # further data keys -> demo sets
    final_select: str = "top-k"  # the final step's members: top-k | greedy (search.final)
    needs_one_of: tuple[str, ...] = ()  # config keys of which a run must set one (stage 1)

    def __post_init__(self) -> None:
        # a typo in an experiment module fails at import, not in the middle of a search
        TrainConfig.from_dict({"task": self.task.kind, "metric": self.task.metric,
                               **self.defaults, **self.demo})
        unknown = {key for key in self.searched if not is_config_key(key)}
        assert not unknown, f"{self.name} searches unknown keys {unknown}"

    def demo_paths(self, root: Path, given: dict[str, Any]) -> dict[str, str]:
        """The generated sets `--demo` fills in (generated once per machine under `root`):
        `data`, and the experiment's further data keys (stage 1's), where `given` lacks them."""
        from trainables.data.demo_sets import ensure_demo

        wanted = {"data": self.demo_kind, **self.demo_data}
        return {key: str(ensure_demo(kind, root)) for key, kind in wanted.items()
                if not given.get(key)}

    def check(self, cfg: TrainConfig) -> None:
        """What the experiment needs beyond a valid config."""
        values = cfg.to_dict()
        if self.needs_one_of and not any(values.get(k) for k in self.needs_one_of):
            raise ConfigError(f"{self.name} needs " + " or ".join(
                f"--set {k}=..." for k in self.needs_one_of) + f" (or --demo): {self.data_format}")

    def search_space(self, demo: bool) -> Callable[[Any], Any]:
        space = (self.demo_space if demo else None) or self.space
        assert space is not None, f"{self.name} has no search space"
        return space

    @property
    def demo_kind(self) -> str:
        """The demo writer of `--demo`: its own set, or the one of its dataset kind."""
        return self.demo_set or self.dataset

    @property
    def metric(self) -> str:
        return self.task.metric

    @property
    def mode(self) -> str:
        return self.task.mode

    def trainable(self) -> Callable[[dict[str, Any]], None]:
        """The Ray Tune function trainable (light: the worker that runs it imports torch and timm)."""
        return _load(self.task.trainable)

    def fit(self) -> Callable[..., Any]:
        """The function the trainable calls: fit(cfg, reporter, until_epoch=0)."""
        return _load(self.task.fit)

    def config(self, *, demo: bool, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The resolved trial config: defaults, then demo settings, then `overrides` (which
        cannot change what the experiment is: its task and metric)."""
        own = {"task": self.task.kind, "metric": self.task.metric}
        changed = [k for k, v in own.items() if (overrides or {}).get(k, v) != v]
        if changed:
            raise ConfigError(f"{self.name}: {', '.join(changed)} is the experiment's own "
                              f"({', '.join(f'{k}={own[k]}' for k in changed)}); pick another "
                              "experiment (python -m search.list) instead")
        values = {"dataset": self.dataset, "task": self.task.kind, "metric": self.task.metric,
                  **self.defaults,
                  **(self.demo if demo else {}), **(overrides or {})}
        return TrainConfig.from_dict(values)


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
