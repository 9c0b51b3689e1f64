"""Run by test_trainable: a local run's reports, SIGKILLed before its k-th file operation of
epoch 2 (writes, renames, deletions, copies), for k = 1, 2, ... until a run gets through; one
forked child per k (torch is imported once). Prints {k: "killed" | "done"} as JSON."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from trainables.model.timm_import import timm  # noqa: F401 (imported once, before the forks)
from trainables.train import checkpoint
from trainables.train.reporting import LocalReporter


def killing_before(k: int) -> list[int]:
    """Every file operation a report makes counts; the k-th kills the process first. Returns
    the count: set it past k to stop."""
    calls = [0]

    def wrap(owner: Any, name: str) -> None:
        real: Callable[..., Any] = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        setattr(owner, name, counted)

    for owner, name in ((shutil, "rmtree"), (shutil, "copytree"), (os, "replace"),
                        (Path, "rename"), (Path, "write_text"), (safetensors.torch, "save_file"),
                        (checkpoint, "save_file")):
        wrap(owner, name)
    return calls


def three_epochs(out: Path, k: int) -> None:
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    reporter = LocalReporter(out, metric="val/kappa", mode="max")
    reporter.start({"epochs": 3, "model": "linear"})
    calls = [0]
    for epoch in (1, 2, 3):
        if epoch == 2:
            calls = killing_before(k)
        if epoch == 3:  # epoch 2's operations only
            calls[0] = k
        model(torch.ones(1, 4)).sum().backward()
        optimizer.step()

        def write(folder: Path, epoch: int = epoch) -> None:
            checkpoint.save_checkpoint(folder, model=model, optimizer=optimizer,
                                       scheduler=scheduler, scaler=scaler,
                                       state={"epoch": epoch, "history": reporter.history},
                                       config={"model": "linear"})

        reporter.report({"epoch": epoch, "val/kappa": epoch / 10}, write)


def main(root: Path) -> None:
    outcome: dict[int, str] = {}
    for k in range(1, 100):
        pid = os.fork()
        if pid == 0:
            three_epochs(root / str(k), k)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        outcome[k] = "killed" if killed else "done"
        if not killed:
            break
    print(json.dumps(outcome))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
