"""Readers of the field's dataset formats besides DeepDRiD (trainables.data.datasets).

- class folders: `root/<class>/*`, `root/{train,val}/<class>/*` or `root/{train,val,test}/<class>/*`
- MedMNIST `.npz` (`{train,val,test}_{images,labels}`), by path or by name in ~/.medmnist
- RFMiD: `RFMiD_{Training,Validation,Testing}_Labels.csv` (`ID`, `Disease_Risk`, 28 diseases)
- IDRiD grading: `Image name, Retinopathy grade, ...`, `<Image name>.jpg`
- APTOS 2019: `train.csv` (`id_code,diagnosis`) and `test.csv`, `<id_code>.png`
- Kaggle DR Resized: `trainLabels.csv` (`image,level`), `<image>.jpeg`

Each returns an `ImageIndex` with every problem listed (file and row), never the first alone.
Splits a format lacks are drawn by `trainables.data.splits` from `ReadOptions`. `read_dataset` reads
any kind, DeepDRiD's too (`readers()`: every kind).
"""

from __future__ import annotations

import functools
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from trainables.data.datasets import (
    COLUMNS,
    CSV_ERRORS,
    DR_GRADES,
    SPLITS,
    ImageIndex,
    ReadOptions,
    _add,
    _check_splits,
    _csv_rows,
    _finish,
    _grade,
    _new_index,
    read_deepdrid,
    unreadable_csv,
)
from trainables.data.splits import draw_splits
from trainables.errors import DatasetError, Problem

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
MEDMNIST_HOME = Path("~/.medmnist")


def _no_dir(root: Path, what: str) -> DatasetError:
    return DatasetError(str(root), [Problem(str(root), f"no such directory ({what})")])


def _index(root: Path, layout: str, task: str, names: list[str]) -> ImageIndex:
    index = _new_index(root, layout)
    index.task, index.class_names, index.num_classes = task, list(names), len(names)
    return index


def _redraw(index: ImageIndex, options: ReadOptions, *, from_split: str = "train",
            val: bool = True, test: bool = False) -> None:
    """Draw val (and test) out of `from_split`'s rows, patients together, stratified."""
    frame = index.frame
    rows = frame["split"] == from_split
    if not rows.any():
        return
    splits, warnings = draw_splits(
        frame.loc[rows, "label"].to_numpy(), frame.loc[rows, "patient"].to_numpy(),
        val_fraction=options.val_fraction if val else 0.0,
        test_fraction=options.test_fraction if test else 0.0, seed=options.split_seed)
    frame.loc[rows, "split"] = splits
    index.warnings += warnings
    index.drawn_split = True


# ---- class folders ----------------------------------------------------------------------

