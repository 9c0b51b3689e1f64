"""Augmentation on batched tensors on the trainable's device (no per-image Python work).

Random parameters are drawn on the CPU from a seeded `torch.Generator` and moved to the
device, so a seed gives the same augmentation on CPU and GPU. Rotation and scale share one
`affine_grid` + `grid_sample` pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainables.train.config import augment_ops


class BatchAugment:
    """uint8 (B, H, W, C) batches to normalised float (B, 3, H, W), augmented when training.

    Grayscale batches (C = 1, as the cache stores them) are repeated to three channels for the
    ImageNet weights; colour augmentation on them changes brightness and contrast only.

    The work is a few passes over the batch (`python -m search.bench input`): the values stay
    in 0..255 until one multiply-add normalises them; flips are folded into the rotation's
    sampling grid when there is one (mirroring the grid samples the mirror image); brightness,
    contrast and saturation are one multiply-add, as the three compose to
    S*C*B*x + (1-S)*C*B*gray(x) + (1-C)*B*mean(x) (gray's weights sum to 1)."""

    GRAY = (0.299, 0.587, 0.114)

    def __init__(self, policy: str, mean: tuple[float, ...], std: tuple[float, ...],
                 device: torch.device, channels_last: bool = False) -> None:
        self.ops = augment_ops(policy)
        self.device = device
        mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t  # from 0..255
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._base_grids: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        b, h, w, c = batch.shape  # one pass: the layout change and the cast together
        x = torch.empty((b, c, h, w), dtype=torch.float32, device=self.device)
        x.copy_(batch.permute(0, 3, 1, 2))
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if generator is not None and self.ops:
            x = self.augment(x, generator)
        return torch.addcmul(self.shift, x, self.scale).contiguous(memory_format=self.memory_format)

    def grid(self, theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """`F.affine_grid(theta, (B, C, h, w), align_corners=False)` from a base grid kept per
        size (pixel centres in [-1, 1], and ones): one batched matrix product."""
        base = self._base_grids.get((h, w))
        if base is None:
            xs = (torch.arange(w, device=self.device, dtype=torch.float32) * 2 + 1) / w - 1
            ys = (torch.arange(h, device=self.device, dtype=torch.float32) * 2 + 1) / h - 1
            base = torch.stack([xs.expand(h, w), ys.view(h, 1).expand(h, w),
                                torch.ones(h, w, device=self.device)], -1).view(1, h * w, 3)
            self._base_grids[(h, w)] = base
        return torch.matmul(base, theta.transpose(1, 2)).view(theta.shape[0], h, w, 2)

    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Augment 0..255 float images (B, 3, H, W); the random draws, in order: flips,
        rotation, scale and shift, colour (a seed gives what it always gave)."""
        b = x.shape[0]
        draws = self.draw(b, g)
        if "theta" in draws:
            grid = self.grid(draws["theta"], x.shape[2], x.shape[3])
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        elif "flips" in draws:
            h, v = (draws["flips"][:, i].view(b, 1, 1, 1) > 0.5 for i in (0, 1))
            x = torch.where(h, x.flip(3), x)
            x = torch.where(v, x.flip(2), x)
        if "color" in draws:
            brightness, contrast, saturation = (draws["color"][:, i].view(b, 1, 1, 1)
                                                for i in range(3))
            cb = contrast * brightness
            w = self.GRAY
            gray = (x[:, 0:1] * w[0]).add_(x[:, 1:2], alpha=w[1]).add_(x[:, 2:3], alpha=w[2])
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            rest = torch.addcmul(mean * ((1.0 - contrast) * brightness), gray,
                                 (1.0 - saturation) * cb)
            x = torch.addcmul(rest, x, saturation * cb).clamp_(0.0, 255.0)
        return x

    def draw(self, b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        """The batch's random parameters, drawn on the CPU and sent to the device in one copy
        that does not wait: a plain `.to(cuda)` of a CPU tensor waits for every queued kernel,
        which left the GPU idle while the next step was being queued (resnet18 on an H200: 16%
        below the model alone; `python -m search.bench limit --gpu`)."""
        def uniform(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(b, generator=g) * (hi - lo) + lo

        out: dict[str, torch.Tensor] = {}
        flips = None
        if "flip" in self.ops:  # fundus photos have no preferred left/right or up/down
            flips = torch.stack([torch.rand(b, generator=g) < 0.5,
                                 torch.rand(b, generator=g) < 0.5], 1).float()
            out["flips"] = flips
        if {"rotate", "tilt", "scale"} & set(self.ops):
            turn = math.pi if "rotate" in self.ops else math.pi / 12 if "tilt" in self.ops else 0.0
            angle = uniform(-turn, turn) if turn else torch.zeros(b)
            zoom = uniform(0.9, 1.15) if "scale" in self.ops else torch.ones(b)
            shift = (uniform(-0.05, 0.05), uniform(-0.05, 0.05)) if "scale" in self.ops else (
                torch.zeros(b), torch.zeros(b))
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1),
                                 torch.stack([sin, cos, shift[1]], 1)], 1)
            if flips is not None:  # flip, then rotate: the grid's input x (row 0), y (row 1) mirrored
                theta = theta * (1.0 - 2.0 * flips).view(b, 2, 1)
            out["theta"] = theta
        if "color" in self.ops:  # brightness, contrast, saturation
            out["color"] = torch.stack([uniform(0.8, 1.2) for _ in range(3)], 1)
        return self.send(out)

    def send(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CPU float tensors to the device: on a GPU, packed into one pinned buffer and copied
        without waiting (the allocator keeps the buffer until the copy is done)."""
        if self.device.type == "cpu" or not tensors:
            return tensors
        flat = torch.cat([t.reshape(-1) for t in tensors.values()]).pin_memory()
        moved = flat.to(self.device, non_blocking=True)
        out, start = {}, 0
        for name, t in tensors.items():
            out[name] = moved[start:start + t.numel()].view(t.shape)
            start += t.numel()
        return out
