"""A small APTOS-format set and a stage-1 config on it, for the stage-1 tests."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainables.train.config import TrainConfig


def write_small_aptos(root: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(1)
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    with open(root / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id_code", "diagnosis"])
        for i in range(n):
            grade = i % 5
            image = rng.integers(0, 80, (48, 48, 3), dtype=np.uint8)
            image[12:36, 12:36, 0] += np.uint8(30 * grade)  # learnable
            Image.fromarray(image).save(root / "train_images" / f"{i:06x}.png")
            w.writerow([f"{i:06x}", grade])
    return root


def stage1_cfg(aptos: Path, tmp: Path, **changes: Any) -> TrainConfig:
    values = {"data": str(tmp / "unused"), "stage1_data": str(aptos), "stage1_epochs": 1,
              "model": "resnet18", "weights": "none", "image_size": 32, "batch_size": 8,
              "preprocess": "none", "device": "cpu", "cache_dir": str(tmp / "cache"),
              "stage1_store": str(tmp / "store")}
    return TrainConfig.from_dict({**values, **changes})
