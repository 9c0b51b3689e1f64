"""Dataset readers: a table of images with labels, splits and patients, plus what is wrong with it.

A reader never raises on the first bad row: it returns an `ImageIndex` holding every readable
row and a list of `Problem`s (file and CSV row), so a user sees everything to fix at once.
`validate` adds the checks that need the images (exists, decodes completely).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.data.images import probe_paths
from trainables.data.pool import chunks, plan_processes, run_chunks
from trainables.errors import DatasetError, Problem
from trainables.progress import Progress
from trainables.tasks import task_of

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# label -1 = unlabelled; labels: a tuple of 0/1 per label (multi-label data), else None;
# item: the image's index in an array file (MedMNIST .npz), else -1
COLUMNS = ["split", "image_id", "path", "label", "patient", "csv", "row", "labels", "item"]


@dataclass(frozen=True)
class ReadOptions:
    """How a reader draws the splits a dataset lacks (seeded, stratified, patients together)."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0


@dataclass
class ImageIndex:
    """Every image of a dataset: one row per image, in CSV order, with its split and patient."""

    root: Path
    layout: str
    frame: pd.DataFrame  # COLUMNS
    num_classes: int  # classes, or labels of multi-label data
    class_names: list[str]
    task: str = "grading"  # the kind of labels: grading | classes | multilabel
    channels: int = 3  # 1: every image is grayscale (the cache stores one channel)
    source: str = "files"  # files (one image file per row) | npz (rows are items of `path`)
    drawn_split: bool = False  # medtune drew the splits (ReadOptions): a run folder keeps them
    ids: str = "file"  # a submission's ID: the image's file name (file) or its image_id
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # split -> the CSV file read
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (w, h), by validate
    _rows: list[dict[str, object]] = field(default_factory=list, repr=False)

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    def targets(self, name: str) -> np.ndarray:
        """Labels of a split: int64 (N,) classes, or float32 (N, L) 0/1 for multi-label data."""
        return task_of(self.task).targets(self.split(name), self.num_classes)

    def labelled(self, name: str) -> bool:
        """Whether a split carries labels (a Kaggle-style test split does not)."""
        rows = self.split(name)
        return bool(len(rows)) and bool((rows["label"] >= 0).all())

    def submission_ids(self, name: str) -> list[str]:
        rows = self.split(name)
        if self.ids == "file":
            return [Path(p).name for p in rows["path"]]
        return [str(i) for i in rows["image_id"]]

    def raise_if_problems(self) -> None:
        if self.problems:
            raise DatasetError(str(self.root), self.problems)


DR_GRADES = ["0 no DR", "1 mild", "2 moderate", "3 severe", "4 proliferative"]


def read_deepdrid(root: str | Path) -> ImageIndex:
    """Read DeepDRiD in the course layout ({train,val,test}.csv) or the original release.

    The layout is detected: `train.csv` at the root means the course layout; a
    `regular-fundus-training.csv` anywhere under the root means the original release.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(str(root), [Problem(str(root), "no such directory")])
    if (root / "train.csv").is_file():
        return _read_course(root)
    originals = sorted(root.rglob("regular-fundus-training.csv"))
    if originals:
        return _read_original(root, originals[0].parent.parent)
    raise DatasetError(str(root), [Problem(
        str(root), "not a DeepDRiD folder: expected train.csv, val.csv, test.csv (course layout) "
        "or regular-fundus-training.csv and regular-fundus-validation.csv (original release)")])


def _read_course(root: Path) -> ImageIndex:
    index = _new_index(root, "course")
    for split in SPLITS:
        path = root / f"{split}.csv"
        required = ["image_id", "img_path"] + (["patient_DR_Level"] if split != "test" else [])
        for row, rec in _csv_rows(index, split, path, required):
            image_id = rec["image_id"].strip()
            patient = image_id.split("_")[0]
            rel = rec["img_path"].strip().replace("\\", "/")
            candidates = [root / rel, root / split / patient / f"{image_id}.jpg"]
            image = next((c for c in candidates if c.is_file()), candidates[0])
            label: int | None = (_grade(index, path, row, rec.get("patient_DR_Level"))
                                 if split != "test" else -1)
            _add(index, split, image_id, image, label, patient, path, row)
    return _finish(index)


def _read_original(root: Path, base: Path) -> ImageIndex:
    """The release's `image_path` column is wrong; paths come from patient_id and image_id."""
    index = _new_index(root, "original")
    folders = {"train": "regular-fundus-training", "val": "regular-fundus-validation",
               "test": "regular-fundus-testing"}
    required = ["patient_id", "image_id", "left_eye_DR_Level", "right_eye_DR_Level"]
    for split, name in folders.items():
        hits = sorted(root.rglob(f"{name}.csv"))
        if not hits:
            if split != "test":
                index.problems.append(Problem(str(base / name / f"{name}.csv"), "file not found"))
            continue
        path = hits[0]
        for row, rec in _csv_rows(index, split, path, required):
            image_id, patient = rec["image_id"].strip(), rec["patient_id"].strip()
            image = path.parent / "Images" / patient / f"{image_id}.jpg"
            eye = _eye_of(image_id)
            level = rec.get(f"{eye}_eye_DR_Level") if eye else None
            if level is None or not level.strip():  # fall back to whichever eye is filled in
                level = rec.get("left_eye_DR_Level") or rec.get("right_eye_DR_Level")
            unlabelled_test = split == "test" and not (level or "").strip()
            label = -1 if unlabelled_test else _grade(index, path, row, level)
            _add(index, split, image_id, image, label, patient, path, row)
    return _finish(index)


