"""One epoch of training and one evaluation, each returning a dict of namespaced metrics."""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainables.errors import ConfigError, NonFiniteLossError
from trainables.tasks import task_of
from trainables.tasks.objectives import Objective
from trainables.train.augment import BatchAugment
from trainables.train.config import TrainConfig


@dataclass(frozen=True)
class Runtime:
    """Where and how a trial computes: AMP and channels_last only pay off (and only run) on CUDA."""

    device: torch.device
    amp: bool
    channels_last: bool
    prefetch: bool = False  # a reader thread: it overlaps reads with a GPU's compute; on a
    # CPU it competes with torch's threads (`python -m search.bench input`: 20% fewer images/s)
    amp_dtype: torch.dtype = torch.float16

    @property
    def scales_loss(self) -> bool:
        """fp16's narrow range needs the GradScaler; bf16 has float32's range and does not."""
        return self.amp and self.amp_dtype == torch.float16

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def synchronize(self) -> None:
        """Wait for the GPU's queued work (a clock read before it would stop early)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def plan_runtime(cfg: TrainConfig, cuda_available: bool | None = None) -> Runtime:
    """The device Ray gave the trial (it sets CUDA_VISIBLE_DEVICES, so cuda:0), else the CPU."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if cfg.device == "cuda" and not cuda:
        raise ConfigError("device=cuda but no CUDA device is visible to this trial "
                          "(give the trial a GPU, e.g. --gpus-per-trial 1, or use device=auto)")
    use_cuda = cuda and cfg.device != "cpu"
    bf16 = cfg.amp_dtype == "bf16" or (cfg.amp_dtype == "auto" and use_cuda
                                       and torch.cuda.is_bf16_supported(including_emulation=False))
    return Runtime(device=torch.device("cuda" if use_cuda else "cpu"),
                   amp=use_cuda and cfg.amp, channels_last=use_cuda and cfg.channels_last,
                   prefetch=cfg.prefetch == "on" or (cfg.prefetch == "auto" and use_cuda),
                   amp_dtype=torch.bfloat16 if bf16 else torch.float16)


