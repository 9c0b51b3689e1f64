"""A trial's data: the dataset read and validated, the task checked against it, and the node's
image cache opened (built if needed). Light on purpose (numpy, pandas, scikit-learn; no torch,
no timm): the search's driver checks the data before any trial starts and should not pay for
the model code it never runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainables.data.cache import build_cache, cache_root
from trainables.data.datasets import ImageIndex, ReadOptions
from trainables.data.formats import read_dataset
from trainables.errors import ConfigError
from trainables.tasks import task_of
from trainables.tasks.metrics import scorable_labels
from trainables.train.config import TrainConfig


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
    multilabel = task_of(index.task).per_label
    if multilabel != task_of(cfg.task).per_label:
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
