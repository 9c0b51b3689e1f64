"""Checkpoints as a folder: `model.safetensors` (medtune's model file: weights, with the
resolved config and what the model is in its metadata, trainables.model.model_file),
`optimizer.safetensors` (optimizer tensors) and `state.json` (epoch, history, optimizer
hyperparameters, scheduler and AMP scaler state, config). No pickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trainables.model.model_file import save_model

MODEL_FILE, OPTIMIZER_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "state.json"


def save_checkpoint(folder: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                    state: dict[str, Any], config: dict[str, Any],
                    extra: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """`extra`: further weight files by name (a phased trial's best weights of its phase)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder / MODEL_FILE, model, config)  # medtune's model file
    for name, tensors in (extra or {}).items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / name))
    opt = optimizer.state_dict()
    tensors = {f"{idx}.{name}": value.detach().cpu().contiguous()
               for idx, entries in opt["state"].items() for name, value in entries.items()
               if isinstance(value, torch.Tensor)}
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    (folder / STATE_FILE).write_text(json.dumps({
        **state, "config": config, "param_groups": opt["param_groups"], "scheduler": sched,
        "scaler": scaler.state_dict(),
    }, indent=1, default=float))


def load_checkpoint(folder: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler,
                    scaler: torch.amp.GradScaler) -> dict[str, Any]:
    """Restore everything saved by `save_checkpoint`; returns the saved state dict."""
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(folder / MODEL_FILE), device=str(device)))
    state = json.loads((folder / STATE_FILE).read_text())
    entries: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(folder / OPTIMIZER_FILE), device=str(device)).items():
        idx, name = key.split(".", 1)
        entries.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": entries, "param_groups": state["param_groups"]})
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return state


def is_checkpoint(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE))
