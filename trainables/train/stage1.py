"""Stage 1 of a two-stage transfer: fine-tuned once per stage-1 dataset and configuration, shared
by every trial, member and reproduction that starts from it.

A trial with `stage1_data` starts from a model first fine-tuned on that dataset (APTOS 2019,
Kaggle DR Resized: larger DR sets than DeepDRiD). That model depends only on the stage-1 data
and on the settings that shape it (model, image size, preprocessing, stage1_epochs, stage1_lr),
never on a trial's searched values, so it is keyed by the data's fingerprint and that config and
kept in `stage1_store` (a search puts it in its run folder, on disk or an object store):
`<store>/<key>/model.safetensors` and `stage1.json` (its validation metrics and cost).

Concurrent trials build it once: inside Ray a small named actor hands out a lease on the key;
its holder trains while the others wait, and keeps the lease alive with a heartbeat. A builder
that dies half-way stops beating, its lease lapses and the next waiter builds. The registry also
passes the finished weights to trials on nodes that cannot read the store. Outside Ray a file
lock does the same between processes on one machine.

Stage 1 is trained by the `train` its caller passes (`trainables.train.trainable.fit`, whose trials
start from stage 1: passed in, so that neither module imports the other's back).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError
from trainables.progress import Progress
from trainables.train.config import TrainConfig
from trainables.train.reporting import running_ray, short_node

Train = Callable[..., Any]  # trainables.train.trainable.fit: (cfg, reporter, keep=...) -> the model

log = logging.getLogger(__name__)

MODEL_FILE, META_FILE = "model.safetensors", "stage1.json"
REGISTRY = "medtune_stage1"
# Settings of the trial that stage 1 keeps (structure and runtime); the rest are stage 1's own.
SHARED_KEYS = ("model", "weights", "image_size", "preprocess", "batch_size", "attention", "heads",
               "layer_norm", "residual", "dropout", "device", "amp", "amp_dtype", "channels_last",
               "max_train_batches", "max_eval_batches", "cache_dir", "val_fraction", "split_seed",
               "threads", "prefetch")
# not part of the key
RUNTIME_KEYS = ("device", "amp", "amp_dtype", "channels_last", "cache_dir", "threads", "prefetch")


def lease_seconds() -> float:
    """How long a silent builder keeps its lease (MEDTUNE_STAGE1_LEASE, default 120 s)."""
    return float(os.environ.get("MEDTUNE_STAGE1_LEASE", "120"))


def uses_stage1(cfg: TrainConfig) -> bool:
    return bool(cfg.stage1_data or cfg.stage1_weights)


def detect_dataset(root: str) -> str:
    """`stage1_dataset=auto`: APTOS 2019 (train.csv) or Kaggle DR Resized (trainLabels.csv)."""
    folder = Path(root).expanduser()
    if (folder / "trainLabels.csv").is_file():
        return "kaggle_dr"
    if (folder / "train.csv").is_file():
        return "aptos"
    raise ConfigError(f"stage1_data={root}: found neither APTOS 2019's train.csv nor Kaggle DR "
                      "Resized's trainLabels.csv there (or set stage1_dataset=...)")


def stage1_config(cfg: TrainConfig) -> TrainConfig:
    """The stage-1 training run of `cfg`: its data, epochs and lr, all stages trained, graded."""
    if not cfg.stage1_data:
        raise ConfigError("stage1_data is not set")
    kind = detect_dataset(cfg.stage1_data) if cfg.stage1_dataset == "auto" else cfg.stage1_dataset
    shared = {k: v for k, v in cfg.to_dict().items() if k in SHARED_KEYS}
    return TrainConfig.from_dict({
        **shared, "data": str(Path(cfg.stage1_data).expanduser()), "dataset": kind,
        "task": "grading", "epochs": cfg.stage1_epochs, "lr": cfg.stage1_lr,
        "unfreeze_depth": "all", "augment": "flip+rotate", "scheduler": "cosine"})


def stage1_key(cfg1: TrainConfig, data_fingerprint: str) -> str:
    values = {k: v for k, v in cfg1.to_dict().items() if k not in RUNTIME_KEYS}
    text = json.dumps({"data": data_fingerprint, "config": values}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_store(cfg: TrainConfig) -> str:
    from trainables.data.cache import cache_root

    return str(cache_root(cfg.cache_dir) / "stage1")


class Store:
    """Stage-1 models under a folder or an object-store URI (pyarrow's filesystems)."""

    def __init__(self, location: str) -> None:
        import pyarrow.fs as pafs

        self.location = location
        if "://" in location:
            self.fs, self.root = pafs.FileSystem.from_uri(location)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
        self.local = "://" not in location

    def has(self, key: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(f"{self.root}/{key}/{META_FILE}").type == pafs.FileType.File

    def read(self, key: str) -> tuple[bytes, dict[str, Any]]:
        with self.fs.open_input_stream(f"{self.root}/{key}/{MODEL_FILE}") as f:
            weights = f.read()
        with self.fs.open_input_stream(f"{self.root}/{key}/{META_FILE}") as f:
            meta = json.loads(f.read())
        return weights, meta

    def write(self, key: str, weights: bytes, meta: dict[str, Any]) -> None:
        """The weights first, the metadata last: a folder with stage1.json is complete."""
        self.fs.create_dir(f"{self.root}/{key}", recursive=True)
        for name, data in ((MODEL_FILE, weights), (META_FILE, json.dumps(meta, indent=1).encode())):
            partial = f"{self.root}/{key}/{name}.partial"
            with self.fs.open_output_stream(partial) as f:
                f.write(data)
            self.fs.move(partial, f"{self.root}/{key}/{name}")


def stage1_weights(cfg: TrainConfig, train: Train) -> tuple[bytes, dict[str, Any], bool]:
    """(safetensors bytes, metadata, whether this call trained it) of the stage-1 model that
    `cfg` starts from: a given file, or the shared model of its stage-1 data (built with
    `train` if needed)."""
    if cfg.stage1_weights:
        path = Path(cfg.stage1_weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"stage1_weights={cfg.stage1_weights}: no such file (a member's "
                              "model.safetensors, or a stage-1 model.safetensors)")
        return path.read_bytes(), {"source": str(path)}, False
    cfg1, key, store = _locate(cfg)
    if store.has(key):
        weights, meta = store.read(key)
        return weights, meta, False
    registry = _registry()
    if registry is not None:
        return _build_leased(registry, store, key, cfg1, train)
    if store.local:
        from filelock import FileLock

        Path(store.root).mkdir(parents=True, exist_ok=True)
        with FileLock(f"{store.root}/{key}.lock"):
            if store.has(key):
                weights, meta = store.read(key)
                return weights, meta, False
            return (*_build(store, key, cfg1, train), True)
    return (*_build(store, key, cfg1, train), True)


def _locate(cfg: TrainConfig) -> tuple[TrainConfig, str, Store]:
    """The stage-1 run of `cfg` (its class count from its data), its key and its store."""
    from trainables.data.cache import fingerprint
    from trainables.data.trial_data import resolve_data

    cfg1, index = resolve_data(stage1_config(cfg))
    return cfg1, stage1_key(cfg1, fingerprint(index)), Store(cfg.stage1_store or default_store(cfg))


def stage1_record(cfg: TrainConfig) -> dict[str, Any]:
    """What `cfg` started from, for the final step and the report: the stored stage-1 model's
    metadata (its validation metric, epochs, minutes), or the file it was given."""
    if cfg.stage1_weights:
        return {"source": cfg.stage1_weights}
    cfg1, key, store = _locate(cfg)
    if not store.has(key):
        return {"data": cfg1.data, "key": key, "missing": f"not in {store.location}"}
    _, meta = store.read(key)
    return {k: meta[k] for k in ("key", "data", "dataset", "metric", "value", "epoch", "minutes",
                                 "built_by") if k in meta} | {"epochs": cfg1.epochs,
                                                              "lr": cfg1.lr}


def _build(store: Store, key: str, cfg1: TrainConfig,
           train: Train) -> tuple[bytes, dict[str, Any]]:
    """Train stage 1 (its best epoch by QWK is kept), write it into the store."""
    from trainables.model.model_file import model_bytes
    from trainables.tasks import best_by, task_of
    from trainables.train.reporting import LocalReporter

    task = task_of(cfg1.task, cfg1.metric)
    log.info("stage 1: fine-tuning %s on %s for %d epochs (key %s)", cfg1.model, cfg1.data,
             cfg1.epochs, key)
    started = time.monotonic()
    with Progress(cfg1.epochs, "stage 1", "epochs") as progress:

        def echo(line: str) -> None:
            log.info("stage 1: %s", line)
            progress.update()

        reporter = LocalReporter(None, metric=task.metric, mode=task.mode, echo=echo)
        model = train(cfg1, reporter, keep="best")
    best = best_by(reporter.history, task.mode, key=lambda row: row[task.metric])
    weights = model_bytes(model, cfg1.to_dict())
    meta = {"key": key, "data": cfg1.data, "dataset": cfg1.dataset, "config": cfg1.to_dict(),
            "metric": task.metric, "value": best[task.metric], "epoch": int(best["epoch"]),
            "best_epoch": best, "minutes": round((time.monotonic() - started) / 60, 2),
            "built_by": _me()}
    store.write(key, weights, meta)
    return weights, meta


def _me() -> str:
    ray = running_ray()
    node = "local" if ray is None else short_node(ray.get_runtime_context().get_node_id())
    return f"{node}:{os.getpid()}:{threading.get_ident()}"


def start_registry() -> Any:
    """The stage-1 registry of this Ray cluster, created if there is none. The search's driver
    starts it, so that it lives as long as the search; a trial that finds none (a Tuner of
    its own) starts one that lives as long as that trial's worker."""
    import ray

    make_remote: Any = ray.remote  # Ray's stubs type only functions without arguments
    return make_remote(num_cpus=0)(Stage1Registry).options(
        name=REGISTRY, namespace="medtune", get_if_exists=True).remote()


def _registry() -> Any:
    """The stage-1 registry actor, when this process runs inside Ray."""
    return None if running_ray() is None else start_registry()


def _build_leased(registry: Any, store: Store, key: str, cfg1: TrainConfig,
                  train: Train) -> tuple[bytes, dict[str, Any], bool]:
    import ray

    me, lease = _me(), lease_seconds()
    waited = False
    while True:
        try:
            answer = ray.get(registry.claim.remote(key, me, lease))
        except ray.exceptions.RayActorError:  # its owner's worker ended: a new registry
            registry = start_registry()
            continue
        if answer == "done":
            weights, meta = ray.get(registry.fetch.remote(key))
            return weights, meta, False
        if answer == "build":
            if store.has(key):  # built by an earlier search or driver
                weights, meta = store.read(key)
                ray.get(registry.finish.remote(key, me, weights, meta))
                return weights, meta, False
            if waited:
                log.warning("stage 1: the builder of %s went silent; building it here", key)
            stop = threading.Event()
            beat = threading.Thread(target=_heartbeat, args=(registry, key, me, lease, stop),
                                    daemon=True)
            beat.start()
            try:
                weights, meta = _build(store, key, cfg1, train)
            except BaseException:
                ray.get(registry.release.remote(key, me))
                raise
            finally:
                stop.set()
            ray.get(registry.finish.remote(key, me, weights, meta))
            return weights, meta, True
        if not waited:
            log.info("stage 1: %s is being built by %s; waiting for it", key,
                     ray.get(registry.holder.remote(key)) or "another trial")
        waited = True
        time.sleep(min(2.0, lease / 4))


def _heartbeat(registry: Any, key: str, me: str, lease: float, stop: threading.Event) -> None:
    while not stop.wait(min(10.0, lease / 4)):
        try:
            registry.beat.remote(key, me)
        except Exception as e:  # the registry is gone: the build goes on
            log.debug("stage 1 heartbeat: %s", e)


class Stage1Registry:
    """Leases on stage-1 keys, and the finished weights (a Ray actor, one per cluster)."""

    def __init__(self) -> None:
        self.leases: dict[str, tuple[str, float]] = {}
        self.done: dict[str, tuple[bytes, dict[str, Any]]] = {}

    def claim(self, key: str, owner: str, lease: float) -> str:
        """"done", "build" (the caller holds the lease now) or "wait"."""
        if key in self.done:
            return "done"
        now = time.monotonic()
        held = self.leases.get(key)
        if held is None or held[0] == owner or now - held[1] > lease:
            self.leases[key] = (owner, now)
            return "build"
        return "wait"

    def beat(self, key: str, owner: str) -> None:
        if self.leases.get(key, ("",))[0] == owner:
            self.leases[key] = (owner, time.monotonic())

    def holder(self, key: str) -> str:
        """The lease's owner (node:pid:thread), or "" when nobody holds one."""
        return self.leases.get(key, ("",))[0]

    def release(self, key: str, owner: str) -> None:
        if self.leases.get(key, ("",))[0] == owner:
            del self.leases[key]

    def finish(self, key: str, owner: str, weights: bytes, meta: dict[str, Any]) -> None:
        self.done[key] = (weights, meta)
        self.leases.pop(key, None)

    def fetch(self, key: str) -> tuple[bytes, dict[str, Any]]:
        return self.done[key]
