"""The trainable of every task: one model, one config, epochs reported with checkpoints.

`train(config)` is what Ray Tune runs for every experiment, and what `python -m search.train`
and `search.reproduce` call directly. The task kind in the config (`task`) chooses the loss,
the output activation and the metrics (trainables.tasks); nothing here knows a dataset.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from trainables.data.trial_data import TrialData, load_data
from trainables.errors import ConfigError
from trainables.model.models import FundusClassifier, build_model, set_unfreeze_depth
from trainables.model.timm_import import timm
from trainables.tasks import better, task_of
from trainables.tasks.objectives import Objective, make_objective
from trainables.train.augment import BatchAugment
from trainables.train.checkpoint import STATE_FILE, load_checkpoint, save_checkpoint
from trainables.train.config import Phase, TrainConfig
from trainables.train.loop import (
    Runtime,
    evaluate,
    lr_factor,
    model_cost,
    plan_runtime,
    train_one_epoch,
)
from trainables.train.reporting import Reporter, current_reporter, running_ray
from trainables.train.stage1 import uses_stage1

log = logging.getLogger(__name__)


def train(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: build data and model from `config`, train, report."""
    cfg = TrainConfig.from_dict(config)
    task = task_of(cfg.task, cfg.metric)
    fit(cfg, current_reporter(task.metric, task.mode))


def fit(cfg: TrainConfig, reporter: Reporter, *, until_epoch: int = 0,
        data: TrialData | None = None, keep: str = "last") -> FundusClassifier:
    """Train `cfg.epochs` epochs, phase after phase (continuing from the reporter's checkpoint
    if it has one); returns the model of the last epoch, or with keep="best" of the best one.

    `until_epoch` stops after that epoch with the schedule of the full run: how a trial that
    ASHA stopped early is reproduced. `data` is `load_data(cfg)` when the caller has it.
    """
    runtime = plan_runtime(cfg)
    plan_threads(cfg)
    data = load_data(cfg) if data is None else data
    torch.manual_seed(cfg.seed)  # the new head and attention layers
    model = build_model(cfg.replace(weights="none") if uses_stage1(cfg) else cfg)
    if uses_stage1(cfg):
        start_from_stage1(model, cfg)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_cfg = timm.data.resolve_model_data_config(model.backbone)
    mean, std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    train_aug = BatchAugment(cfg.augment, mean, std, runtime.device, runtime.channels_last)
    eval_aug = BatchAugment("none", mean, std, runtime.device, runtime.channels_last)

    objective = make_objective(cfg, data.labels["train"][data.train_sample], runtime.device)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.scales_loss)
    phases = cfg.phase_plan()
    for phase in reversed(phases):  # every phase's depth fits the model, before any epoch
        set_unfreeze_depth(model, phase.unfreeze_depth)
    steps = _steps_per_epoch(cfg, len(data.train_sample))
    cost = model_cost(model, cfg.image_size, runtime) if cfg.report_cost else {}
    task = task_of(cfg.task, cfg.metric)
    metric = cfg.phase_metric or task.metric
    best = _BestWeights(metric, "min" if metric.endswith("loss") else task.mode)

    config = cfg.to_dict()
    reporter.start(config)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def restore(folder: Path) -> dict[str, Any]:
        nonlocal optimizer, scheduler  # the optimizer of the phase the checkpoint was in
        epoch = int(json.loads((folder / STATE_FILE).read_text())["epoch"])
        phase = next(p for p in phases if p.start < epoch <= p.end) if epoch else phases[0]
        optimizer, scheduler = _start_phase(model, phase, cfg, steps)
        state = load_checkpoint(folder, model=model, optimizer=optimizer, scheduler=scheduler,
                                scaler=scaler)
        best.restore(folder, state)
        return state

    restored = reporter.restore(restore)
    start = int(restored["epoch"]) if restored else 0
    history: list[dict[str, float]] = list(restored["history"]) if restored else []
    if restored:
        log.info("resuming at epoch %d of %d", start + 1, cfg.epochs)
    stop = min(cfg.epochs, until_epoch or cfg.epochs)
    for number, phase in enumerate(phases, 1):
        if start >= phase.end or phase.start >= stop:
            continue
        if start == phase.start:  # a phase begins: the previous phase's best weights, new optimizer
            if number > 1:
                best.load_phase_best(model)
                log.info("phase %s: from epoch %d's weights, unfreeze_depth=%s, lr %.2e",
                         phase.name, best.phase_epoch, phase.unfreeze_depth, phase.lr)
            best.new_phase()
            optimizer, scheduler = _start_phase(model, phase, cfg, steps)
        assert optimizer is not None and scheduler is not None
        for epoch in range(start, min(phase.end, stop)):
            row = _epoch(model, data, cfg, epoch, optimizer, scheduler, scaler, train_aug,
                         eval_aug, runtime, objective)
            if len(phases) > 1:
                row["phase"] = number
            row.update(cost)  # --objectives latency / params
            history.append(row)
            best.update(model, row, keep_phase=number < len(phases), keep_overall=keep == "best")
            state = {"epoch": epoch + 1, "history": list(history), **best.state()}
            reporter.report(row, functools.partial(
                save_checkpoint, model=model, optimizer=optimizer, scheduler=scheduler,
                scaler=scaler, state=state, config=config, extra=best.files()))
            start = epoch + 1
    if keep == "best" and best.overall is not None:
        model.load_state_dict(best.overall)
    return model


