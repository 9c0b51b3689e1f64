"""End to end through the README's own command (slow: a minute of CPU training)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_training_beats_chance_clearly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "search.train", "deepdrid_finetune", "--demo",
                             "--epochs", "5", "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    history = json.loads((out / "metrics.json").read_text())
    assert len(history) == 5
    best = max(history, key=lambda h: h["val/kappa"])
    # chance: QWK 0, accuracy 0.31 (the largest grade's share of the validation split)
    assert best["val/kappa"] > 0.6
    assert best["val/accuracy"] > 0.5
    assert history[-1]["train/loss"] < history[0]["train/loss"]
