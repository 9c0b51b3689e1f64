"""The trainable of every task: one model, one config, epochs reported with checkpoints.

`train(config)` is what Ray Tune runs for every experiment, and what `python -m search.train`
and `search.reproduce` call directly. The task kind in the config (`task`) chooses the loss,
the output activation and the metrics (trainables.tasks); nothing here knows a dataset.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import timm
import torch

from trainables.augment import BatchAugment
from trainables.cache import build_cache, cache_root
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.config import TrainConfig
from trainables.datasets import ImageIndex, ReadOptions, read_dataset
from trainables.errors import ConfigError
from trainables.loop import Runtime, evaluate, lr_factor, plan_runtime, train_one_epoch
from trainables.metrics import scorable_labels
from trainables.models import FundusClassifier, build_model
from trainables.objectives import Objective, make_objective
from trainables.reporting import Reporter, current_reporter
from trainables.tasks import task_of

log = logging.getLogger(__name__)


@dataclass
class TrialData:
    index: ImageIndex
    images: dict[str, np.ndarray]  # split -> uint8 (N, S, S, C), memory-mapped; C = 1 or 3
    labels: dict[str, np.ndarray]  # split -> int64 (N,) classes or float32 (N, L) labels
    train_sample: np.ndarray  # indices of the training images an epoch visits


def load_data(cfg: TrainConfig) -> TrialData:
    """Read and validate the dataset, then open (building if needed) the node's image cache."""
    if not cfg.data:
        raise ConfigError("no dataset: pass --data DIR (or --demo), or set data=DIR")
    index = read_dataset(cfg.dataset, cfg.data, options=read_options(cfg))
    index.raise_if_problems()
    check_task(cfg, index)
    cached = build_cache(index, size=cfg.image_size, preprocess=cfg.preprocess,
                         root=cache_root(cfg.cache_dir), dataset=cfg.dataset)
    labels = {s: index.targets(s) for s in cached.images}
    n_train = len(labels["train"])
    sample = (np.random.default_rng(cfg.bootstrap).integers(0, n_train, n_train)
              if cfg.bootstrap >= 0 else np.arange(n_train))  # bagging: drawn with replacement
    return TrialData(index, cached.images, labels, sample)


def check_task(cfg: TrainConfig, index: ImageIndex) -> None:
    """The data's labels fit the config's task and class count (the CLIs set num_classes from
    the data; a hand-written config may not)."""
    multilabel = index.task == "multilabel"
    if multilabel != (cfg.task == "multilabel"):
        what = f"multi-label data ({index.num_classes} labels)" if multilabel else \
            f"single-label data ({index.num_classes} classes)"
        hint = ("rfmid_multilabel, with --set dataset=medmnist_npz --set preprocess=none"
                if multilabel and index.source == "npz" else "python -m search.list")
        raise ConfigError(f"{cfg.data} holds {what}, but the config's task is {cfg.task}: use "
                          f"an experiment for {index.task} data ({hint})")
    if index.channels == 1 and cfg.preprocess != "none":
        raise ConfigError(f"preprocess={cfg.preprocess!r} is for colour fundus photos; "
                          f"{cfg.data} is grayscale: use preprocess=none")
    if cfg.num_classes != index.num_classes:
        raise ConfigError(f"num_classes={cfg.num_classes}, but {cfg.data} has "
                          f"{index.num_classes}: {', '.join(index.class_names[:8])}"
                          f"{', ...' if index.num_classes > 8 else ''} (drop num_classes from the "
                          "config: the CLIs take it from the data)")
    if multilabel and index.labelled("val") and not len(scorable_labels(index.targets("val"))):
        raise ConfigError(f"{cfg.data}: no label has both a positive and a negative image in "
                          "the validation split, so AUROC is undefined for every label")


def read_options(cfg: TrainConfig) -> ReadOptions:
    return ReadOptions(val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                       split_seed=cfg.split_seed)


def resolve_data(cfg: TrainConfig) -> tuple[TrainConfig, ImageIndex]:
    """The config with `num_classes` taken from its data, and the data's index (validated)."""
    if not cfg.data:
        raise ConfigError("no dataset: pass --data DIR (or --demo), or set data=DIR")
    index = read_dataset(cfg.dataset, cfg.data, options=read_options(cfg))
    index.raise_if_problems()
    return cfg.replace(num_classes=index.num_classes), index


def train(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: build data and model from `config`, train, report."""
    cfg = TrainConfig.from_dict(config)
    task = task_of(cfg.task)
    fit(cfg, current_reporter(task.metric, task.mode))


def fit(cfg: TrainConfig, reporter: Reporter, *, until_epoch: int = 0,
        data: TrialData | None = None) -> FundusClassifier:
    """Train `cfg.epochs` epochs (continuing from the reporter's checkpoint if it has one).

    `until_epoch` stops after that epoch with the schedule of the full run: how a trial that
    ASHA stopped early is reproduced. `data` is `load_data(cfg)` when the caller has it.
    """
    runtime = plan_runtime(cfg)
    data = load_data(cfg) if data is None else data
    torch.manual_seed(cfg.seed)  # the new head and attention layers
    model = build_model(cfg).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_cfg = timm.data.resolve_model_data_config(model.backbone)
    mean, std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    train_aug = BatchAugment(cfg.augment, mean, std, runtime.device, runtime.channels_last)
    eval_aug = BatchAugment("none", mean, std, runtime.device, runtime.channels_last)

    objective = make_objective(cfg, data.labels["train"][data.train_sample], runtime.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = _steps_per_epoch(cfg, len(data.train_sample))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, total=steps * cfg.epochs, warmup=round(cfg.warmup_epochs * steps),
        kind=cfg.scheduler))
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp)

    config = cfg.to_dict()
    reporter.start(config)
    restored = reporter.restore(functools.partial(
        load_checkpoint, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler))
    start = int(restored["epoch"]) if restored else 0
    history: list[dict[str, float]] = list(restored["history"]) if restored else []
    if restored:
        log.info("resuming at epoch %d of %d", start + 1, cfg.epochs)

    for epoch in range(start, min(cfg.epochs, until_epoch or cfg.epochs)):
        row = _epoch(model, data, cfg, epoch, optimizer, scheduler, scaler, train_aug,
                     eval_aug, runtime, objective)
        history.append(row)
        state = {"epoch": epoch + 1, "history": list(history)}
        reporter.report(row, functools.partial(
            save_checkpoint, model=model, optimizer=optimizer, scheduler=scheduler,
            scaler=scaler, state=state, config=config))
    return model


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