def plan_threads(cfg: TrainConfig) -> int:
    """torch's intra-op threads: `cfg.threads`, else as many as Ray gave the trial CPUs (at
    least one), else torch's own default (every core). Set every time: a reused trial process
    may have had another trial's. Returns them."""
    threads = cfg.threads or trial_cpus()
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def trial_cpus() -> int:
    """The whole CPUs Ray assigned to this worker (at least 1), or 0 outside a Ray worker."""
    ray = running_ray()
    if ray is None:
        return 0
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return 0
    cpus = context.get_assigned_resources().get("CPU")
    return max(1, int(cpus)) if cpus else 0


def start_from_stage1(model: FundusClassifier, cfg: TrainConfig) -> dict[str, Any]:
    """Load the stage-1 model's weights: every tensor whose name and shape fit (the backbone;
    the head too when the classes match). Returns the stage-1 metadata."""
    from safetensors.torch import load

    from trainables.model.model_file import load_fitting
    from trainables.train.stage1 import stage1_weights

    weights, meta, _ = stage1_weights(cfg, fit)
    source = meta.get("source") or meta.get("data")
    load_fitting(model, load(weights), f"the stage-1 weights ({source})", cfg.model)
    return meta


def _start_phase(model: FundusClassifier, phase: Phase, cfg: TrainConfig,
                 steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The phase's unfreeze depth, and a fresh AdamW with the phase's schedule over its epochs."""
    set_unfreeze_depth(model, phase.unfreeze_depth)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=phase.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, total=steps * phase.epochs, warmup=round(phase.warmup_epochs * steps),
        kind=phase.scheduler))
    return optimizer, scheduler


class _BestWeights:
    """The best epoch's weights by `metric`: of the current phase (the next phase starts from
    them; kept in the checkpoint so that a resumed trial starts it from the same ones) and of
    the whole trial (what keep="best" returns)."""

    PHASE_FILE = "phase_best.safetensors"

    def __init__(self, metric: str, mode: str) -> None:
        self.metric, self.mode = metric, mode
        self.phase: dict[str, torch.Tensor] | None = None
        self.phase_value: float | None = None
        self.phase_epoch = 0
        self.overall: dict[str, torch.Tensor] | None = None
        self.overall_value: float | None = None

    def _better(self, value: float, than: float | None) -> bool:
        return than is None or better(value, than, self.mode)

    def new_phase(self) -> None:
        self.phase, self.phase_value, self.phase_epoch = None, None, 0

    def update(self, model: nn.Module, row: dict[str, float], *, keep_phase: bool,
               keep_overall: bool) -> None:
        if not (keep_phase or keep_overall):
            return
        if self.metric not in row:
            raise ConfigError(f"phase_metric={self.metric!r} is not among the epoch's metrics: "
                              f"{', '.join(row)}")
        value = float(row[self.metric])
        if keep_phase and self._better(value, self.phase_value):
            self.phase = _cpu_copy(model)
            self.phase_value, self.phase_epoch = value, int(row["epoch"])
        if keep_overall and self._better(value, self.overall_value):
            self.overall, self.overall_value = _cpu_copy(model), value

    def load_phase_best(self, model: nn.Module) -> None:
        assert self.phase is not None, "a phase ended without a best epoch"
        model.load_state_dict(self.phase)

    def state(self) -> dict[str, Any]:
        return {"phase_best": {"value": self.phase_value, "epoch": self.phase_epoch}} \
            if self.phase is not None else {}

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        return {self.PHASE_FILE: self.phase} if self.phase is not None else {}

    def restore(self, folder: Path, state: dict[str, Any]) -> None:
        if (folder / self.PHASE_FILE).is_file() and "phase_best" in state:
            self.phase = load_file(str(folder / self.PHASE_FILE))
            self.phase_value = state["phase_best"]["value"]
            self.phase_epoch = int(state["phase_best"]["epoch"])


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _epoch(model: FundusClassifier, data: TrialData, cfg: TrainConfig, epoch: int,
           optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
           scaler: torch.amp.GradScaler, train_aug: BatchAugment, eval_aug: BatchAugment,
           runtime: Runtime, objective: Objective) -> dict[str, float]:
    train = train_one_epoch(model, data.images["train"], data.labels["train"], cfg=cfg,
                            epoch=epoch, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            augment=train_aug, runtime=runtime, objective=objective,
                            sample=data.train_sample)
    val, _ = evaluate(model, data.images["val"], data.labels["val"], cfg=cfg, augment=eval_aug,
                      runtime=runtime)
    return {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **train, **val}


def _steps_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    steps = n_train // cfg.batch_size if n_train > cfg.batch_size else 1
    return min(steps, cfg.max_train_batches) if cfg.max_train_batches else steps

