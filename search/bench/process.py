"""What every section of `python -m search.bench` shares: one measurement in a fresh process
(its own CPU time and peak memory), a search's environment, a trial's data keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def measure(name: str, params: dict[str, Any], **env: str) -> dict[str, Any]:
    """Run one measurement in a fresh process; its last stdout line is the JSON result."""
    done = subprocess.run([sys.executable, "-m", "search.bench", "--measure", name,
                           "--params", json.dumps(params)], capture_output=True, text=True,
                          env={**os.environ, "RAY_AIR_NEW_OUTPUT": "0", **env})
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[-3000:]  # the CLI's line is on stdout
        raise RuntimeError(f"bench {name} failed (exit {done.returncode}):\n{said}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def quiet_search_env(*, wandb: bool) -> None:
    """A search run by the bench: Ray's old console output off, W&B offline."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    if wandb:
        os.environ["WANDB_MODE"] = "offline"
        os.environ.pop("WANDB_API_KEY", None)


def data_keys(p: dict[str, Any]) -> dict[str, Any]:
    """The trial config's data keys, the class count taken from the data."""
    from trainables.data.formats import read_dataset

    index = read_dataset(p["dataset"], p["data"])
    return {"data": p["data"], "dataset": p["dataset"], "task": p["task"],
            "preprocess": p["preprocess"], "num_classes": index.num_classes}
