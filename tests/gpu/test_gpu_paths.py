"""The GPU code paths, run on a GPU: AMP (bf16; fp16 with the grad scaler) and channels_last
against fp32, the attention head, the prefetch thread, augmentation on the device against the
CPU's, a checkpoint written on the GPU read on a CPU, Grad-CAM on CUDA, a NaN loss named one
step late. Skipped where no CUDA device is visible; `cluster/gpu_check.sh` runs them on a GPU
machine (Ray, Optuna and wandb are not needed: none is imported here).

MEDTUNE_GPU_TESTS_ON_CPU=1 runs them with the CPU standing in for the GPU: their plumbing only,
for writing them on a machine without one (CPU against CPU proves nothing about a GPU).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import tiny_config
from trainables.data.trial_data import load_data
from trainables.errors import NonFiniteLossError
from trainables.model.models import build_model
from trainables.tasks.objectives import make_objective
from trainables.train.augment import BatchAugment
from trainables.train.config import TrainConfig
from trainables.train.loop import Runtime, batches, evaluate, plan_runtime, train_one_epoch
from trainables.train.reporting import LocalReporter
from trainables.train.trainable import fit

CUDA = torch.cuda.is_available()
STAND_IN = os.environ.get("MEDTUNE_GPU_TESTS_ON_CPU") == "1"
pytestmark = pytest.mark.skipif(
    not CUDA and not STAND_IN,
    reason="needs a CUDA GPU, and none is visible here (torch.cuda.is_available() is False): "
           "cluster/gpu_check.sh runs these on a GPU machine")
GPU = torch.device("cuda" if CUDA else "cpu")
DEVICE = "cuda" if CUDA else "cpu"  # a config's device
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# the mean training loss of an epoch (3 steps of resnet18 from the same weights on the same
# augmented batches) under AMP against fp32: within 5%. bf16 keeps 8 bits of mantissa and fp16
# 11, so single values differ in the third digit; three optimizer steps compound it a little.
AMP_LOSS_RTOL = 0.05


def one_epoch(cfg: TrainConfig, runtime: Runtime) -> dict[str, Any]:
    """One training epoch and an evaluation, from the seed's weights, under `runtime`."""
    data = load_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtypes: list[torch.dtype] = []
    model.classifier.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    augment = BatchAugment(cfg.augment, MEAN, STD, runtime.device, runtime.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.scales_loss)
    train = train_one_epoch(
        model, data.images["train"], data.labels["train"], cfg=cfg, epoch=0,
        optimizer=optimizer, scaler=scaler, augment=augment, runtime=runtime,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
        objective=make_objective(cfg, data.labels["train"], runtime.device))
    val, probs = evaluate(model, data.images["val"], data.labels["val"], cfg=cfg,
                          augment=BatchAugment("none", MEAN, STD, runtime.device,
                                               runtime.channels_last), runtime=runtime)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight
    return {**train, **val, "probs": probs, "scaler": scaler, "dtype": dtypes[0],
            "channels_last": conv.is_contiguous(memory_format=torch.channels_last)}


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_an_amp_channels_last_epoch_trains_like_fp32(course_demo: Path,
                                                     amp_dtype: torch.dtype) -> None:
    cfg = tiny_config(course_demo, max_train_batches=3, augment="flip+rotate+color")
    fp32 = one_epoch(cfg, Runtime(GPU, amp=False, channels_last=False))
    amp = one_epoch(cfg, Runtime(GPU, amp=True, channels_last=True, prefetch=True,
                                 amp_dtype=amp_dtype))
    assert fp32["dtype"] == torch.float32 and not fp32["channels_last"]
    assert amp["dtype"] == amp_dtype and amp["channels_last"]  # autocast ran, in that type
    for run in (fp32, amp):
        assert np.isfinite(run["train/loss"]) and np.isfinite(run["val/loss"])
        assert np.allclose(run["probs"].sum(1), 1, atol=1e-3)
    assert amp["train/loss"] == pytest.approx(fp32["train/loss"], rel=AMP_LOSS_RTOL)
    scaler = amp["scaler"]
    if amp_dtype == torch.float16:  # fp16's range needs the scaler, and it scaled
        assert scaler.is_enabled() and scaler.get_scale() > 1
    else:  # bf16 has float32's range: no scaler
        assert not scaler.is_enabled()


def test_the_gpu_runtime_is_what_a_trial_gets_on_a_gpu() -> None:
    runtime = plan_runtime(TrainConfig(device=DEVICE))
    if CUDA:
        assert runtime.device.type == "cuda" and runtime.amp and runtime.channels_last
        assert runtime.prefetch  # the reader thread, with a GPU
        # bf16 where the GPU computes it (Ampere and later), else fp16 with the scaler
        assert runtime.amp_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported(
            including_emulation=False) else torch.float16)
    fp16 = plan_runtime(TrainConfig(device=DEVICE, amp_dtype="fp16"))
    assert fp16.scales_loss is CUDA


