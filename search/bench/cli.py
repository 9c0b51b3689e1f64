"""Benchmarks as ratios of runs side by side, never as absolute times.

    python -m search.bench                      # every section, full size (hours on 2 cores)
    python -m search.bench input limit          # some sections
    python -m search.bench --quick              # small sizes: the plumbing only
    python -m search.bench input train limit --gpu --model efficientnet_b0   # on a GPU
    python -m search.bench --readme             # results/README.md's table from results/bench/*.json

Sections:
  input       images/s and CPU-seconds per image of medtune's input pipeline (the node's cache,
              read memory-mapped, then augmentation on batched tensors) against the usual one
              (PIL decodes the full-size JPEG, torchvision transforms each image, a DataLoader
              with a persistent worker per CPU); same images, output size, augmentation ops,
              batch. Target: 20x.
  train       training images/s of the trainable (`trainables.train.trainable.fit`) against a plain
              timm + PyTorch loop over the usual input pipeline; same model, data, batch, threads
  limit       the trainable's training images/s as a fraction of the model alone (forward,
              loss, backward, AdamW step on tensors already on the device; same model, batch,
              size, threads). Target: 0.9.
  threads     the trainable under torch intra-op threads 1 and 2, with the prefetch thread,
              with one inter-op thread (--quick: 1 and 2 threads); and the share of system
              time in its CPU time
  overhead    tiny trials through medtune's search against the same configs as plain calls
              (search/bench/tune.py). Target: at most 1.5 s added per trial.
  efficiency  random search with full-length trials against TPE alone, ASHA alone and TPE + ASHA
              on the experiment's demo, --seeds each (default 5; a seed's arms in one process,
              on one local Ray), each arm's samplers seeded apart: epochs and minutes to random
              search's median final best and the regret at equal epochs, with bootstrap
              intervals over seeds; an anytime figure beside the record (search/bench/efficiency.py).
              Target: TPE + ASHA in a third of the epochs.
  scale       a fixed random search on 1 and then 2 one-CPU worker nodes. Target: 1.8x.
  gain        the final step's bootstrap intervals of what the search bought: every draw of
              every model scored at once against scikit-learn on each draw's rows
              (search/bench/gain.py)
  replay      the efficiency comparisons on every learning-curve table in results/bench/curves/
              (recorded by `collect`), replayed through the real search in simulated time,
              --seeds each (default 20; search/bench/replay.py)
  reproducible  what --reproducible costs: TPE + ASHA replayed on the first table, free-running
              and in batches of 4, --seeds each (default 20): simulated minutes of a search and
              the best value reached (search/bench/reproducible.py)
  warmstart   what --warm-start buys: on the first table, per seed an earlier search on the
              same table and on each related table (curves/related/: the experiment on other
              data), then a cold search and one warm-started from each: epochs to the cold
              one's final best, --seeds each (default 20; search/bench/warmstart.py). Target: 2x.
  demos       only when named: the README's demos run as the README runs them, and the numbers
              it quotes from them read from what they wrote (search/bench/demos.py)

  python -m search.bench collect EXPERIMENT --configs N [--set KEY=VALUE]   # a curve table
  python -m search.bench curves [TABLE ...]     # a table's size, spread, early ranks, surrogate error

The images are full-size synthetic fundus JPEGs (2048x1944 like a fundus camera; 512 px with
--quick), generated once into the cache folder; with `--experiment NAME` the sections run on
that experiment's demo set and task instead (e.g. `rfmid_multilabel`: multi-label fundus PNGs
and BCE; `medmnist`: 64 px grayscale class folders), the baseline with the task's loss. Each
measurement runs in a fresh process (its own CPU time and peak memory), the two sides
alternating `--repeats` times; the table gives medians, the ratio ours/baseline and each
target, and the whole record (with the machine and the git commit) is written as JSON
(default results/bench/bench-<time>.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from search.bench import demos as bench_demos
from search.bench import gain as bench_gain
from search.bench import replay as bench_replay
from search.bench import reproducible as bench_reproducible
from search.bench import tune as bench_tune
from search.bench import warmstart as bench_warmstart
from search.bench.process import data_keys, measure
from search.bench.rows import row
from search.cli import positive_int
from trainables.data.cache import cache_root
from trainables.data.pool import node_cores
from trainables.errors import ConfigError

SECTIONS = ("input", "train", "limit", "threads", "overhead", "efficiency", "scale", "gain",
            "replay", "reproducible", "warmstart", "demos")
ON_REQUEST = ("demos",)  # not among "every section": run when named
GPU_SECTIONS = ("input", "train", "limit")  # what --gpu measures
AUGMENT = "flip+rotate+color"


def bench_sizes(quick: bool, gpu: bool = False) -> dict[str, Any]:
    """--quick: the plumbing, in seconds on a CPU; --gpu: epochs of 30 batches of 256 over
    1024 px source JPEGs (the training images repeat within an epoch: `repeat`), so that a GPU
    computes long enough to time; else full size for a CPU."""
    if gpu:
        return {"width": 1024, "height": 972, "train_patients": 24, "image_size": 224,
                "batch": 32 if quick else 256, "epochs": 1 if quick else 3,
                "model": "resnet18", "train_batches": 3 if quick else 30, "trials": 2,
                "seeds": 1, "replay_seeds": 1, "scale_trials": 2, "scale_batches": 1,
                "quick": quick, "gpu": True}
    if quick:
        return {"width": 544, "height": 512, "train_patients": 6, "image_size": 96, "batch": 16,
                "epochs": 2, "model": "resnet18", "train_batches": 3, "trials": 2, "seeds": 1,
                "replay_seeds": 1, "scale_trials": 2, "scale_batches": 1, "quick": True}
    return {"width": 2048, "height": 1944, "train_patients": 24, "image_size": 224, "batch": 32,
            "epochs": 3, "model": "resnet18", "train_batches": 3, "trials": 6, "seeds": 5,
            "replay_seeds": 20, "scale_trials": 8, "scale_batches": 12, "quick": False}


def bench_data(sizes: dict[str, Any]) -> Path:
    """The generated full-size fundus set of these sizes (written once per machine)."""
    from trainables.data.demo import DemoSpec, write_deepdrid_demo

    spec = DemoSpec(train_patients=sizes["train_patients"], val_patients=2, test_patients=1,
                    width=sizes["width"], height=sizes["height"], seed=0)
    out = cache_root() / "bench" / f"fundus-{spec.width}x{spec.height}-{spec.train_patients}"
    if not (out / "train.csv").is_file():
        print(f"generating the benchmark images in {out} (once)", flush=True)
        write_deepdrid_demo(out, layout="course", spec=spec)
    return out


# ---- measurements: each runs in its own process (`--measure NAME`) and prints one JSON line

def _usage(children: list[Any] | None = None) -> dict[str, float]:
    """CPU seconds (user + system) of this process, its reaped children and the live
    `children` (psutil processes: persistent DataLoader workers are alive at both ends of the
    clock), and peak memory."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live_user = live_system = 0.0
    for child in children or ():
        try:
            times = child.cpu_times()
        except Exception:  # psutil.NoSuchProcess: it ended, and getrusage counts it now
            continue
        live_user, live_system = live_user + times.user, live_system + times.system
    return {"cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live_user
            + live_system, "system": me.ru_stime + kids.ru_stime + live_system,
            "rss_mb": me.ru_maxrss / 1024, "worker_rss_mb": kids.ru_maxrss / 1024}


