"""Batched augmentation on tensors: seeded, shape-preserving, each op doing what it says."""

from __future__ import annotations

import pytest
import torch

from trainables.errors import ConfigError
from trainables.train.augment import BatchAugment

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (6, 32, 32, 3), generator=g, dtype=torch.uint8)


def apply(policy: str, seed: int = 0) -> torch.Tensor:
    return BatchAugment(policy, MEAN, STD, torch.device("cpu"))(
        batch(), torch.Generator().manual_seed(seed))


def test_no_augmentation_only_normalises() -> None:
    x = batch()
    out = BatchAugment("flip+rotate", MEAN, STD, torch.device("cpu"))(x)  # no generator: eval
    expected = (x.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(apply("none"), expected)


@pytest.mark.parametrize("policy", ["flip", "rotate", "scale", "color", "flip+rotate+scale+color"])
def test_each_policy_is_seeded_and_changes_the_batch(policy: str) -> None:
    a, b, other = apply(policy, 0), apply(policy, 0), apply(policy, 1)
    assert a.shape == (6, 3, 32, 32)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, other)
    assert not torch.allclose(a, apply("none"))


def test_flip_is_a_mirror_image() -> None:
    plain, flipped = apply("none"), apply("flip")
    for p, f in zip(plain, flipped, strict=True):
        assert any(torch.equal(f, q) for q in (p, p.flip(2), p.flip(1), p.flip(1).flip(2)))


def test_colour_jitter_stays_in_range() -> None:
    out = apply("color") * 0.25 + 0.5
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_channels_last_output() -> None:
    out = BatchAugment("flip", MEAN, STD, torch.device("cpu"), channels_last=True)(
        batch(), torch.Generator().manual_seed(0))
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("policy", ["warp", "flip+flip", "flip,rotate", ""])
def test_unknown_policies_are_errors(policy: str) -> None:
    with pytest.raises(ConfigError, match="use 'none' or ops joined by"):
        BatchAugment(policy, MEAN, STD, torch.device("cpu"))


def reference(x: torch.Tensor, seed: int, gray_input: bool = False) -> torch.Tensor:
    """flip+rotate+color step by step, as the ops are defined: mirror the chosen images, then
    rotate, then brightness, contrast (about the image's mean), saturation (about its luma),
    clamp, normalise; the same random draws in the same order."""
    import math

    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    b = x.shape[0]
    x = x.permute(0, 3, 1, 2).float() / 255
    x = x.repeat(1, 3, 1, 1) if gray_input else x
    h, v = torch.rand(b, generator=g) < 0.5, torch.rand(b, generator=g) < 0.5
    x = torch.stack([img.flip(2) if hi else img for img, hi in zip(x, h, strict=True)])
    x = torch.stack([img.flip(1) if vi else img for img, vi in zip(x, v, strict=True)])
    angle = torch.rand(b, generator=g) * 2 * math.pi - math.pi
    theta = torch.stack([torch.stack([angle.cos(), -angle.sin(), torch.zeros(b)], 1),
                         torch.stack([angle.sin(), angle.cos(), torch.zeros(b)], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False),
                      align_corners=False)
    brightness, contrast, saturation = (
        (torch.rand(b, generator=g) * 0.4 + 0.8).view(b, 1, 1, 1) for _ in range(3))
    x = x * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    luma = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = ((x - luma) * saturation + luma).clamp(0, 1)
    return (x - 0.5) / 0.25


@pytest.mark.parametrize("channels", [3, 1], ids=["colour", "grayscale"])
def test_the_fused_augmentation_equals_the_ops_one_after_another(channels: int) -> None:
    x = batch()[..., :channels]
    for seed in range(3):
        out = BatchAugment("flip+rotate+color", MEAN, STD, torch.device("cpu"))(
            x, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out, reference(x, seed, gray_input=channels == 1),
                                   atol=1e-4, rtol=1e-4)
