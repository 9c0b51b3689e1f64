"""Augmentation on batched tensors on the trainable's device (no per-image Python work).

Random parameters are drawn on the CPU from a seeded `torch.Generator` and moved to the
device, so a seed gives the same augmentation on CPU and GPU. Rotation and scale share one
`affine_grid` + `grid_sample` pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainables.config import augment_ops


class BatchAugment:
    """uint8 (B, H, W, C) batches to normalised float (B, 3, H, W), augmented when training.

    Grayscale batches (C = 1, as the cache stores them) are repeated to three channels for the
    ImageNet weights; colour augmentation on them changes brightness and contrast only."""

    def __init__(self, policy: str, mean: tuple[float, ...], std: tuple[float, ...],
                 device: torch.device, channels_last: bool = False) -> None:
        self.ops = augment_ops(policy)
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if generator is not None and self.ops:
            x = self.augment(x, generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return (torch.rand(b, generator=g) * (hi - lo) + lo).to(self.device)

        if "flip" in self.ops:  # fundus photos have no preferred left/right or up/down
            h = (torch.rand(b, generator=g) < 0.5).to(self.device).view(b, 1, 1, 1)
            v = (torch.rand(b, generator=g) < 0.5).to(self.device).view(b, 1, 1, 1)
            x = torch.where(h, x.flip(3), x)
            x = torch.where(v, x.flip(2), x)
        if {"rotate", "tilt", "scale"} & set(self.ops):
            turn = math.pi if "rotate" in self.ops else math.pi / 12 if "tilt" in self.ops else 0.0
            angle = uniform(-turn, turn) if turn else torch.zeros(b, device=self.device)
            zoom = uniform(0.9, 1.15) if "scale" in self.ops else torch.ones(b, device=self.device)
            shift = (uniform(-0.05, 0.05), uniform(-0.05, 0.05)) if "scale" in self.ops else (
                torch.zeros(b, device=self.device), torch.zeros(b, device=self.device))
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1),
                                 torch.stack([sin, cos, shift[1]], 1)], 1)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if "color" in self.ops:
            brightness = uniform(0.8, 1.2).view(b, 1, 1, 1)
            contrast = uniform(0.8, 1.2).view(b, 1, 1, 1)
            saturation = uniform(0.8, 1.2).view(b, 1, 1, 1)
            x = x * brightness
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast + mean
            gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
            x = (x - gray) * saturation + gray
            x = x.clamp_(0.0, 1.0)
        return x