def read_class_folders(root: str | Path, options: ReadOptions) -> ImageIndex:
    """`root/<class>/*` (split here: seeded, stratified), or `root/{train,val[,test]}/<class>/*`."""
    root = Path(root)
    if not root.is_dir():
        raise _no_dir(root, "expected class folders: ROOT/<class>/* or ROOT/{train,val,test}/<class>/*")
    presplit = (root / "train").is_dir() and (root / "val").is_dir()
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()} if presplit else {"train": root}
    classes = _subfolders(split_dirs["train"])
    index = _index(root, "split" if presplit else "raw", "classes", classes)
    if len(classes) < 2:
        index.problems.append(Problem(str(split_dirs["train"]), (
            f"one class folder only ({classes[0]}): a classifier needs two or more"
            if classes else "no class folders found")))
        return index
    skipped: list[str] = []
    for split, folder in split_dirs.items():
        for name in _subfolders(folder):
            if name not in classes:
                index.problems.append(Problem(str(folder / name), f"class {name!r} is in {split} "
                                              "but not in train"))
                continue
            files = sorted(p for p in (folder / name).rglob("*") if p.is_file())
            images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            skipped += [str(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
            if not images:
                index.problems.append(Problem(str(folder / name), "empty class folder (no images)"))
            for path in images:
                image_id = path.relative_to(folder).as_posix()
                index._rows.append({"split": split, "image_id": image_id, "path": str(path),
                                    "label": classes.index(name),
                                    "patient": f"{split}:{image_id}" if presplit else image_id,
                                    "csv": str(path), "row": 0, "labels": None, "item": -1})
        missing = set(classes) - set(_subfolders(folder))
        if split != "train" and missing:
            index.warnings.append(f"{folder}: no folder for class(es) {', '.join(sorted(missing))}")
    if skipped:
        index.warnings.append(f"skipped {len(skipped)} non-image file(s), e.g. {skipped[0]}")
    index.frame = pd.DataFrame(index._rows, columns=COLUMNS)
    index._rows = []
    index.ids = "image_id"
    if not presplit:
        _redraw(index, options, val=True, test=options.test_fraction > 0)
    index.channels = _channels(index.frame["path"].tolist())
    _check_splits(index, tuple(s for s in SPLITS if s in split_dirs or (not presplit
                               and (s != "test" or options.test_fraction > 0))))
    return index


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _channels(paths: list[str], sample: int = 64) -> int:
    """1 when every sampled image is grayscale (header only: cheap), else 3."""
    if not paths:
        return 3
    step = max(1, len(paths) // sample)
    for path in paths[::step]:
        try:
            with Image.open(path) as im:
                if im.mode not in GRAY_MODES:
                    return 3
        except OSError:
            continue  # validate() and the cache report unreadable images
    return 1


# ---- MedMNIST .npz ----------------------------------------------------------------------

# what reading a broken .npz raises: not a zip (pickle refused), cut short, a bad member
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def medmnist_file(data: str | Path) -> Path:
    """`data` as a path, or a MedMNIST name (`pathmnist`, `pathmnist_64`) in ~/.medmnist."""
    path = Path(data).expanduser()
    if path.suffix == ".npz" or path.exists() or os.sep in str(data):
        return path
    return MEDMNIST_HOME.expanduser() / f"{data}.npz"


def read_medmnist_npz(data: str | Path, options: ReadOptions) -> ImageIndex:
    """A MedMNIST `.npz` as the `medmnist` package writes it; nothing is downloaded."""
    path = medmnist_file(data)
    if not path.is_file():
        flag = path.stem.split("_")[0]
        size = path.stem.split("_")[1] if "_" in path.stem else "28"
        raise DatasetError(str(path), [Problem(str(path), (
            "not found; nothing downloads at run time. On a machine with a network: pip install "
            "medmnist, then python -c \"import medmnist as m; getattr(m, m.INFO["
            f"'{flag}']['python_class'])(split='train', download=True, size={size})\" writes it "
            "to ~/.medmnist; copy it here, or pass --data FILE"))])
    try:
        arrays = np.load(path, allow_pickle=False, mmap_mode=None)
        keys = set(arrays.files)
        wanted = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
        missing = [k for k in wanted if k not in keys]
        if missing:
            raise DatasetError(str(path), [Problem(str(path), f"missing array(s) "
                                                   f"{', '.join(missing)}; found "
                                                   f"{', '.join(sorted(keys))}")])
        labels = {s: np.asarray(arrays[f"{s}_labels"]) for s in SPLITS}
        shapes = {s: arrays[f"{s}_images"].shape for s in SPLITS}  # reads the header and data
    except NPZ_ERRORS as e:  # not a zip, cut short, a member that does not inflate
        raise DatasetError(str(path), [Problem(str(path), f"not a readable .npz file "
                                               f"({type(e).__name__}: {e})")]) from None
    # one row per image: (N,), (N, 1) and (N, labels) alike, an empty split included
    flat = {s: labels[s].reshape(len(labels[s]), int(np.prod(labels[s].shape[1:], dtype=int)))
            for s in SPLITS}
    width = flat["train"].shape[1]
    multilabel = width > 1
    problems: list[Problem] = []
    for s in SPLITS:
        if len(labels[s]) != shapes[s][0]:
            problems.append(Problem(str(path), f"{s}_labels has {len(labels[s])} rows but "
                                    f"{s}_images {shapes[s][0]}"))
        if len(shapes[s]) not in (3, 4) or (len(shapes[s]) == 4 and shapes[s][3] not in (1, 3)):
            problems.append(Problem(str(path), f"{s}_images has shape {shapes[s]}: expected "
                                    "(N, H, W) or (N, H, W, 3)"))
        if not _label_values_ok(flat[s], multilabel):
            problems.append(Problem(str(path), f"{s}_labels holds values other than "
                                    f"{'0 and 1' if multilabel else 'class numbers >= 0'}"))
    if problems:
        raise DatasetError(str(path), problems)
    if multilabel:
        names = [str(j) for j in range(width)]
    else:
        names = [str(c) for c in range(int(max((flat[s].max() for s in SPLITS if len(flat[s])),
                                               default=0)) + 1)]
    index = _index(path, "npz", "multilabel" if multilabel else "classes", names)
    frames = []
    for s in SPLITS:
        n = len(flat[s])
        frames.append(pd.DataFrame({
            "split": s, "image_id": [f"{s}_{i}" for i in range(n)], "path": str(path),
            "label": 0 if multilabel else flat[s][:, 0].astype(np.int64),
            "patient": [f"{s}_{i}" for i in range(n)], "csv": str(path), "row": 0,
            "labels": [tuple(int(v) for v in r) for r in flat[s]] if multilabel else None,
            "item": np.arange(n)}))
    index.frame = pd.concat(frames, ignore_index=True)[COLUMNS]
    index.source, index.ids = "npz", "image_id"
    index.channels = 3 if len(shapes["train"]) == 4 and shapes["train"][3] == 3 else 1
    index.sources = {"npz": path}
    _check_splits(index, SPLITS)
    return index


def _label_values_ok(values: np.ndarray, multilabel: bool) -> bool:
    """0/1 flags (multi-label), or whole class numbers >= 0, stored as numbers."""
    if values.dtype != bool and not (np.issubdtype(values.dtype, np.integer)
                                     or np.issubdtype(values.dtype, np.floating)):
        return False
    if multilabel:
        return bool(np.isin(values, (0, 1)).all())
    return bool((values >= 0).all() and (values == np.floor(values)).all())


def read_medmnist(data: str | Path, options: ReadOptions) -> ImageIndex:
    """The `medmnist` experiment's data: a MedMNIST .npz (file or name), or class folders."""
    path = Path(data).expanduser()
    if path.is_dir():
        return read_class_folders(path, options)
    return read_medmnist_npz(data, options)


# ---- RFMiD ------------------------------------------------------------------------------

RFMID_FILES = {"train": "RFMiD_Training_Labels.csv", "val": "RFMiD_Validation_Labels.csv",
               "test": "RFMiD_Testing_Labels.csv"}
RFMID_IMAGE_DIRS = {"train": "Training", "val": "Validation", "test": "Test"}


def read_rfmid(root: str | Path, options: ReadOptions) -> ImageIndex:
    """RFMiD as released: per split a labels CSV (`ID`, `Disease_Risk`, then one 0/1 column per
    disease, in the release's order) and `<ID>.png` in the split's image folder."""
    root = Path(root)
    if not root.is_dir():
        raise _no_dir(root, "expected RFMiD_Training_Labels.csv, RFMiD_Validation_Labels.csv")
    found = {s: sorted(root.rglob(name)) for s, name in RFMID_FILES.items()}
    if not found["train"]:
        raise DatasetError(str(root), [Problem(str(root), "not an RFMiD folder: no "
                                               "RFMiD_Training_Labels.csv under it")])
    names = _rfmid_columns(found["train"][0])
    index = _index(root, "rfmid", "multilabel", names)
    for split in SPLITS:
        if not found[split]:
            if split != "test":
                index.problems.append(Problem(str(root / RFMID_FILES[split]), "file not found"))
            continue
        path = found[split][0]
        folder = _image_folder(path.parent, RFMID_IMAGE_DIRS[split])
        # the header only: a missing ID or Disease_Risk is listed below with the rest
        try:
            extra = [c for c in _csv_header(path) if c and c not in ("ID", *names)] \
                if split != "train" else []
        except DatasetError as e:
            index.problems += e.problems
            continue
        if extra:  # a label that train lacks would be dropped here without a word
            index.problems.append(Problem(
                str(path), f"label column(s) {', '.join(extra)} not in {found['train'][0].name}: "
                "every split must name the same labels", 1))
            continue
        for row, rec in _csv_rows(index, split, path, ["ID", *names]):
            values, bad = [], []
            for name in names:
                text = rec.get(name, "").strip()
                if text in ("0", "1", "0.0", "1.0"):
                    values.append(int(float(text)))
                else:
                    bad.append(f"{name}={text!r}")
            if bad:
                index.problems.append(Problem(str(path), f"labels must be 0 or 1: {', '.join(bad)}",
                                              row))
                continue
            image_id = rec["ID"].strip()
            image = folder / f"{image_id}.png"
            # IDs restart at 1 in every split of the release: a patient is an ID within a split
            _add(index, split, image_id, image, 0, f"{split}:{image_id}", path, row,
                 labels=tuple(values))
    index.ids = "image_id"
    _finish(index)
    train = index.targets("train") if len(index.frame) else np.zeros((0, len(names)))
    empty = [n for n, c in zip(names, train.sum(axis=0), strict=True) if c == 0]
    if empty and len(train):
        index.warnings.append(f"no positive in train for label(s) {', '.join(empty)}: the model "
                              "cannot learn them")
    return index


def _csv_header(path: Path) -> list[str]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    except CSV_ERRORS as e:
        raise DatasetError(str(path), [unreadable_csv(path, e)]) from None


def _rfmid_columns(path: Path) -> list[str]:
    header = _csv_header(path)
    missing = [c for c in ("ID", "Disease_Risk") if c not in header]
    if missing:
        raise DatasetError(str(path), [Problem(str(path), f"missing column(s) {', '.join(missing)};"
                                               f" found {', '.join(header)}", 1)])
    return [c for c in header if c != "ID" and c]


def _image_folder(base: Path, name: str) -> Path:
    """`base/<name>` (or the one folder of that name below base), else base."""
    if (base / name).is_dir():
        return base / name
    hits = [p for p in base.rglob(name) if p.is_dir()]
    return hits[0] if hits else base


# ---- DR grading sets: IDRiD, APTOS 2019, Kaggle DR Resized --------------------------------

def _image_map(root: Path, suffix: str) -> dict[str, Path]:
    return {p.stem: p for p in root.rglob(f"*{suffix}") if p.is_file()}


def _read_graded_csv(index: ImageIndex, split: str, path: Path, id_col: str, grade_col: str | None,
                     images: dict[str, Path], suffix: str,
                     patient_of: Callable[[str], str] = lambda i: i) -> None:
    required = [id_col] + ([grade_col] if grade_col else [])
    # a listed image that is not there is named where its set's other images are
    folder = Counter(p.parent for p in images.values()).most_common(1)[0][0] if images \
        else path.parent
    for row, rec in _csv_rows(index, split, path, required):
        image_id = rec[id_col].strip()
        if not image_id:
            index.problems.append(Problem(str(path), f"empty {id_col}", row))
            continue
        label = _grade(index, path, row, rec.get(grade_col)) if grade_col else -1
        image = images.get(image_id, folder / f"{image_id}{suffix}")
        _add(index, split, image_id, image, label, patient_of(image_id), path, row)


def read_idrid(root: str | Path, options: ReadOptions) -> ImageIndex:
    """IDRiD disease grading: the training and testing label CSVs (header spaces stripped),
    images `<Image name>.jpg` anywhere under root; val is drawn from train."""
    root = Path(root)
    if not root.is_dir():
        raise _no_dir(root, "expected IDRiD's Disease Grading folder")
    index = _index(root, "idrid", "grading", DR_GRADES)
    for split, name in (("train", "Training"), ("test", "Testing")):
        hits = sorted(root.rglob(f"*{name} Labels.csv"))
        if not hits:
            if split == "train":
                index.problems.append(Problem(str(root / "IDRiD_Disease Grading_Training "
                                                         "Labels.csv"), "file not found"))
            continue
        # image names restart in each set (IDRiD_001.jpg is in both): look in the set's folder
        folders = sorted(p for p in root.rglob(f"*{name} Set") if p.is_dir())
        images = _image_map(folders[0] if folders else root, ".jpg")
        _read_graded_csv(index, split, hits[0], "Image name", "Retinopathy grade", images, ".jpg",
                         patient_of=functools.partial("{}:{}".format, split))
    _finish_drawn(index, options)
    return index


def read_aptos(root: str | Path, options: ReadOptions) -> ImageIndex:
    """APTOS 2019: `train.csv` (id_code, diagnosis) and, if present, `test.csv` (id_code);
    images `<id_code>.png` (train_images/, test_images/); val is drawn from train."""
    root = Path(root)
    if not root.is_dir():
        raise _no_dir(root, "expected APTOS 2019's train.csv and train_images/")
    index = _index(root, "aptos", "grading", DR_GRADES)
    for split, name, grade in (("train", "train.csv", "diagnosis"), ("test", "test.csv", None)):
        path = root / name
        if not path.is_file() and split == "test":
            continue
        folder = root / f"{split}_images"
        images = _image_map(folder if folder.is_dir() else root, ".png")
        _read_graded_csv(index, split, path, "id_code", grade, images, ".png")
    _finish_drawn(index, options)
    return index


def read_kaggle_dr(root: str | Path, options: ReadOptions) -> ImageIndex:
    """Kaggle DR Resized: `trainLabels.csv` (image, level), `<image>.jpeg` anywhere under root.
    Val and test are drawn with both eyes of a patient (`<patient>_left/right`) in one split."""
    root = Path(root)
    if not root.is_dir():
        raise _no_dir(root, "expected Kaggle DR Resized's trainLabels.csv and images")
    index = _index(root, "kaggle_dr", "grading", DR_GRADES)
    hits = sorted(root.rglob("trainLabels.csv"))
    path = hits[0] if hits else root / "trainLabels.csv"
    _read_graded_csv(index, "train", path, "image", "level", _image_map(root, ".jpeg"), ".jpeg",
                     patient_of=lambda i: i.rsplit("_", 1)[0])
    _finish_drawn(index, options, test=True)
    return index


def _finish_drawn(index: ImageIndex, options: ReadOptions, *, test: bool = False) -> None:
    had = set(index.sources)
    _finish(index, check_splits=False)
    _redraw(index, options, val=True, test=test and options.test_fraction > 0)
    needed = ("train", "val", *(("test",) if "test" in had or (test and options.test_fraction > 0)
                                 else ()))
    _check_splits(index, needed)


READERS: dict[str, Callable[[str | Path, ReadOptions], ImageIndex]] = {
    "imagefolder": read_class_folders,
    "medmnist": read_medmnist,
    "medmnist_npz": read_medmnist_npz,
    "rfmid": read_rfmid,
    "idrid": read_idrid,
    "aptos": read_aptos,
    "kaggle_dr": read_kaggle_dr,
}


def readers() -> dict[str, Callable[[str | Path, ReadOptions], ImageIndex]]:
    """Every dataset kind: DeepDRiD's reader (trainables.data.datasets) and the others'."""
    return {"deepdrid": lambda root, options: read_deepdrid(root), **READERS}


def read_dataset(kind: str, root: str | Path, *,
                 options: ReadOptions | None = None) -> ImageIndex:
    known = readers()
    if kind not in known:
        raise DatasetError(str(root), [Problem(
            str(root), f"unknown dataset kind {kind!r}; known: {', '.join(known)}")])
    return known[kind](root, options or ReadOptions())