def _eye_of(image_id: str) -> str | None:
    m = re.search(r"_([lr])\d*$", image_id)
    return {"l": "left", "r": "right"}[m.group(1)] if m else None


def _new_index(root: Path, layout: str) -> ImageIndex:
    return ImageIndex(root=root, layout=layout, frame=pd.DataFrame(columns=COLUMNS),
                      num_classes=5, class_names=list(DR_GRADES))


CSV_ERRORS = (UnicodeDecodeError, csv.Error)  # a file that is not a CSV in UTF-8


def unreadable_csv(path: Path, error: Exception) -> Problem:
    """The problem of a CSV file that cannot be read (one of CSV_ERRORS)."""
    return Problem(str(path), f"not a readable CSV file ({error})")


def _csv_rows(index: ImageIndex, split: str, path: Path,
              required: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, record) of a CSV; a missing file or column is a problem, not a crash."""
    if not path.is_file():
        index.problems.append(Problem(str(path), "file not found"))
        return
    index.sources[split] = path
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, skipinitialspace=True)
            fields = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in fields]
            if missing:
                index.problems.append(Problem(
                    str(path), f"missing column(s) {', '.join(missing)}; found {', '.join(fields)}",
                    row=1))
                return
            for line, rec in enumerate(reader, start=2):
                clean = {(k or "").strip(): (v or "") for k, v in rec.items()}
                if not any(v.strip() for v in clean.values()):
                    index.warnings.append(f"{path} row {line}: empty row skipped")
                    continue
                yield line, clean
    except CSV_ERRORS as e:
        index.problems.append(unreadable_csv(path, e))


def _grade(index: ImageIndex, path: Path, row: int, value: str | None) -> int | None:
    text = (value or "").strip()
    try:
        grade = int(float(text))
        if float(text) != grade:
            raise ValueError
    except ValueError:
        index.problems.append(Problem(str(path), f"label {text!r} is not a whole number", row))
        return None
    if not 0 <= grade < index.num_classes:
        index.problems.append(Problem(
            str(path), f"label {grade} is out of range 0-{index.num_classes - 1}", row))
        return None
    return grade


def _add(index: ImageIndex, split: str, image_id: str, image: Path, label: int | None,
         patient: str, csv_path: Path, row: int, labels: tuple[int, ...] | None = None) -> None:
    if label is None:
        return
    if not image.is_file():
        index.problems.append(Problem(str(csv_path), f"image {image} not found", row))
        return
    index._rows.append({"split": split, "image_id": image_id, "path": str(image), "label": label,
                        "patient": patient, "csv": str(csv_path), "row": row, "labels": labels,
                        "item": -1})


def _finish(index: ImageIndex, *, check_splits: bool = True) -> ImageIndex:
    frame = pd.DataFrame(index._rows, columns=COLUMNS)
    index._rows = []
    frame["label"] = frame["label"].astype("int64")
    frame["row"] = frame["row"].astype("int64")
    frame["item"] = frame["item"].astype("int64")
    key = ["split", "image_id"]
    dupes = frame[frame.duplicated(key, keep="first")]
    firsts = frame.drop_duplicates(key, keep="first").reset_index(drop=True)
    first_of = firsts.set_index(key)
    for rec in dupes.itertuples():
        first = first_of.loc[(rec.split, rec.image_id)]
        if first["label"] != rec.label or first["labels"] != rec.labels:  # cannot be guessed
            index.problems.append(Problem(
                rec.csv, f"image {rec.image_id} is listed twice with different labels: "
                f"{_shown(first['label'], first['labels'])} at row {first['row']}, "
                f"{_shown(rec.label, rec.labels)} here", rec.row))
        else:
            index.warnings.append(f"{rec.csv} row {rec.row}: image {rec.image_id} repeats row "
                                  f"{first['row']} exactly; the repeat is skipped")
    frame = firsts
    index.frame = frame
    if check_splits:  # a reader that draws splits checks them once they are drawn
        _check_splits(index)
    return index


def _shown(label: int, labels: tuple[int, ...] | None) -> str:
    return str(label) if labels is None else "".join(map(str, labels))


def _check_splits(index: ImageIndex, needed: tuple[str, ...] | None = None) -> None:
    # the course layout needs all three splits; the original release's test split is optional
    needed = needed or (SPLITS if index.layout == "course" else ("train", "val", *(
        ("test",) if "test" in index.sources else ())))
    for split in needed:
        if not (index.frame["split"] == split).any():
            where = str(index.sources.get(split, index.root))
            index.problems.append(Problem(where, f"the {split} split has no usable images"))
    by_patient = index.frame.groupby("patient")["split"].unique()
    for patient, splits in by_patient.items():
        if len(splits) > 1:
            rows = index.frame[index.frame["patient"] == patient].drop_duplicates("split")
            where = "; ".join(f"{r.csv} row {r.row}" for r in rows.itertuples())
            index.problems.append(Problem(
                where, f"patient {patient} is in more than one split ({', '.join(sorted(splits))})"))


def validate(index: ImageIndex, *, decode: bool = True, processes: int = 0) -> ImageIndex:
    """Decode every image completely (a process per core; `processes`: how many instead) and
    record failures."""
    if decode and len(index.frame) and index.source == "files":
        paths = index.frame["path"].tolist()
        processes = plan_processes(len(paths), processes)
        jobs = [paths[part.start:part.stop] for part in chunks(len(paths), processes)]
        with Progress(len(paths), "checking images") as progress:
            results = []
            for done in run_chunks(probe_paths, jobs, processes):
                results += done
                progress.update(len(done))
        for rec, (size, error) in zip(index.frame.itertuples(), results, strict=True):
            if error:
                index.problems.append(Problem(rec.csv, f"image {rec.path} {error}", rec.row))
            elif size:
                index.sizes[rec.path] = size
    return index


def summarize(index: ImageIndex) -> str:
    """Images per split and class (positives per label for multi-label data), and image
    sizes, as a short text table."""
    f = index.frame
    lines = [f"{index.root} ({index.layout} layout, {index.task}, "
             f"{'grayscale' if index.channels == 1 else 'RGB'})", ""]
    heading, table = task_of(index.task).label_table(index, SPLITS)
    lines.append(heading)
    lines.append(table.to_string())
    lines.append("")
    lines.append("patients per split: " + ", ".join(
        f"{s} {f[f['split'] == s]['patient'].nunique()}" for s in SPLITS if (f["split"] == s).any()))
    if index.sizes:
        counts = pd.Series([f"{w}x{h}" for w, h in index.sizes.values()]).value_counts()
        lines.append("image sizes: " + ", ".join(f"{k} ({v})" for k, v in counts.head(5).items())
                     + (f", {len(counts) - 5} more" if len(counts) > 5 else ""))
    return "\n".join(lines)
