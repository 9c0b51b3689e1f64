"""The run spec: everything that fixes one search, typed. `search.run` builds it once
(`search.run.resolve`, whose docstring gives the order of its layers); config.json keeps it
under `settings`, and `--resume`, the final step, the report and a warm start read the same
type back (`RunSpec.from_dict`, which refuses keys it does not know)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trainables.errors import ConfigError

DEFAULT_PLACEMENT_TIMEOUT = 15.0  # minutes; on a cloud cluster a new node takes a few


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    fixed: dict[str, Any]  # the trial config without the searched values
    pinned: dict[str, Any] = field(default_factory=dict)  # searched keys fixed by --set
    demo: bool = False  # the experiment's demo space and budget, generated data
    num_samples: int
    max_epochs: int
    seed: int = 0
    cpus_per_trial: float
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None  # None: as many as the cluster holds
    wandb: bool = True
    placement_timeout: float = DEFAULT_PLACEMENT_TIMEOUT  # minutes without a placed trial
    budget_gpu_hours: float | None = None  # no new trial once the search's GPU-hours would pass it
    startup_trials: int  # TPE's random start
    grace_period: int  # ASHA's
    reduction_factor: int
    sampler: str = "tpe"  # tpe, random (a baseline) or nsga2
    scheduler: str = "asha"  # or fifo: no early stopping (a baseline)
    batch: int | None = None  # --reproducible: configurations asked in batches this big
    objectives: list[list[str]] = field(default_factory=list)  # [metric, mode] each
    warm_start: list[str] = field(default_factory=list)  # earlier runs: folders or URIs
    top_k: int = 3  # members of the final step
    cache_dir: str  # the image cache folder of every node (MEDTUNE_CACHE)
    classes: list[str] | None = None  # the data's class or label names, once it is read
    replay: dict[str, Any] | None = None  # --replay: {table, time_scale} (search.engine.replay)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "settings") -> RunSpec:
        """The spec of config.json's `settings` (or any such dict); an unknown or missing key
        is one clear error naming `where`."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(known)}")
        required = [n for n, f in known.items() if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in values]
        if missing:
            raise ConfigError(f"{where}: missing setting(s) {', '.join(missing)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)