def test_the_prefetch_thread_gives_the_batches_the_plain_reads_give(course_demo: Path) -> None:
    data = load_data(tiny_config(course_demo))
    images, labels = data.images["train"], data.labels["train"]
    order = np.random.default_rng(0).permutation(len(labels))
    plain = list(batches(images, labels, 5, order, prefetch=False))
    threaded = list(batches(images, labels, 5, order, prefetch=True, pin=CUDA))
    assert len(plain) == len(threaded) == 5  # 24 images: four of 5 and one of 4
    for (x, y), (tx, ty) in zip(plain, threaded, strict=True):
        assert torch.equal(x, tx) and torch.equal(y, ty)
        assert tx.is_pinned() is CUDA  # pinned: the copy to the GPU does not wait


def test_augmentation_on_the_gpu_equals_the_cpus(course_demo: Path) -> None:
    """The random draws are made on the CPU from the seed, so the GPU augments each image as
    the CPU does; what differs is float rounding (about 1e-5 of a normalised value)."""
    x = torch.from_numpy(np.array(load_data(tiny_config(course_demo)).images["train"][:16]))
    policy = "flip+rotate+scale+color"
    cpu = BatchAugment(policy, MEAN, STD, torch.device("cpu"))(x, torch.Generator().manual_seed(7))
    gpu = BatchAugment(policy, MEAN, STD, GPU, channels_last=True)(
        x, torch.Generator().manual_seed(7))
    assert gpu.device.type == GPU.type and gpu.is_contiguous(memory_format=torch.channels_last)
    assert (gpu.cpu() - cpu).abs().max().item() < 1e-3
    other = BatchAugment(policy, MEAN, STD, GPU)(x, torch.Generator().manual_seed(8))
    assert (other.cpu() - cpu).abs().mean().item() > 0.05  # another seed: other images


def test_a_trial_on_the_gpu_checkpoints_for_a_cpu_and_continues_there(course_demo: Path,
                                                                       tmp_path: Path) -> None:
    """The trainable with its GPU defaults (AMP, channels_last, the reader thread) and the
    attention head writes checkpoints that a CPU reads (a trial moved off a GPU node) and
    continues from."""
    cfg = tiny_config(course_demo, device=DEVICE, epochs=2, attention=True, heads=4,
                      report_cost=True)
    on_gpu = LocalReporter(tmp_path)
    model = fit(cfg, on_gpu)
    assert [h["epoch"] for h in on_gpu.history] == [1, 2]
    assert all(np.isfinite(h["train/loss"]) and np.isfinite(h["val/loss"]) for h in on_gpu.history)
    assert all(h["model/latency_ms"] > 0 for h in on_gpu.history)
    saved = json.loads((tmp_path / "checkpoints" / "last" / "state.json").read_text())
    assert saved["epoch"] == 2
    if CUDA and plan_runtime(cfg).scales_loss:
        assert saved["scaler"]["scale"] > 1

    on_cpu = LocalReporter(tmp_path / "cpu", resume=tmp_path)  # the GPU's run folder
    cpu_model = fit(cfg.replace(device="cpu", epochs=3), on_cpu)
    assert [h["epoch"] for h in on_cpu.history] == [1, 2, 3]  # continued at epoch 3
    assert next(cpu_model.parameters()).device.type == "cpu"
    # the weights it started from are the GPU's: one more CPU epoch moved them only a little
    gpu_weights = {k: v.float().cpu() for k, v in model.state_dict().items()}
    start = LocalReporter(None, resume=tmp_path)
    again = fit(cfg.replace(device="cpu", epochs=2), start)  # nothing left to train: loaded only
    for k, v in again.state_dict().items():
        assert torch.equal(v.float(), gpu_weights[k]), k


def test_a_non_finite_loss_on_the_gpu_names_its_step(course_demo: Path) -> None:
    """On a GPU the check looks one step late (no wait for each step): the step it names is
    still the one whose loss was not finite. Step 1 is finite, its update absurd, step 2 not."""
    cfg = tiny_config(course_demo, device=DEVICE, lr=1e30, epochs=1, max_train_batches=3,
                      warmup_epochs=0)
    with pytest.raises(NonFiniteLossError, match=r"train loss is (nan|inf) at epoch 1, step 2"):
        fit(cfg, LocalReporter(None))


def test_grad_cam_runs_on_the_gpu_as_on_the_cpu(course_demo: Path) -> None:
    pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed here")
    from trainables.model.explain import grad_cam, normalise

    cfg = tiny_config(course_demo)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = load_data(cfg).images["val"][:4]
    inputs = normalise(images, MEAN, STD)
    on_cpu = grad_cam(model, inputs, [0, 1, 2, 3])
    on_gpu = grad_cam(model.to(GPU), inputs, [0, 1, 2, 3])  # inputs follow the model there
    assert on_gpu.shape == (4, 64, 64) and np.isfinite(on_gpu).all()
    assert on_gpu.min() >= 0 and on_gpu.max() <= 1
    # TF32 convolutions on the GPU: close, not equal
    assert np.abs(on_gpu - on_cpu).max() < 0.05
    for a, b in zip(on_gpu, on_cpu, strict=True):
        if a.std() > 0 and b.std() > 0:
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
