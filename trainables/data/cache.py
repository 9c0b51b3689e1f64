"""The node-local image cache: each (dataset, preprocessing, size) decoded once per machine.

Layout: `<cache root>/<dataset>-<preprocess>-<size>-<key>/{train,val,test}.npy` (uint8,
N x S x S x C in CSV order; C = 1 for grayscale data, else 3) and `manifest.json`, written
last. A `FileLock` beside the folder makes concurrent trials on a node build it once: the
first builds, the others wait and then read. Trials read the arrays memory-mapped, so N
trials share one copy in the page cache. The manifest holds a fingerprint of the CSVs
(content) and images (size, mtime): a changed source image or CSV rebuilds the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from trainables.data.datasets import ImageIndex
from trainables.data.images import decode_rows
from trainables.data.pool import chunks, plan_processes, run_chunks
from trainables.errors import DatasetError, Problem
from trainables.progress import Progress

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when preprocessing changes what lands in the arrays


def cache_root(configured: str = "") -> Path:
    """`configured`, else $MEDTUNE_CACHE, else ~/.cache/medtune."""
    return Path(configured or os.environ.get("MEDTUNE_CACHE") or Path.home() / ".cache" / "medtune")


def fingerprint(index: ImageIndex) -> str:
    """Hash of the CSV bytes and of every image's path, size and modification time."""
    h = hashlib.sha256()
    for split, csv_path in sorted(index.sources.items()):
        h.update(f"{split}:{csv_path}".encode())
        h.update(csv_path.read_bytes())
    for path in dict.fromkeys(index.frame["path"]):  # an array file's rows share one path
        st = os.stat(path)
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass
class CachedImages:
    """The arrays of one cache entry, memory-mapped; `built` says whether this call built them."""

    folder: Path
    images: dict[str, np.ndarray]
    built: bool


def cache_folder(index: ImageIndex, *, size: int, preprocess: str, root: Path,
                 dataset: str = "deepdrid") -> Path:
    key = hashlib.sha256(
        f"{index.root.resolve()}|{index.layout}|{preprocess}|{size}|{CACHE_VERSION}".encode()
    ).hexdigest()[:12]
    return root / f"{dataset}-{preprocess}-{size}-{key}"


def build_cache(index: ImageIndex, *, size: int, preprocess: str, root: Path | None = None,
                dataset: str = "deepdrid", processes: int = 0) -> CachedImages:
    """Return the cached arrays of `index`, decoding the images first if the cache is stale:
    with a process per core (`processes`: how many instead; 1: in this process).

    Raises:
        DatasetError: an image that cannot be decoded (every such image is listed); nothing
            is written then.
    """
    folder = cache_folder(index, size=size, preprocess=preprocess,
                          root=root or cache_root(), dataset=dataset)
    folder.parent.mkdir(parents=True, exist_ok=True)
    wanted = fingerprint(index)
    lock = FileLock(str(folder) + ".lock")
    with lock:  # concurrent trials on this node wait here while the first one builds
        if _is_fresh(folder, wanted):
            return CachedImages(folder, _open(folder, index), built=False)
        log.info("building the image cache %s (%d images)", folder, len(index.frame))
        started = time.perf_counter()
        folder.mkdir(exist_ok=True)
        (folder / "manifest.json").unlink(missing_ok=True)
        problems: list[Problem] = []
        processes = plan_processes(len(index.frame), processes)
        with Progress(len(index.frame), "building the image cache") as progress:
            for split in sorted(index.frame["split"].unique()):
                problems += _write_split(folder, index, split, size, preprocess, processes,
                                         progress)
        if problems:
            for partial in folder.glob("*.partial.npy"):
                partial.unlink()
            raise DatasetError(str(index.root), problems)
        for partial in folder.glob("*.partial.npy"):
            os.replace(partial, folder / partial.name.replace(".partial", ""))
        manifest = {
            "fingerprint": wanted, "version": CACHE_VERSION, "size": size,
            "preprocess": preprocess, "root": str(index.root.resolve()), "layout": index.layout,
            "counts": index.frame["split"].value_counts().to_dict(),
            "seconds": round(time.perf_counter() - started, 2), "processes": processes,
            "pid": os.getpid(),
        }
        tmp = folder / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, folder / "manifest.json")  # the cache is valid only once this exists
        return CachedImages(folder, _open(folder, index), built=True)


def _write_split(folder: Path, index: ImageIndex, split: str, size: int, preprocess: str,
                 processes: int, progress: Progress) -> list[Problem]:
    rows = index.split(split)
    path = folder / f"{split}.partial.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                              shape=(len(rows), size, size, index.channels)).flush()
    kind = "npz" if index.source == "npz" else "gray" if index.channels == 1 else "fundus"
    spec = (kind, size, preprocess, str(index.sources.get("npz", "")), split)
    paths, items = rows["path"].tolist(), rows["item"].tolist()
    parts = chunks(len(rows), processes)
    jobs = [(str(path), part.start, spec, paths[part.start:part.stop], items[part.start:part.stop])
            for part in parts]
    problems: list[Problem] = []
    for part, failed in zip(parts, run_chunks(decode_rows, jobs, processes), strict=True):
        for i, what in failed:
            rec = rows.iloc[i]
            problems.append(Problem(rec["csv"], f"image {rec['path']} {what}", int(rec["row"])))
        progress.update(len(part))
    return sorted(problems, key=lambda p: (p.file, p.row or 0))


def _is_fresh(folder: Path, wanted: str) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("fingerprint") == wanted and meta.get("version") == CACHE_VERSION


def _open(folder: Path, index: ImageIndex) -> dict[str, np.ndarray]:
    out = {}
    for split in index.frame["split"].unique():
        arr = np.load(folder / f"{split}.npy", mmap_mode="r")
        assert len(arr) == (index.frame["split"] == split).sum(), "cache out of step with CSV"
        out[str(split)] = arr
    return out
