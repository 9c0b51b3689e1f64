"""Grad-CAM (pytorch-grad-cam) on the right layer of each architecture, and how well the maps
find the lesions: the share of CAM energy inside the lesion mask and a pointing-game hit rate,
each beside a uniform map's."""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy.ndimage import binary_dilation
from torch import nn

from trainables.data.datasets import ImageIndex
from trainables.data.images import load_mask
from trainables.model.models import FundusClassifier
from trainables.progress import Progress


def target_layer(model: FundusClassifier) -> nn.Module:
    """The last convolutional stage of the backbone: the feature map the head (pooling or
    self-attention) reads, so the CAM sees what the classifier sees."""
    backbone = model.backbone
    for name in ("layer4", "bn2", "conv_head", "stages", "features", "blocks"):
        layer = getattr(backbone, name, None)
        if layer is None:
            continue
        return layer[-1] if isinstance(layer, nn.Sequential) else layer
    raise ValueError(f"no Grad-CAM target layer known for {type(backbone).__name__}")


def grad_cam(model: FundusClassifier, inputs: torch.Tensor, classes: list[int]) -> np.ndarray:
    """CAMs (B, H, W) in [0, 1] at the input's size, each for its class in `classes`."""
    model.eval()
    # a model trained with a frozen backbone (unfreeze_depth 0) builds no graph through it:
    # the target layer's activations would get no gradient
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        with GradCAM(model=model, target_layers=[target_layer(model)]) as cam:
            return cam(input_tensor=inputs, targets=[ClassifierOutputTarget(c) for c in classes])
    finally:
        for p in frozen:
            p.requires_grad_(False)


def localisation(cams: np.ndarray, masks: np.ndarray, tolerance: int = 2) -> dict[str, float]:
    """Energy share inside the mask and pointing-game hits, for images with lesions, against
    a uniform map (whose energy share is the mask's area; whose pointing hit chance is the
    area of the mask grown by `tolerance` pixels)."""
    keep = masks.reshape(len(masks), -1).any(axis=1)
    cams, masks = cams[keep], masks[keep]
    if not len(cams):
        return {"images": 0}
    energy, uniform_energy, hits, uniform_hits = [], [], [], []
    for cam, mask in zip(cams, masks, strict=True):
        grown = binary_dilation(mask, iterations=tolerance) if tolerance else mask
        energy.append(float((cam * mask).sum() / max(cam.sum(), 1e-12)))
        uniform_energy.append(float(mask.mean()))
        y, x = np.unravel_index(int(cam.argmax()), cam.shape)
        hits.append(float(grown[y, x]))
        uniform_hits.append(float(grown.mean()))
    return {"images": len(cams), "energy_in_mask": float(np.mean(energy)),
            "energy_uniform": float(np.mean(uniform_energy)),
            "pointing_hit_rate": float(np.mean(hits)),
            "pointing_uniform": float(np.mean(uniform_hits))}


def normalise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, H, W, C) cache images to the model's normalised (B, 3, H, W) input (one
    grayscale channel repeated to three)."""
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def localise_split(model: FundusClassifier, index: ImageIndex, images: np.ndarray, *,
                   split: str, size: int, preprocess: str, mean: tuple[float, ...],
                   std: tuple[float, ...], classes: list[int],
                   batch: int = 16) -> dict[str, float] | None:
    """Localisation scores of Grad-CAM (for `classes`, one per image) on a split whose images
    have lesion masks in `<root>/masks/<image_id>.png` (the demo's); None without masks."""
    rows = index.split(split)
    mask_dir = index.root / "masks"
    if not mask_dir.is_dir():
        return None
    cams, masks = [], []
    with Progress(len(rows), "Grad-CAM localisation") as progress:
        for start in range(0, len(rows), batch):
            part = range(start, min(start + batch, len(rows)))
            cams.append(grad_cam(model, normalise(images[list(part)], mean, std),
                                 [classes[i] for i in part]))
            masks += [load_mask(str(mask_dir / f"{rows['image_id'][i]}.png"), rows["path"][i],
                                size, preprocess) for i in part]
            progress.update(len(part))
    return localisation(np.concatenate(cams), np.stack(masks))
