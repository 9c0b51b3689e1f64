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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from trainables.data.datasets import ImageIndex
from trainables.data.images import load_fundus, load_gray, resize_square
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
                dataset: str = "deepdrid", workers: int | None = None) -> CachedImages:
    """Return the cached arrays of `index`, decoding the images first if the cache is stale.

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
        with Progress(len(index.frame), "building the image cache") as progress:
            for split in sorted(index.frame["split"].unique()):
                problems += _write_split(folder, index, split, size, preprocess, workers,
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
            "seconds": round(time.perf_counter() - started, 2), "pid": os.getpid(),
        }
        tmp = folder / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, folder / "manifest.json")  # the cache is valid only once this exists
        return CachedImages(folder, _open(folder, index), built=True)


def _write_split(folder: Path, index: ImageIndex, split: str, size: int, preprocess: str,
                 workers: int | None, progress: Progress) -> list[Problem]:
    rows = index.split(split)
    out = np.lib.format.open_memmap(folder / f"{split}.partial.npy", mode="w+", dtype=np.uint8,
                                    shape=(len(rows), size, size, index.channels))
    problems: list[Problem] = []
    load = _loader(index, split, size, preprocess)
    paths, items = rows["path"].tolist(), rows["item"].tolist()

    def work(i: int) -> None:
        rec = rows.iloc[i]
        try:
            out[i] = load(paths[i], items[i])
        except (OSError, ValueError, SyntaxError) as e:
            problems.append(Problem(rec["csv"], f"image {rec['path']} cannot be decoded "
                                                f"({type(e).__name__}: {e})", int(rec["row"])))

    # decoding releases the GIL, so threads use every core without copying arrays around
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(work, range(len(rows))):
            progress.update()
    out.flush()
    return sorted(problems, key=lambda p: (p.file, p.row or 0))


def _loader(index: ImageIndex, split: str, size: int, preprocess: str) -> Any:
    """fn(path, item) -> uint8 (size, size, C) for one row of `index`."""
    if index.source == "npz":  # MedMNIST: every image of the split in one array
        from PIL import Image

        arrays = np.load(index.sources["npz"], allow_pickle=False)[f"{split}_images"]
        mode = "RGB" if index.channels == 3 else "L"
        return lambda path, item: resize_square(
            Image.fromarray(np.asarray(arrays[item]).reshape(arrays.shape[1:3] + (
                (3,) if mode == "RGB" else ())), mode), size)
    if index.channels == 1:
        return lambda path, item: load_gray(path, size)
    return lambda path, item: load_fundus(path, size, preprocess)


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
