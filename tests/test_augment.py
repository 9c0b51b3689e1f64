"""Batched augmentation on tensors: seeded, shape-preserving, each op doing what it says."""

from __future__ import annotations

import pytest
import torch

from trainables.augment import BatchAugment
from trainables.errors import ConfigError

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
