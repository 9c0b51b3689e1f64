"""Models: weight sources, unfreeze depth, the attention head, gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata

from trainables.errors import ConfigError, WeightsError
from trainables.model.models import build_model, create_backbone
from trainables.train.config import TrainConfig


def config(**changes: object) -> TrainConfig:
    return TrainConfig.from_dict({"model": "resnet18", "weights": "none", "image_size": 64,
                                  **changes})


def two_steps(model: torch.nn.Module, size: int = 64) -> dict[str, torch.Tensor]:
    """Snapshot the state, take two SGD steps on random data, return the snapshot.

    Two, because timm zero-initialises the last BatchNorm of each residual block: in the
    first step no gradient reaches the convolutions of that branch.
    """
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(0)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, size, size)),
                                                 torch.tensor([0, 1, 2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before


def test_bundled_model_classifies_chelsea_as_a_cat() -> None:
    backbone = create_backbone("efficientnet_lite0", "bundled")
    classifier = timm.create_model("efficientnet_lite0", pretrained=False)
    # the ImageNet classifier is dropped from the backbone; read it back to test the weights
    from trainables.model.weights import bundled_weights_path, read_state_dict
    state = read_state_dict(bundled_weights_path())
    classifier.load_state_dict({**backbone.state_dict(), "classifier.weight": state["_fc.weight"],
                                "classifier.bias": state["_fc.bias"]}, strict=False)
    cfg = timm.data.resolve_model_data_config(classifier)
    image = Image.fromarray(skdata.chelsea()).resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
    x = (x - torch.tensor(cfg["mean"]).view(3, 1, 1)) / torch.tensor(cfg["std"]).view(3, 1, 1)
    with torch.no_grad():
        top = classifier.eval()(x[None]).softmax(1)[0].argmax().item()
    assert 281 <= top <= 285  # ImageNet's domestic cats


def test_bundled_needs_its_architecture() -> None:
    with pytest.raises(ConfigError, match="set model=efficientnet_lite0"):
        create_backbone("resnet18", "bundled")


def test_imagenet_hub_failure_is_one_clear_error() -> None:
    # the hub is unreachable on this machine (HF_HUB_OFFLINE=1 in conftest makes it fail fast)
    with pytest.raises(WeightsError, match="weights=bundled"):
        create_backbone("resnet18", "imagenet")


def test_unknown_model_lists_tested_ones() -> None:
    with pytest.raises(ConfigError, match="tested: resnet18, resnet34"):
        create_backbone("resnet_does_not_exist", "none")


def test_torchvision_resnet_file_loads_by_name(tmp_path: Path) -> None:
    tv = torchvision.models.resnet18(num_classes=1000).eval()
    path = tmp_path / "resnet18_tv.pth"
    torch.save(tv.state_dict(), path)
    backbone = create_backbone("resnet18", str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = backbone.forward_features(x).mean((2, 3))
        theirs = torch.nn.Sequential(*list(tv.children())[:-1])(x).flatten(1)
    torch.testing.assert_close(ours, theirs)


def test_torchvision_efficientnet_file_is_remapped_by_order(tmp_path: Path) -> None:
    tv = torchvision.models.efficientnet_b0(num_classes=10)
    path = tmp_path / "effnet_tv.safetensors"
    save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(path))
    backbone = create_backbone("efficientnet_b0", str(path))
    assert torch.equal(backbone.conv_stem.weight, tv.features[0][0].weight)
    assert torch.equal(backbone.bn2.running_var, tv.features[8][1].running_var)


def test_a_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r34.pt"
    torch.save(timm.create_model("resnet34").state_dict(), path)
    with pytest.raises(WeightsError, match="same architecture"):
        create_backbone("resnet18", str(path))


def test_a_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": torchvision.models.resnet18()}, path)  # a module, not tensors
    with pytest.raises(WeightsError, match="cannot be read"):
        create_backbone("resnet18", str(path))


@pytest.mark.parametrize("model,stages", [("resnet18", 5), ("efficientnet_b0", 8)])
@pytest.mark.parametrize("depth", [0, 2, "all"])
def test_unfreeze_depth_trains_exactly_its_stages(model: str, stages: int,
                                                  depth: int | str) -> None:
    net = build_model(config(model=model, unfreeze_depth=depth))
    assert len(net.stages) == stages
    before = two_steps(net)
    after = net.state_dict()
    k = stages if depth == "all" else int(depth)
    for i, names in enumerate(net.stages):
        trains = i >= stages - k
        for name in names:
            changed = not torch.equal(before[f"backbone.{name}"], after[f"backbone.{name}"])
            assert changed == trains, (name, i, depth)
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    # BatchNorm running statistics move only in trained stages
    for name, m in net.backbone.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            moved = not torch.equal(before[f"backbone.{name}.running_mean"], m.running_mean)
            assert moved == m.weight.requires_grad, name


def test_unfreeze_depth_beyond_the_stages_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"use 0\.\.5 or 'all'"):
        build_model(config(unfreeze_depth=6))


def test_attention_flags_change_the_module_and_its_output() -> None:
    outputs, modules = {}, {}
    x = torch.randn(2, 3, 64, 64)
    variants = {"off": {"attention": False},
                "on": {"attention": True},
                "no_norm": {"attention": True, "layer_norm": False},
                "no_residual": {"attention": True, "residual": False},
                "heads8": {"attention": True, "heads": 8}}
    for name, flags in variants.items():
        torch.manual_seed(0)
        net = build_model(config(**flags)).eval()
        modules[name] = net.attention
        with torch.no_grad():
            outputs[name] = net(x)
    assert modules["off"] is None
    assert isinstance(modules["on"].norm, torch.nn.LayerNorm)
    assert isinstance(modules["no_norm"].norm, torch.nn.Identity)
    assert modules["no_residual"].residual is False and modules["on"].residual is True
    assert modules["heads8"].attn.num_heads == 8
    for name in variants:
        if name != "on":
            assert not torch.allclose(outputs[name], outputs["on"]), name


def test_attention_heads_must_divide_channels() -> None:
    with pytest.raises(ConfigError, match="heads=3 must divide"):
        build_model(config(attention=True, heads=3))


def test_attention_follows_another_input_size() -> None:
    net = build_model(config(attention=True)).eval()  # position grid for 64 px: 2x2
    with torch.no_grad():
        assert net(torch.randn(1, 3, 128, 128)).shape == (1, 5)


@pytest.mark.parametrize("model", ["resnet18", "resnet34", "efficientnet_b0", "efficientnet_lite0"])
@pytest.mark.parametrize("attention", [False, True])
def test_backward_reaches_every_trainable_parameter(model: str, attention: bool) -> None:
    net = build_model(config(model=model, attention=attention, unfreeze_depth="all"))
    net.train()
    loss = torch.nn.functional.cross_entropy(net(torch.randn(2, 3, 64, 64)),
                                             torch.tensor([0, 4]))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


def test_medtunes_own_model_file_is_read_by_name_head_and_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One model file (checkpoints, members, stage 1): `weights=PATH` of it loads the whole
    backbone by name, and the head where the classes and the head agree. The order matching
    of a foreign file misordered bn1 and conv1, and an attention head made the counts differ."""
    import json

    from safetensors import safe_open

    from trainables.model.model_file import FORMAT, save_model
    from trainables.model.models import load_model

    head = {"attention": True, "heads": 4, "layer_norm": True, "residual": True}
    source = build_model(config(num_classes=5, **head))
    two_steps(source)  # its own numbers, not a fresh model's
    path = tmp_path / "member" / "model.safetensors"
    path.parent.mkdir()
    save_model(path, source, config(num_classes=5, **head).to_dict(), ["a", "b", "c", "d", "e"])
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert (meta["format"], meta["model"], meta["num_classes"], meta["image_size"]) == \
        (FORMAT, "resnet18", "5", "64")
    assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406])  # timm's ImageNet
    assert json.loads(meta["classes"]) == ["a", "b", "c", "d", "e"]
    assert json.loads(meta["head"])["heads"] == 4

    monkeypatch.setenv("HOME", str(tmp_path))  # a path from the home folder, as users write it
    same = build_model(config(weights="~/member/model.safetensors", num_classes=5, **head))
    for k, v in source.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    other = build_model(config(weights=str(path), num_classes=3, **head))  # other classes
    assert torch.equal(other.backbone.conv1.weight, source.backbone.conv1.weight)
    assert torch.equal(other.backbone.bn1.running_var, source.backbone.bn1.running_var)
    assert other.classifier.weight.shape == (3, 512)
    plain = build_model(config(weights=str(path), num_classes=5))  # another head
    assert torch.equal(plain.backbone.layer4[1].bn2.weight, source.backbone.layer4[1].bn2.weight)
    with pytest.raises(ConfigError, match=r"holds a medtune resnet18 model .* set model=resnet18"):
        build_model(config(weights=str(path), model="resnet34"))
    # an older medtune's file held its config alone: read the same way
    older = tmp_path / "older.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(older),
              metadata={"config": json.dumps(config(num_classes=5, **head).to_dict())})
    rebuilt, _ = load_model(older)
    assert torch.equal(rebuilt.attention.pos_embed, source.attention.pos_embed)
    assert not rebuilt.training
