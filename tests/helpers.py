"""Reusable test helpers: generated data and tiny configs (no mocks: real files, real models)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from trainables.config import TrainConfig
from trainables.demo import DemoSpec, write_deepdrid_demo

TINY_SPEC = DemoSpec(train_patients=6, val_patients=3, test_patients=2, width=170, height=160,
                     seed=0)


def make_demo(out: Path, layout: str, spec: DemoSpec = TINY_SPEC) -> Path:
    return write_deepdrid_demo(out, layout=layout, spec=spec)


def tiny_config(data: Path, **changes: Any) -> TrainConfig:
    """resnet18 from scratch at 64 px, two small batches: a trial in a second or two."""
    values: dict[str, Any] = {
        "data": str(data), "model": "resnet18", "weights": "none", "image_size": 64,
        "batch_size": 8, "epochs": 2, "lr": 1e-3, "max_train_batches": 2, "augment": "flip",
        "device": "cpu",
    }
    return TrainConfig.from_dict({**values, **changes})


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
