"""What every section of `python -m search.bench` shares: one measurement in a fresh process
(its own CPU time and peak memory), a search's environment, a trial's data keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from search.cli import EXIT_USAGE
from trainables.errors import ConfigError


def run_module(what: str, argv: list[str], env: dict[str, str]) -> str:
    """`python -m ARGV` in a fresh process with `env`; its stdout, or a RuntimeError naming
    `what` with the end of what it said."""
    done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[-3000:]  # the CLI's line is on stdout
        last = said.splitlines()[-1] if said else ""
        if done.returncode == EXIT_USAGE and last.startswith("error: "):  # a user's mistake,
            raise ConfigError(f"{what}: {last.removeprefix('error: ')}")  # said in one line
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{said}")
    return done.stdout


def measure(name: str, params: dict[str, Any], **env: str) -> dict[str, Any]:
    """Run one measurement in a fresh process; its last stdout line is the JSON result."""
    out = run_module(f"bench {name}", ["search.bench", "--measure", name,
                                       "--params", json.dumps(params)],
                     {**os.environ, "RAY_AIR_NEW_OUTPUT": "0", **env})
    return json.loads(out.strip().splitlines()[-1])


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
