"""medtune's one model file: a safetensors file of the whole model (`backbone.*` and the head)
whose metadata says what it is, written alike by checkpoints, the final step's members and
stage 1, and read alike by `weights=PATH`, `stage1_weights=PATH` and the report
(`trainables.model.models.load_model`).

Metadata (safetensors keeps strings): `format` ("medtune-model/1"), `config` (the trial config
as JSON: everything that rebuilds the model), and for a reader that does not parse it:
`model` (the timm architecture), `task`, `num_classes`, `image_size`, `preprocess`, `head`
(JSON: attention, heads, layer_norm, residual, dropout), `mean` and `std` (JSON: the
backbone's input normalisation) and, where the writer knows them, `classes` (JSON). A file of
an older medtune holds only `config`; it is read the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = "medtune-model/1"
HEAD_KEYS = ("attention", "heads", "layer_norm", "residual", "dropout")


def metadata(model: nn.Module, config: dict[str, Any],
             classes: list[str] | None = None) -> dict[str, str]:
    """The file's metadata for `model` trained with `config` (module docstring)."""
    from trainables.model.timm_import import timm

    backbone = getattr(model, "backbone", model)
    data = timm.data.resolve_model_data_config(backbone)
    meta = {"format": FORMAT, "config": json.dumps(config),
            "model": str(config.get("model")), "task": str(config.get("task")),
            "num_classes": str(config.get("num_classes")),
            "image_size": str(config.get("image_size")),
            "preprocess": str(config.get("preprocess")),
            "head": json.dumps({k: config.get(k) for k in HEAD_KEYS}),
            "mean": json.dumps(list(data["mean"])), "std": json.dumps(list(data["std"]))}
    if classes is not None:
        meta["classes"] = json.dumps(list(classes))
    return meta


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def model_bytes(model: nn.Module, config: dict[str, Any],
                classes: list[str] | None = None) -> bytes:
    """The model file's bytes (what a Ray task returns, or an object store is given)."""
    from safetensors.torch import save

    return save(_tensors(model), metadata=metadata(model, config, classes))


def save_model(path: Path, model: nn.Module, config: dict[str, Any],
               classes: list[str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file(_tensors(model), str(path), metadata=metadata(model, config, classes))


def read_metadata(path: Path) -> dict[str, Any] | None:
    """A model file's metadata, `config` parsed, when the file is medtune's (else None: a
    foreign weights file, or not a safetensors file)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # not a readable safetensors file: the weights reader says why
        return None
    if meta.get("format") != FORMAT and "config" not in meta:
        return None
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError):
        return None
    return {**meta, "config": config, "model": meta.get("model") or config.get("model")}


def load_fitting(model: nn.Module, tensors: dict[str, torch.Tensor], origin: str,
                 target: str) -> int:
    """Load every tensor of a medtune model file whose name and shape fit `model`: the whole
    backbone (else ConfigError, naming the first that does not fit), the head too where the
    classes and head agree. `origin`: "the weights in PATH" or the like; `target`: the
    architecture. Returns how many tensors were loaded."""
    own = model.state_dict()
    fitting = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k.startswith("backbone.") and k not in fitting]
    if missing:
        raise ConfigError(f"{origin} do not fit {target}: {len(missing)} backbone tensors "
                          f"missing or of another shape, e.g. {missing[0]}")
    model.load_state_dict(fitting, strict=False)
    head = [k for k in own if not k.startswith("backbone.")]
    log.info("%s: %d of %d tensors loaded (the head %s)", origin, len(fitting), len(own),
             "too" if all(k in fitting for k in head) else "new: other classes or head")
    return len(fitting)