def lr_factor(step: int, *, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak lr at optimizer step `step`: linear warm-up, then the schedule."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "step":
        return 0.1 if step >= (2 * total) // 3 else 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, order: np.ndarray,
            *, limit: int = 0, drop_last: bool = False, pin: bool = False,
            prefetch: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (uint8 images, labels) read from the (memory-mapped) cache in `order`;
    labels keep their dtype (int64 classes, float32 multi-label rows).

    A thread reads the next batch while the current one computes: the reads and the
    tensor ops both release the GIL.
    """
    n_batches = len(order) // batch_size if drop_last else math.ceil(len(order) / batch_size)
    if limit:
        n_batches = min(n_batches, limit)

    def read(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.sort(order[i * batch_size: (i + 1) * batch_size])  # sorted reads are sequential
        x = torch.from_numpy(np.ascontiguousarray(images[idx]))
        y = torch.from_numpy(np.ascontiguousarray(labels[idx]))
        return (x.pin_memory(), y.pin_memory()) if pin else (x, y)

    if not prefetch:
        yield from (read(i) for i in range(n_batches))
        return
    ready: queue.Queue = queue.Queue(maxsize=2)

    def producer() -> None:
        try:
            for i in range(n_batches):
                ready.put(read(i))
        except BaseException as e:  # hand the failure to the consumer
            ready.put(e)
        ready.put(None)

    threading.Thread(target=producer, daemon=True).start()
    while (item := ready.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


class FiniteLoss:
    """Stops a trial at the first non-finite training loss, naming its step. On a CPU it looks
    at once; on a GPU one step late, through a copy that waits for that loss alone: asking the
    GPU at once would make the CPU wait for every step's last kernel before it queues the next
    step's first one."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: tuple[torch.Tensor, torch.cuda.Event, torch.Tensor, str] | None = None

    def check(self, loss: torch.Tensor, where: str) -> None:
        if not self.cuda:
            self._raise_if_bad(torch.isfinite(loss), loss, where)
            return
        flag = torch.isfinite(loss).to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.wait()  # the previous step's, long done by now
        self.pending = (flag, event, loss.detach(), where)

    def wait(self) -> None:
        if self.pending is not None:
            flag, event, loss, where = self.pending
            self.pending = None
            event.synchronize()
            self._raise_if_bad(flag, loss, where)

    @staticmethod
    def _raise_if_bad(flag: torch.Tensor, loss: torch.Tensor, where: str) -> None:
        if not bool(flag):
            raise NonFiniteLossError(f"train loss is {loss.item()} {where}; the trial stops here. "
                                     "Try a lower lr.")


def train_one_epoch(model: nn.Module, images: np.ndarray, labels: np.ndarray, *,
                    cfg: TrainConfig, epoch: int, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler,
                    scaler: torch.amp.GradScaler, augment: BatchAugment,
                    runtime: Runtime, objective: Objective,
                    sample: np.ndarray | None = None) -> dict[str, float]:
    """One pass over the training images (or over `sample`, indices into them: a bootstrap
    resample); data order, augmentation and dropout are seeded by (seed, epoch), so a resumed
    run repeats an uninterrupted one."""
    model.train()
    torch.manual_seed(cfg.seed * 10_007 + epoch)  # dropout
    sample = np.arange(len(labels)) if sample is None else sample
    order = sample[np.random.default_rng([cfg.seed, epoch]).permutation(len(sample))]
    generator = torch.Generator().manual_seed(cfg.seed * 10_007 + epoch)
    drop_last = len(order) > cfg.batch_size  # a batch of one breaks BatchNorm
    total_loss = torch.zeros((), device=runtime.device)
    finite = FiniteLoss(runtime.device)
    seen, started = 0, time.perf_counter()
    for step, (x, y) in enumerate(batches(images, labels, cfg.batch_size, order,
                                          limit=cfg.max_train_batches, drop_last=drop_last,
                                          pin=runtime.device.type == "cuda",
                                          prefetch=runtime.prefetch)):
        inputs = augment(x, generator)
        targets = y.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = model(inputs)
        loss = objective.loss(logits.float(), targets)
        finite.check(loss, f"at epoch {epoch + 1}, step {step + 1} (lr "
                           f"{optimizer.param_groups[0]['lr']:.3g}, model {cfg.model})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total_loss += loss.detach() * len(y)
        seen += len(y)
    finite.wait()
    runtime.synchronize()  # the queued steps are part of the epoch's time
    seconds = time.perf_counter() - started
    return {"train/loss": float(total_loss) / max(1, seen),
            "train/images_per_s": seen / max(seconds, 1e-9), "train/seconds": seconds}


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, *, cfg: TrainConfig, augment: BatchAugment,
            runtime: Runtime, tta: bool = False, limit: int | None = None) -> np.ndarray:
    """Probabilities for `images`, in order (softmax over classes, or a sigmoid per label for
    a multi-label task); `tta` averages in the mirror image. `limit` caps the batches
    (default: the config's max_eval_batches; 0 = every image)."""
    model.eval()
    activate = task_of(cfg.task, cfg.metric).probabilities
    out = []
    dummy = np.zeros(len(images), dtype=np.int64)
    cap = cfg.max_eval_batches if limit is None else limit
    for x, _ in batches(images, dummy, 2 * cfg.batch_size, np.arange(len(images)),
                        limit=cap, pin=runtime.device.type == "cuda", prefetch=runtime.prefetch):
        inputs = augment(x)
        with runtime.autocast():
            probs = activate(model(inputs).float())
            if tta:
                probs = (probs + activate(model(inputs.flip(3)).float())) / 2
        out.append(probs.cpu())
    return torch.cat(out).numpy()


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, cfg: TrainConfig,
             augment: BatchAugment, runtime: Runtime,
             prefix: str = "val") -> tuple[dict[str, float], np.ndarray]:
    """The loss and the task's metrics on `images`; also returns the probabilities."""
    probs = predict(model, images, cfg=cfg, augment=augment, runtime=runtime)
    labels = labels[: len(probs)]
    task = task_of(cfg.task, cfg.metric)
    metrics = {"loss": task.eval_loss(labels, probs), **task.scores(labels, probs)}
    return {f"{prefix}/{k}": v for k, v in metrics.items()}, probs


def model_cost(model: nn.Module, size: int, runtime: Runtime, *, runs: int = 10) -> dict[str, float]:
    """What the model costs to deploy: `model/latency_ms`, the median of `runs` forward passes
    of one image at the trial's size on the trial's device (as it predicts: eval mode, AMP and
    channels_last where the trial uses them, after two warm-up passes), and `model/params`."""
    was_training = model.training
    model.eval()
    image = torch.zeros(1, 3, size, size, device=runtime.device)  # draws no random numbers
    if runtime.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad(), runtime.autocast():
        for i in range(runs + 2):
            runtime.synchronize()
            started = time.perf_counter()
            model(image)
            runtime.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - started)
    model.train(was_training)
    return {"model/latency_ms": 1000 * float(np.median(times)),
            "model/params": float(sum(p.numel() for p in model.parameters()))}

