"""Where a trial's epochs go: Ray Tune (`tune.report` with a checkpoint) or a local folder.

The trainable asks `current_reporter()`; inside a Tune trial that is Tune, otherwise the
reporter installed by `local_run(...)` (the CLI, tests, reproduce), or one that keeps the
history in memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from trainables.tasks import best

log = logging.getLogger(__name__)
T = TypeVar("T")
WriteCheckpoint = Callable[[Path], None]


class Reporter(Protocol):
    def start(self, config: dict[str, Any]) -> None: ...

    def restore(self, load: Callable[[Path], T]) -> T | None: ...

    def report(self, metrics: dict[str, float], write_checkpoint: WriteCheckpoint) -> None: ...


class TuneReporter:
    """Reports each epoch to Ray Tune with a checkpoint; resumes from `tune.get_checkpoint()`."""

    def start(self, config: dict[str, Any]) -> None:
        pass  # Ray Tune stores the trial config itself

    def restore(self, load: Callable[[Path], T]) -> T | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return load(Path(folder))

    def report(self, metrics: dict[str, float], write_checkpoint: WriteCheckpoint) -> None:
        import ray
        from ray import tune

        # which Ray node ran the epoch: on a cluster, where a trial ran (and moved to, when a
        # node was lost); Ray's own node_ip cannot tell nodes on one machine apart
        node = {"node_id": ray.get_runtime_context().get_node_id(), "node_type": node_type()}
        with tempfile.TemporaryDirectory() as folder:
            write_checkpoint(Path(folder))
            tune.report({**metrics, **node}, checkpoint=tune.Checkpoint.from_directory(folder))


NODE_TYPE_LABEL = "medtune-node-type"  # cluster/gpu.yaml labels each node type with it


def node_type() -> str:
    """This Ray node's type (its medtune-node-type label), "unlabelled" on a node without
    one, "local" outside Ray: the cost ledger's node type (search.engine.ledger)."""
    ray = running_ray()
    if ray is None:
        return "local"
    return str(ray.get_runtime_context().get_node_labels().get(NODE_TYPE_LABEL, "unlabelled"))


def running_ray() -> Any:
    """The `ray` module when this process is part of a running Ray, else None (also where Ray
    is not installed: `search.train` and the bench's input, train and limit sections run on a
    machine without it)."""
    try:
        import ray
    except ImportError:
        return None
    return ray if ray.is_initialized() else None


def short_node(node_id: str) -> str:
    """A Ray node id as the console and the report show it: its first 8 characters (the
    whole id is in the tables and metadata)."""
    return node_id[:8]


class LocalReporter:
    """Writes `config.json`, `metrics.json` (one dict per epoch) and `checkpoints/{last,best}/`
    under `out` (or keeps only the history when `out` is None); prints a line per epoch."""

    def __init__(self, out: Path | None = None, *, metric: str | None = None, mode: str = "max",
                 resume: Path | None = None, echo: Callable[[str], None] | None = None) -> None:
        self.out, self.metric, self.mode, self.resume, self.echo = out, metric, mode, resume, echo
        self.history: list[dict[str, float]] = []
        self.config: dict[str, Any] = {}

    def start(self, config: dict[str, Any]) -> None:
        self.config = config
        if self.metric is None:  # the metric the config's experiment optimises
            from trainables.tasks import task_of

            task = task_of(config.get("task", "grading"), config.get("metric", ""))
            self.metric, self.mode = task.metric, task.mode
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.json", json.dumps(config, indent=1))

    def restore(self, load: Callable[[Path], T]) -> T | None:
        if self.resume is None:
            return None
        from trainables.errors import ConfigError
        from trainables.train.checkpoint import is_checkpoint

        folder = self.resume
        if not is_checkpoint(folder):  # a run folder was given: its last checkpoint
            folder = kept(folder / "checkpoints" / "last")
        if not is_checkpoint(folder):
            raise ConfigError(f"--resume {self.resume}: no checkpoint there (expected "
                              "model.safetensors, optimizer.safetensors and state.json)")
        state = load(folder)
        if isinstance(state, dict):  # the saved epochs carry over into this run's metrics.json
            self.history = list(state.get("history", []))
        return state

    def report(self, metrics: dict[str, float], write_checkpoint: WriteCheckpoint) -> None:
        self.history.append(dict(metrics))
        if self.echo:
            self.echo(format_epoch(metrics, self.config.get("epochs")))
        if not self.out:
            return
        write_text(self.out / "metrics.json", json.dumps(self.history, indent=1))
        checkpoints = self.out / "checkpoints"
        put_folder(checkpoints / "last", write_checkpoint)
        if self._is_best(metrics):
            put_folder(checkpoints / "best",
                       lambda folder: shutil.copytree(checkpoints / "last", folder))

    def _is_best(self, metrics: dict[str, float]) -> bool:
        metric = self.metric or ""
        values = [h[metric] for h in self.history if metric in h]
        if not values:
            return False
        return metrics.get(metric) == best(values, self.mode)


def write_text(path: Path, text: str) -> None:
    """A file a kill never leaves half-written: the old one or the new one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def put_folder(folder: Path, write: Callable[[Path], Any]) -> None:
    """Replace `folder` with what `write` puts into a fresh folder, so that a kill at any
    point leaves a whole one: the new folder is written beside it (`.partial`), the old one
    steps aside (`.old`) and the new one takes its name before the old one is removed. A kill
    between the two renames leaves only `.old`, which `kept` reads."""
    partial, old = folder.with_name(folder.name + ".partial"), folder.with_name(folder.name + ".old")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    partial.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def kept(folder: Path) -> Path:
    """`folder`, or the whole one a kill inside `put_folder` left as `folder.old`."""
    old = folder.with_name(folder.name + ".old")
    return old if not folder.exists() and old.exists() else folder


def format_epoch(m: dict[str, float], epochs: int | None = None) -> str:
    """One line per epoch: losses, the task's metrics (whatever the task reported), speed."""
    from trainables.tasks import describe_metrics

    of = f"/{epochs}" if epochs else ""
    return (f"epoch {int(m['epoch'])}{of}  train loss {m['train/loss']:.4f}  "
            f"val loss {m['val/loss']:.4f}  {describe_metrics(m)}  "
            f"{m['train/images_per_s']:.1f} img/s  lr {m['lr']:.2e}")


_LOCAL: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("medtune_reporter",
                                                                         default=None)


@contextlib.contextmanager
def local_run(reporter: Reporter) -> Iterator[Reporter]:
    """Run a trainable outside Ray with `reporter` receiving its epochs."""
    token = _LOCAL.set(reporter)
    try:
        yield reporter
    finally:
        _LOCAL.reset(token)


def in_tune_trial() -> bool:
    try:
        from ray import tune
    except ImportError:
        return False
    with warnings.catch_warnings():  # outside a trial Ray warns and returns None
        warnings.simplefilter("ignore")
        return tune.get_context().get_trial_id() is not None


def current_reporter(metric: str, mode: str) -> Reporter:
    local = _LOCAL.get()
    if local is not None:
        return local
    if in_tune_trial():
        return TuneReporter()
    return LocalReporter(metric=metric, mode=mode)
