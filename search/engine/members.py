"""The final step's members as Ray tasks, with the search's per-trial resources.

Each member retrains one configuration on its own bootstrap resample wherever the cluster has
a CPU/GPU slot like a trial's (a GPU worker of `cluster/gpu.yaml`, not its CPU head), as many
at a time as the cluster holds. A member whose worker or node dies is run again elsewhere by
Ray (`MEMBER_RETRIES`); an error the member raises itself (a NaN loss) is not retried. Epoch
lines travel to the driver through a small queue actor pinned to the driver's node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainables.progress import Progress
from trainables.train.config import TrainConfig

log = logging.getLogger(__name__)

MEMBER_RETRIES = 3  # runs of a member whose worker or node died, beyond the first


@dataclass(frozen=True)
class TrainedMember:
    """What a member task sends back: the driver writes it into `final/member_<i>/`."""

    weights: bytes  # model.safetensors (the config in its metadata)
    metadata: dict[str, Any]  # metadata.json
    probs: dict[str, np.ndarray]  # split -> (N, C) class probabilities ("val", "test" if any)
    node_id: str  # the Ray node that trained it
    device: str  # "cpu" or "cuda (<name>)"


def train_member(config: dict[str, Any], *, member: int, metric: str, mode: str, tta: bool,
                 progress: Any = None) -> TrainedMember:
    """Train one member (inside a Ray task, or in this process without Ray): its weights,
    metadata and validation/test probabilities. `progress` is a ray.util.queue.Queue or None."""
    import ray
    import torch

    from search.engine.environment import package_versions
    from trainables.data.cache import fingerprint
    from trainables.data.trial_data import load_data
    from trainables.model.model_file import model_bytes
    from trainables.model.timm_import import timm
    from trainables.tasks import task_of
    from trainables.train.augment import BatchAugment
    from trainables.train.loop import plan_runtime, predict
    from trainables.train.reporting import LocalReporter, node_type, short_node
    from trainables.train.trainable import fit

    cfg = TrainConfig.from_dict(config)
    runtime = plan_runtime(cfg)
    device = (f"cuda ({torch.cuda.get_device_name(runtime.device)})"
              if runtime.device.type == "cuda" else "cpu")
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"

    def echo(line: str) -> None:
        tell(progress, member, line)

    echo(f"started on node {short_node(node_id)} ({device})")
    started = time.monotonic()
    reporter = LocalReporter(None, metric=metric, mode=mode, echo=echo)  # no checkpoints
    data = load_data(cfg)
    # a phased trial keeps its best epoch (not always its last: the IDRiD seed's lesson)
    model = fit(cfg, reporter, data=data, keep="best" if cfg.phases else "last")
    data_cfg = timm.data.resolve_model_data_config(model.backbone)
    mean, std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    augment = BatchAugment("none", mean, std, runtime.device, runtime.channels_last)
    probs: dict[str, np.ndarray] = {
        split: predict(model, data.images[split], cfg=cfg, augment=augment, runtime=runtime,
                       tta=tta, limit=0)
        for split in ("val", "test") if split in data.images}
    weights = model_bytes(model, cfg.to_dict(), list(data.index.class_names))
    metadata = {
        "format_version": 1, "versions": package_versions(),
        "task": cfg.task, "class_names": data.index.class_names, "num_classes": cfg.num_classes,
        "output": task_of(cfg.task, cfg.metric).output,
        "input": {"size": cfg.image_size, "channels": 3, "source_channels": data.index.channels,
                  "mean": mean, "std": std, "preprocess": cfg.preprocess,
                  "layout": "RGB (grayscale repeated), channels first, [0,1] then normalised"},
        "model": cfg.model, "seed": cfg.seed, "bootstrap": cfg.bootstrap,
        "data_fingerprint": fingerprint(data.index), "config": cfg.to_dict(),
        "trained_on": {"node_id": node_id, "node_type": node_type(), "device": device,
                       "minutes": round((time.monotonic() - started) / 60, 2)},
        "history": reporter.history,
    }
    return TrainedMember(weights, metadata, probs, node_id, device)


def tell(progress: Any, member: int, line: str) -> None:
    """Best effort: a lost progress queue never fails a member."""
    if progress is None:
        return
    try:
        progress.put_nowait((member, line))
    except Exception as e:  # the queue actor is gone (the driver's node): train on
        log.debug("progress queue: %s", e)


@dataclass(frozen=True)
class MemberFailure:
    """A member that could not be trained: its own error, or its node died too often."""

    error: str


def train_members(configs: list[TrainConfig], *, metric: str, mode: str, cpus: float,
                  gpus: float, tta: bool,
                  echo: Callable[[str], None]) -> list[TrainedMember | MemberFailure]:
    """Train every member as a Ray task (connected Ray required), in parallel as resources
    allow; results in the order of `configs`."""
    import ray
    from ray.util.queue import Queue

    from search.engine.driver import on_driver_node

    progress = Queue(actor_options=on_driver_node())  # it lives as long as the driver
    make_remote: Any = ray.remote  # Ray's stubs type only functions without arguments
    remote = make_remote(train_member)
    task = remote.options(num_cpus=cpus, num_gpus=gpus, max_retries=MEMBER_RETRIES,
                          retry_exceptions=False)
    pending = {task.remote(cfg.to_dict(), member=i + 1, metric=metric, mode=mode, tta=tta,
                           progress=progress): i for i, cfg in enumerate(configs)}
    results: list[TrainedMember | MemberFailure] = [MemberFailure("not run")] * len(configs)
    try:
        with Progress(len(configs), "final step", "models") as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                _drain(progress, echo)
                for ref in done:
                    i = pending.pop(ref)
                    results[i] = _outcome(ref, i + 1, echo)
                    bar.update()
            _drain(progress, echo)
    finally:
        for ref in pending:  # Ctrl-C: nothing else should keep training
            ray.cancel(ref, force=True)
        progress.shutdown()
    return results


def _outcome(ref: Any, member: int, echo: Callable[[str], None]) -> TrainedMember | MemberFailure:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the member's own error, e.g. a NaN loss
        text = str(e.cause) if e.cause is not None else str(e).strip().splitlines()[-1]
    except ray.exceptions.RayError as e:  # its worker or node died MEMBER_RETRIES + 1 times
        text = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    echo(f"member {member} FAILED: {text}")
    return MemberFailure(text)


def _drain(progress: Any, echo: Callable[[str], None]) -> None:
    from ray.util.queue import Empty

    try:
        while True:
            member, line = progress.get_nowait()
            echo(f"member {member}: {line}")
    except Empty:
        return