def _train_frame(p: dict[str, Any]) -> Any:
    from trainables.data.formats import read_dataset

    index = read_dataset(p["dataset"], p["data"])
    index.raise_if_problems()
    return index, index.split("train")


def experiment_params(name: str, sizes: dict[str, Any], *,
                      images: bool = True) -> dict[str, Any]:
    """The data, dataset kind, task and preprocessing the sections run on (without `images`,
    none are generated: the replay section reads recorded curves only)."""
    from spaces import get_experiment
    from trainables.data.demo_sets import ensure_demo

    experiment = get_experiment(name)
    if not images:
        return {"experiment": name, "dataset": experiment.dataset, "task": experiment.task.kind}
    if experiment.dataset == "deepdrid":
        data = bench_data(sizes)
    else:
        data = ensure_demo(experiment.demo_kind, cache_root())
    preprocess = experiment.config(demo=True).preprocess
    return {"experiment": name, "dataset": experiment.dataset, "task": experiment.task.kind,
            "preprocess": preprocess, "data": str(data)}


class _PilDataset:
    """The usual input pipeline: PIL decodes each full-size JPEG, torchvision transforms it."""

    def __init__(self, frame: Any, labels: Any, size: int) -> None:
        from torchvision import transforms as T

        self.paths, self.labels = list(frame["path"]), list(labels)
        self.transform = T.Compose([
            T.Resize((size, size)), T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
            T.RandomRotation(180), T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.labels[i]


def _loader(index: Any, frame: Any, p: dict[str, Any]) -> Any:
    import pandas as pd
    import torch

    k = copies(p, len(frame))  # the same repeats of the training images as ours
    labels = list(index.targets("train")) * k
    # a map-style dataset: __len__ and __getitem__
    dataset: Any = _PilDataset(pd.concat([frame] * k), labels, p["image_size"])
    # persistent workers: started once, not every epoch (what a tuned loop does)
    return torch.utils.data.DataLoader(dataset, batch_size=p["batch"], shuffle=True,
                                       num_workers=p["workers"], drop_last=True,
                                       persistent_workers=p["workers"] > 0,
                                       pin_memory=p.get("device") == "cuda")


def measure_input_ours(p: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd
    import torch

    from trainables.data.cache import build_cache
    from trainables.train.augment import BatchAugment
    from trainables.train.loop import batches, plan_runtime

    index, _ = _train_frame(p)
    if p.get("build_only") and p.get("gpu"):  # enough images for every core: the same files
        # decoded again (10 times 108; their bytes come from the page cache, as a warm disk's)
        index.frame = pd.concat([index.frame] * 10, ignore_index=True)
    started = time.perf_counter()
    cached = build_cache(index, size=p["image_size"], preprocess=p["preprocess"],
                         dataset=p["dataset"], processes=p.get("cache_processes", 0))
    build = {"cache_built": cached.built, "cache_build_seconds": time.perf_counter() - started,
             "cached_images": sum(len(a) for a in cached.images.values())}
    if p.get("build_only"):
        return build
    runtime = plan_runtime(_train_config(p))  # as a trial on this device reads and augments
    images, labels = cached.images["train"], index.targets("train")
    augment = BatchAugment(AUGMENT, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                           runtime.device, runtime.channels_last)
    n = 0
    for epoch in range(p["epochs"] + 1):  # the first pass warms up, like the baseline's
        if epoch == 1:
            runtime.synchronize()
            usage, started, n = _usage(), time.perf_counter(), 0
        order = epoch_order(p, len(labels), epoch)
        generator = torch.Generator().manual_seed(epoch)
        for x, y in batches(images, labels, p["batch"], order, drop_last=True,
                            pin=runtime.device.type == "cuda", prefetch=runtime.prefetch):
            augment(x, generator)
            n += len(y)
    runtime.synchronize()
    seconds, after = time.perf_counter() - started, _usage()
    return {"images": n, "seconds": seconds, "cpu_seconds": after["cpu"] - usage["cpu"],
            "rss_mb": after["rss_mb"], **build}


def copies(p: dict[str, Any], n: int) -> int:
    """How many times an epoch goes over the `n` training images: once, or with --gpu as often
    as `train_batches` batches need."""
    return max(1, math.ceil(p["batch"] * p["train_batches"] / n)) if p.get("gpu") else 1


def epoch_order(p: dict[str, Any], n: int, epoch: int) -> Any:
    import numpy as np

    sample = np.tile(np.arange(n), copies(p, n))
    return sample[np.random.default_rng(epoch).permutation(len(sample))]


def measure_input_baseline(p: dict[str, Any]) -> dict[str, Any]:
    import psutil

    index, frame = _train_frame(p)
    loader = _loader(index, frame, p)
    n, me = 0, psutil.Process()
    for epoch in range(p["epochs"] + 1):
        if epoch == 1:  # the workers are alive from here on: their CPU so far is the start's
            workers = me.children(recursive=True)
            usage, started, n = _usage(workers), time.perf_counter(), 0
        for x, _ in loader:
            n += len(x)
    seconds = time.perf_counter() - started
    peak = sum(w.memory_info().rss for w in workers if w.is_running()) / 2**20
    del loader  # the workers end: their CPU time moves to RUSAGE_CHILDREN
    psutil.wait_procs(workers, timeout=30)
    after = _usage()
    return {"images": n, "seconds": seconds, "cpu_seconds": after["cpu"] - usage["cpu"],
            "rss_mb": after["rss_mb"] + max(peak, p["workers"] * after["worker_rss_mb"])}


def _train_config(p: dict[str, Any]) -> Any:
    from trainables.train.config import TrainConfig

    return TrainConfig.from_dict({
        **data_keys(p), "model": p["model"], "weights": "none", "image_size": p["image_size"],
        "batch_size": p["batch"], "epochs": p["epochs"] + 1, "augment": AUGMENT,
        "max_train_batches": p["train_batches"], "max_eval_batches": 1,
        "device": p.get("device", "cpu"), "amp": p.get("amp", "off") != "off",
        "amp_dtype": p.get("amp", "off") if p.get("amp", "off") != "off" else "auto",
        "threads": p.get("threads", 0), "prefetch": p.get("prefetch", "auto")})


def measure_train_ours(p: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from trainables.data.trial_data import load_data
    from trainables.train.reporting import LocalReporter
    from trainables.train.trainable import fit

    if p.get("interop"):
        import torch

        torch.set_num_interop_threads(p["interop"])
    reporter = LocalReporter(None)
    cfg = _train_config(p)
    data = load_data(cfg)
    data.train_sample = np.tile(data.train_sample, copies(p, len(data.train_sample)))
    usage = _usage()
    fit(cfg, reporter, data=data)
    after = _usage()
    timed = reporter.history[1:]  # the first epoch warms up
    images = sum(r["train/images_per_s"] * r["train/seconds"] for r in timed)
    seconds = sum(r["train/seconds"] for r in timed)
    return {"images": round(images), "seconds": seconds, "rss_mb": after["rss_mb"],
            "system_fraction": (after["system"] - usage["system"])
            / max(1e-9, after["cpu"] - usage["cpu"])}


def measure_limit_model(p: dict[str, Any]) -> dict[str, Any]:
    """The model alone: forward, loss, backward and AdamW step on tensors already on the device,
    the trainable's model, batch, size and threads: what no input pipeline can beat."""
    import torch
    import torch.nn.functional as F

    from trainables.model.models import build_model
    from trainables.train.loop import plan_runtime
    from trainables.train.trainable import plan_threads

    cfg = _train_config(p)
    plan_threads(cfg)
    torch.manual_seed(0)
    runtime = plan_runtime(cfg)
    model = build_model(cfg).to(runtime.device).train()
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.scales_loss)
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size,
                    device=runtime.device).contiguous(memory_format=memory_format)
    y = torch.randint(0, cfg.num_classes, (cfg.batch_size,), device=runtime.device)
    n, seconds = 0, 0.0
    for epoch in range(p["epochs"] + 1):
        started = time.perf_counter()
        for _ in range(p["train_batches"]):
            with runtime.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if epoch:
                n += len(y)
        runtime.synchronize()
        if epoch:  # the first epoch warms up, as in the trainable
            seconds += time.perf_counter() - started
    return {"images": n, "seconds": seconds}


def measure_train_baseline(p: dict[str, Any]) -> dict[str, Any]:
    import torch

    from trainables.model.timm_import import timm
    from trainables.tasks import task_of
    from trainables.train.loop import plan_runtime

    torch.manual_seed(0)
    index, frame = _train_frame(p)
    runtime = plan_runtime(_train_config(p))  # the same device and AMP, as a user's loop has
    device = runtime.device
    model = timm.create_model(p["model"], pretrained=False, num_classes=index.num_classes)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.scales_loss)
    loader = _loader(index, frame, p)
    criterion = task_of(index.task).plain_loss
    n, seconds = 0, 0.0
    for epoch in range(p["epochs"] + 1):
        model.train()
        started = time.perf_counter()
        for step, (x, y) in enumerate(loader):
            if step == p["train_batches"]:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with runtime.autocast():
                logits = model(x)
            loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if epoch:
                n += len(y)
        runtime.synchronize()
        if epoch:  # the first epoch warms up
            seconds += time.perf_counter() - started
    return {"images": n, "seconds": seconds, "rss_mb": _usage()["rss_mb"]}


def bench_limit(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    warm_cache(params)
    ours, model = _pairs("train-ours", "limit-model", params, repeats, echo)
    return [row("limit", "trainable / model alone, training images/s",
                statistics.median(r["images"] / r["seconds"] for r in ours),
                statistics.median(r["images"] / r["seconds"] for r in model), True, target=0.9,
                runs=(ours, model))]


THREAD_SETTINGS: dict[str, dict[str, Any]] = {  # name: the trainable's settings
    "1 thread": {"threads": 1}, "2 threads": {"threads": 2},
    "2 threads, with the prefetch thread": {"threads": 2, "prefetch": "on"},
    "2 threads, 1 inter-op thread": {"threads": 2, "interop": 1},
}
QUICK_THREADS = ("1 thread", "2 threads")

_WARM: set[str] = set()  # the caches this bench run has built (data, size, preprocessing)


def warm_cache(params: dict[str, Any]) -> None:
    """Build the trainable's image cache for these images and size before anything is timed,
    once per bench run (a section after another on the same data finds it built)."""
    key = json.dumps([params["data"], params["image_size"], params["preprocess"],
                      os.environ.get("MEDTUNE_CACHE", "")])
    if key not in _WARM:
        measure("input-ours", params)
        _WARM.add(key)


def bench_threads(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    """The trainable's training images/s under each thread setting, against 1 thread (--quick:
    1 and 2 threads, the plumbing)."""
    warm_cache(params)
    settings = {name: THREAD_SETTINGS[name] for name in QUICK_THREADS} if params.get("quick") \
        else THREAD_SETTINGS
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    for i in range(repeats):
        for name, setting in settings.items():
            runs[name].append(measure("train-ours", {**params, **setting}))
        echo(f"  threads: run {i + 1} of {repeats}")
    speed = {name: statistics.median(r["images"] / r["seconds"] for r in rs)
             for name, rs in runs.items()}
    rows = []
    for name in settings:
        r = row("threads", f"{name}: images/s vs 1 thread", speed[name], speed["1 thread"], True,
                runs=(runs[name], runs["1 thread"]))
        r["system_fraction"] = statistics.median(x["system_fraction"] for x in runs[name])
        rows.append(r)
    return rows


MEASURES = {
    "input-ours": measure_input_ours, "input-baseline": measure_input_baseline,
    "train-ours": measure_train_ours, "train-baseline": measure_train_baseline,
    "limit-model": measure_limit_model,
    "overhead-search": bench_tune.measure_overhead_search,
    "efficiency": bench_tune.measure_efficiency, "scale": bench_tune.measure_scale,
    "replay": bench_replay.measure_replay,
    "reproducible": bench_reproducible.measure_reproducible,
    "warmstart": bench_warmstart.measure_warmstart,
    "gain-ours": bench_gain.measure_gain_ours, "gain-baseline": bench_gain.measure_gain_baseline,
}


def _pairs(ours: str, baseline: str, params: dict[str, Any], repeats: int,
           echo: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    a, b = [], []
    for i in range(repeats):  # alternate, so drift on the machine hits both sides alike
        a.append(measure(ours, params))
        b.append(measure(baseline, params))
        echo(f"  {ours} / {baseline}: run {i + 1} of {repeats}")
    return a, b


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def cold_build(params: dict[str, Any], processes: int) -> dict[str, Any]:
    """The cache's one-off cost: built from nothing with `processes` processes."""
    with tempfile.TemporaryDirectory() as empty:
        return measure("input-ours", {**params, "build_only": True, "cache_processes": processes},
                       MEDTUNE_CACHE=empty)


def bench_input(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    cores = node_cores()
    one, every = cold_build(params, 1), cold_build(params, cores)
    every_rate, one_rate = (b["cached_images"] / b["cache_build_seconds"] for b in (every, one))
    warm_cache(params)  # the cache the timed runs read
    ours, base = _pairs("input-ours", "input-baseline", params, repeats, echo)
    speed = [r["images"] / r["seconds"] for r in ours], [r["images"] / r["seconds"] for r in base]
    cpu = [r["cpu_seconds"] / r["images"] for r in ours], [r["cpu_seconds"] / r["images"] for r in base]
    return [
        row("input", "images/s", statistics.median(speed[0]), statistics.median(speed[1]), True,
            target=20.0, runs=(ours, base)),
        row("input", "CPU s/image", statistics.median(cpu[0]), statistics.median(cpu[1]), False,
            runs=(ours, base)),
        row("input", "peak RSS MB", _median(ours, "rss_mb"), _median(base, "rss_mb"), False),
        row("input", f"cache build images/s (once per node): {cores} processes vs 1",
            every_rate, one_rate, True, runs=([every], [one])),
    ]


def bench_train(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    warm_cache(params)
    ours, base = _pairs("train-ours", "train-baseline", params, repeats, echo)
    speed = [r["images"] / r["seconds"] for r in ours], [r["images"] / r["seconds"] for r in base]
    return [row("train", f"{params['model']} images/s", statistics.median(speed[0]),
                 statistics.median(speed[1]), True, runs=(ours, base)),
            row("train", "peak RSS MB", _median(ours, "rss_mb"), _median(base, "rss_mb"), False)]


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


def _ratio(r: dict[str, Any]) -> str:
    """The ratio, with its interval where the row has one (over seeds)."""
    if r.get("low") is None:
        return _num(r["ratio"])
    return f"{_num(r['ratio'])} [{_num(r['low'])}, {_num(r['high'])}]"


def _target(r: dict[str, Any]) -> str:
    if r.get("target") is None:
        return ""
    sign = "<=" if r["ratio"] is None else ">="
    return f"{sign} {r['target']:g}: {'met' if r['met'] else 'MISSED'}"


def table(rows: list[dict[str, Any]]) -> str:
    width = max(10, *(len(_ratio(r)) + 2 for r in rows)) if rows else 10
    lines = [f"{'section':13}{'measure':52}{'medtune':>10}{'baseline':>10}"
             f"{'x better':>{width}}  target"]
    for r in rows:
        lines.append(f"{r['section']:13}{r['measure']:52}{_num(r['ours']):>10}"
                     f"{_num(r['baseline']):>10}{_ratio(r):>{width}}  {_target(r)}")
    return "\n".join(lines)


README_START, README_END = "<!-- bench table: start -->", "<!-- bench table: end -->"


def readme_table(records: list[Path]) -> str:
    """The README's table: for each section (and for replay, each learning-curve table), the
    rows of the newest full-size record that has it, each row naming its record."""
    newest: dict[tuple[str, str, str], tuple[str, Path, dict[str, Any]]] = {}
    for path in records:
        record = json.loads(path.read_text())
        if record["params"].get("quick"):
            continue
        machine = gpu_label(record)
        for key in {(r["section"], r.get("table", ""), machine) for r in record["rows"]}:
            stamp = record.get("finished", path.name)
            if key not in newest or stamp > newest[key][0]:
                newest[key] = (stamp, path, record)
    lines = ["| section | measure | medtune | baseline | x better | target | record |",
             "|---|---|---|---|---|---|---|"]
    for key in sorted(newest, key=lambda k: (k[2], SECTIONS.index(k[0]), k[1])):
        section, curves, machine = key
        _, path, record = newest[key]
        commit = (record["environment"].get("git_commit") or "")[:7]
        # documentation and records do not change a measurement
        changed = [f for f in record["environment"].get("git_changed") or ()
                   if not f.endswith(".md") and not f.startswith("results/")]
        if changed:
            commit += " + changes"
        for r in (r for r in record["rows"]
                  if r["section"] == section and r.get("table", "") == curves):
            lines.append(f"| {section}{machine} | {r['measure']} | {_num(r['ours'])} | {_num(r['baseline'])} "
                         f"| {_ratio(r)} | {_target(r)} | `{path.name}` ({commit}) |")
    return "\n".join(lines)


def gpu_label(record: dict[str, Any]) -> str:
    """" (GPU: its name, model, AMP)" for a --gpu record: its rows are kept apart from the
    CPU's; "" for a CPU's."""
    params = record["params"]
    if not params.get("gpu"):
        return ""
    gpu = ", ".join(record["environment"].get("gpus") or ["a GPU"])
    return f" (GPU: {gpu}, {params['model']}, {params.get('amp', 'bf16')})"


def records_in(folder: Path) -> list[Path]:
    """The bench records in `folder` (the runs written beside a record are not records)."""
    return [p for p in sorted(folder.glob("*.json")) if not p.name.endswith(bench_tune.RUNS_SUFFIX)]


def write_readme(readme: Path, records: list[Path]) -> None:
    """Replace the table between the README's bench markers with one made from `records`."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ConfigError(f"{readme} has no {README_START} ... {README_END} markers")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{readme_table(records)}\n{README_END}{tail}")


BENCHES = {"input": bench_input, "train": bench_train, "limit": bench_limit,
           "threads": bench_threads, "overhead": bench_tune.bench_overhead,
           "efficiency": bench_tune.bench_efficiency, "scale": bench_tune.bench_scale,
           "gain": bench_gain.bench_gain, "replay": bench_replay.bench_replay,
           "reproducible": bench_reproducible.bench_reproducible,
           "warmstart": bench_warmstart.bench_warmstart, "demos": bench_demos.bench_demos}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["collect"]:
        return bench_replay.collect_main(argv[1:])
    if argv[:1] == ["curves"]:
        return bench_replay.curves_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m search.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sections", nargs="*", metavar="SECTION",
                   help=f"any of {', '.join(SECTIONS)} (default: all but "
                        f"{', '.join(ON_REQUEST)})")
    p.add_argument("--quick", action="store_true", help="small sizes: checks the plumbing")
    p.add_argument("--gpu", action="store_true",
                   help="input, train and limit on the GPU (AMP, channels_last, the prefetch "
                        "thread): 224 px, batches of 256 (32 with --quick), 1024 px JPEGs")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"),
                   help="with --gpu: the AMP type (default bf16)")
    p.add_argument("--model", help="input, train, limit, threads: the timm model (default resnet18)")
    p.add_argument("--repeats", type=positive_int, help="runs of each side (default 3; 1 with --quick)")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="DataLoader workers of the baseline (default: the CPUs)")
    p.add_argument("--experiment", default="deepdrid_finetune",
                   help="whose demo data and task the sections run on (default "
                        "deepdrid_finetune: full-size fundus JPEGs)")
    p.add_argument("--seeds", type=positive_int,
                   help="efficiency and replay: seeds of each method (default 5 and 20; 1 with "
                        "--quick)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="efficiency: a fixed config value of every trial (e.g. image_size=96)")
    p.add_argument("--tables", nargs="+", type=Path,
                   help="replay: these learning-curve tables (default: results/bench/curves/)")
    p.add_argument("--out", type=Path, help="the JSON record (default results/bench/bench-<time>.json)")
    p.add_argument("--readme", action="store_true",
                   help="write results/README.md's table from the records in results/bench/ "
                        "and stop")
    p.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:  # one side of one measurement, in its own process
        print(json.dumps(MEASURES[args.measure](json.loads(args.params))), flush=True)
        return 0
    if args.readme:
        records = records_in(Path("results/bench"))
        write_readme(Path("results/README.md"), records)
        print(f"results/README.md: the table from {len(records)} record(s) in results/bench/")
        return 0
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown section {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    sections = args.sections or [s for s in SECTIONS if s not in ON_REQUEST]
    if args.gpu and set(sections) - set(GPU_SECTIONS):
        raise ConfigError(f"--gpu runs {', '.join(GPU_SECTIONS)} only; asked: {', '.join(sections)}")
    if args.amp and not args.gpu:
        raise ConfigError("--amp is for --gpu runs (AMP runs on CUDA only)")
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = bench_sizes(args.quick, args.gpu)
    if args.gpu:
        sizes.update(device="cuda", amp=args.amp or "bf16")
    if args.model:
        sizes["model"] = args.model
    out = args.out or Path("results") / "bench" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    needs_data = bool(set(sections) - {"replay", "gain", "reproducible", "warmstart", "demos"})
    params = {**sizes, **experiment_params(args.experiment, sizes, images=needs_data),
              "workers": args.workers,
              "sets": args.sets, "figures": str(out.parent),
              "tables": [str(t) for t in args.tables or ()]}
    if args.seeds:
        params["seeds"] = params["replay_seeds"] = args.seeds
    echo = lambda line: print(line, flush=True)  # noqa: E731
    rows: list[dict[str, Any]] = []
    for section in sections:
        echo(f"{section}: {repeats} run(s) of each side")
        rows += BENCHES[section](params, repeats, echo)
    print(table(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    from search.engine.environment import describe, git_changed

    out.write_text(json.dumps({"params": params, "repeats": repeats, "rows": rows,
                               "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "environment": {**describe(), "git_changed": git_changed()}},
                              indent=1))
    print(f"written to {out}")
    return 0

