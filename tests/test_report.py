"""Grad-CAM on every architecture, localisation scoring, and the report in headless Chromium."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.model.explain import grad_cam, localisation, target_layer
from trainables.model.models import build_model
from trainables.train.config import TrainConfig

# the layer the README names: a ResNet's layer4 (its last block), an EfficientNet's bn2
NAMED_LAYER = {"resnet18": lambda b: b.layer4[-1], "resnet34": lambda b: b.layer4[-1],
               "efficientnet_b0": lambda b: b.bn2, "efficientnet_lite0": lambda b: b.bn2}


@pytest.mark.parametrize("model", ["resnet18", "resnet34", "efficientnet_b0", "efficientnet_lite0"])
@pytest.mark.parametrize("attention", [False, True])
def test_grad_cam_maps_have_the_inputs_size(model: str, attention: bool) -> None:
    torch.manual_seed(0)
    net = build_model(TrainConfig(model=model, weights="none", image_size=96, attention=attention))
    layer = target_layer(net)
    assert layer is NAMED_LAYER[model](net.backbone)
    # and its output is the feature map the head reads (pooling or self-attention)
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        features = net.eval().backbone.forward_features(x)
    hook.remove()
    assert len(seen) == 1 and torch.equal(seen[0], features)
    cams = grad_cam(net, torch.randn(3, 3, 96, 96), [0, 2, 4])
    assert cams.shape == (3, 96, 96)
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1 + 1e-6


def test_grad_cam_works_on_a_model_trained_with_a_frozen_backbone() -> None:
    net = build_model(TrainConfig(model="resnet18", weights="none", image_size=64,
                                  unfreeze_depth=0))
    assert not any(p.requires_grad for p in net.backbone.parameters())
    cams = grad_cam(net, torch.randn(2, 3, 64, 64), [1, 3])
    assert cams.shape == (2, 64, 64) and np.isfinite(cams).all() and cams.max() > 0
    assert not any(p.requires_grad for p in net.backbone.parameters())  # left as it was


def test_localisation_scores_against_a_uniform_map() -> None:
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 10:14, 10:14] = True  # image 2 has no lesion: left out
    cams = np.zeros((3, 20, 20))
    cams[0, 3, 3] = 1.0  # on the lesion
    cams[1, 0, 19] = 1.0  # far away
    scores = localisation(cams, masks, tolerance=0)
    assert scores["images"] == 2
    assert scores["energy_in_mask"] == pytest.approx(0.5)
    assert scores["energy_uniform"] == pytest.approx(16 / 400)
    assert scores["pointing_hit_rate"] == pytest.approx(0.5)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_in_chromium(report: Path, tmp_path: Path) -> dict:
    """Load the report in headless Chromium; return its images (loaded or not) and headings."""
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    harness = tmp_path / "check.html"
    template = (Path(__file__).parent / "report_check.html").read_text()
    harness.write_text(template.replace("REPORT_URL", html.escape(report.resolve().as_uri())))
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
         harness.as_uri()], capture_output=True, text=True, timeout=120)
    dom = result.stdout
    start = dom.index('<pre id="result">') + len('<pre id="result">')
    return json.loads(html.unescape(dom[start:dom.index("</pre>", start)]))


def test_report_opens_in_chromium_with_every_image(tmp_path: Path) -> None:
    report = tmp_path / "run" / "report"
    (report / "gradcam").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 0, 0)).save(report / "gradcam" / "a.png")
    (report / "index.html").write_text('<h2>x</h2><img src="gradcam/a.png"><img src="gone.png">')
    seen = open_in_chromium(report / "index.html", tmp_path)
    # the harness itself can tell a loaded image from a missing one
    assert seen["images"] == [{"src": "gradcam/a.png", "loaded": True},
                              {"src": "gone.png", "loaded": False}]
