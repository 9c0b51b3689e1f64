"""Readers of class folders, MedMNIST .npz, RFMiD, IDRiD, APTOS and Kaggle DR, on small generated
files in each real layout, with their errors; and `search.data` for every format."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.cli import EXIT_PROBLEMS
from search.cli import run as cli_run
from search.data import main as data_main
from tests.helpers import read_rows, write_rows
from trainables.data.cache import cache_root
from trainables.data.datasets import ReadOptions
from trainables.data.demo_sets import FINDINGS, SHAPE_CLASSES, SHAPES_PER_CLASS, ensure_demo
from trainables.data.formats import read_dataset
from trainables.errors import DatasetError


@pytest.fixture(scope="module")
def demos() -> dict[str, Path]:
    """Every format's demo set, as `--demo` finds it (generated once into the test session's
    cache, which the end-to-end runs share; do not modify: copy first)."""
    return {kind: ensure_demo(kind, cache_root())
            for kind in ("medmnist", "imagefolder", "medmnist_npz", "rfmid", "idrid", "aptos",
                         "kaggle_dr", "chestxray")}


def copy(demos: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demos[kind], tmp_path / kind))


def test_split_class_folders_read_as_written(demos: dict[str, Path]) -> None:
    index = read_dataset("medmnist", demos["medmnist"])
    assert index.problems == [] and index.task == "classes" and index.channels == 1
    assert index.class_names == sorted(SHAPE_CLASSES) and not index.drawn_split
    for split, count in SHAPES_PER_CLASS.items():
        rows = index.split(split)
        assert len(rows) == count * 6
        # every image sits under its own class's folder
        assert all(Path(p).parent.name == index.class_names[c]
                   for p, c in zip(rows["path"], rows["label"], strict=True))
    assert index.submission_ids("test")[0].count("/") == 1  # <class>/<file>: unique in the split


def test_a_raw_tree_is_split_stratified_and_reproducibly(demos: dict[str, Path]) -> None:
    options = ReadOptions(val_fraction=0.2, test_fraction=0.1, split_seed=3)
    first = read_dataset("imagefolder", demos["imagefolder"], options=options)
    again = read_dataset("imagefolder", demos["imagefolder"], options=options)
    other = read_dataset("imagefolder", demos["imagefolder"],
                         options=ReadOptions(val_fraction=0.2, test_fraction=0.1, split_seed=4))
    assert first.drawn_split and first.problems == []
    assert first.frame["split"].tolist() == again.frame["split"].tolist()
    assert first.frame["split"].tolist() != other.frame["split"].tolist()
    per_class = first.frame.groupby(["label", "split"]).size().unstack()
    total = sum(SHAPES_PER_CLASS.values())  # images per class in the raw tree
    assert (per_class["val"] == round(0.2 * total)).all()  # stratified: the same in every class
    assert (per_class["test"] == round(0.1 * total)).all()


def test_class_folder_errors_name_the_folder(demos: dict[str, Path], tmp_path: Path) -> None:
    root = copy(demos, "medmnist", tmp_path)
    (root / "train" / "empty_class").mkdir()
    (root / "val" / "unseen").mkdir()
    shutil.copy(next((root / "val" / "round_striped").glob("*.jpeg")), root / "val" / "unseen")
    (root / "train" / "round_striped" / "notes.txt").write_text("not an image")
    index = read_dataset("medmnist", root)
    messages = [str(p) for p in index.problems]
    assert any("empty_class: empty class folder" in m for m in messages)
    assert any("unseen: class 'unseen' is in val but not in train" in m for m in messages)
    assert any("skipped 1 non-image file(s)" in w for w in index.warnings)
    with pytest.raises(DatasetError, match="empty class folder"):
        index.raise_if_problems()


def test_rgb_class_folders_keep_three_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
                    tmp_path / split / name / f"{i}.png")
    index = read_dataset("imagefolder", tmp_path)
    assert index.problems == [] and index.channels == 3 and index.num_classes == 2
    assert set(index.frame["split"]) == {"train", "val"}  # no test folder: no test split


def test_a_medmnist_npz_by_path_and_by_name(demos: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    index = read_dataset("medmnist", demos["medmnist_npz"])
    assert index.source == "npz" and index.task == "classes" and index.channels == 1
    assert index.num_classes == 6 and len(index.split("train")) == 6 * SHAPES_PER_CLASS["train"]
    home = tmp_path / "home"
    (home / ".medmnist").mkdir(parents=True)
    shutil.copy(demos["medmnist_npz"], home / ".medmnist" / "shapesmnist_64.npz")
    monkeypatch.setenv("HOME", str(home))
    by_name = read_dataset("medmnist", "shapesmnist_64")
    assert by_name.frame["label"].tolist() == index.frame["label"].tolist()
    with pytest.raises(DatasetError, match=r"pathmnist_64.npz: not found; nothing downloads at "
                                           r"run time.*INFO\['pathmnist'\].*size=64"):
        read_dataset("medmnist", "pathmnist_64")


def test_a_multi_label_npz_and_broken_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 14), dtype=np.uint8)
    np.savez(tmp_path / "chestlike.npz", **arrays)  # type: ignore[arg-type]
    index = read_dataset("medmnist_npz", tmp_path / "chestlike.npz")
    assert index.task == "multilabel" and index.num_classes == 14 and index.channels == 3
    assert np.array_equal(index.targets("val"), arrays["val_labels"])
    np.savez(tmp_path / "short.npz", **{k: v for k, v in arrays.items()  # type: ignore[arg-type]
                                        if k != "test_labels"})
    with pytest.raises(DatasetError, match="missing array\\(s\\) test_labels"):
        read_dataset("medmnist_npz", tmp_path / "short.npz")
    arrays["val_labels"] = arrays["val_labels"][:3]
    np.savez(tmp_path / "uneven.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="val_labels has 3 rows but val_images 6"):
        read_dataset("medmnist_npz", tmp_path / "uneven.npz")


def test_rfmid_reads_every_label_in_the_release_order(demos: dict[str, Path]) -> None:
    index = read_dataset("rfmid", demos["rfmid"])
    assert index.problems == [] and index.task == "multilabel"
    assert index.class_names == ["Disease_Risk", *FINDINGS]
    _, rows = read_rows(demos["rfmid"] / "Evaluation_Set" / "RFMiD_Validation_Labels.csv")
    expected = np.array([[int(v) for v in r[1:]] for r in rows], dtype=np.float32)
    assert np.array_equal(index.targets("val"), expected)
    assert index.submission_ids("test")[:2] == ["1", "2"]  # the release's ID column
    # IDs restart in every split: the same ID in train and val is two eyes, not one patient
    assert set(index.split("train")["image_id"]) & set(index.split("val")["image_id"])


def test_rfmid_errors_name_file_and_row(demos: dict[str, Path], tmp_path: Path) -> None:
    root = copy(demos, "rfmid", tmp_path)
    labels = root / "Training_Set" / "RFMiD_Training_Labels.csv"
    header, rows = read_rows(labels)
    rows[0][2] = "2"  # not 0 or 1
    (root / "Training_Set" / "Training" / f"{rows[1][0]}.png").unlink()
    for row in rows:
        row[header.index("NV")] = "0"  # no positive left in train
    write_rows(labels, header, rows)
    index = read_dataset("rfmid", root)
    messages = [str(p) for p in index.problems]
    assert f"{labels} row 2: labels must be 0 or 1: HEM='2'" in messages
    assert any(m.startswith(f"{labels} row 3: image ") and m.endswith("not found") for m in messages)
    assert any("no positive in train for label(s) NV" in w for w in index.warnings)
    write_rows(labels, [c for c in header if c != "Disease_Risk"], [r[:1] + r[2:] for r in rows])
    with pytest.raises(DatasetError, match="missing column\\(s\\) Disease_Risk"):
        read_dataset("rfmid", root)


def test_rfmid_splits_must_name_the_same_labels(demos: dict[str, Path], tmp_path: Path) -> None:
    """A training CSV that lacks a label the validation and test CSVs have (here CWS) is
    refused, the column and both files named: that label would be dropped without a word."""
    root = copy(demos, "rfmid", tmp_path)
    labels = root / "Training_Set" / "RFMiD_Training_Labels.csv"
    header, rows = read_rows(labels)
    drop = header.index("CWS")
    write_rows(labels, header[:drop] + header[drop + 1:], [r[:drop] + r[drop + 1:] for r in rows])
    index = read_dataset("rfmid", root)
    messages = [str(p) for p in index.problems]
    for name in ("RFMiD_Validation_Labels.csv", "RFMiD_Testing_Labels.csv"):
        path = next(root.rglob(name))
        assert f"{path} row 1: label column(s) CWS not in RFMiD_Training_Labels.csv: every " \
               "split must name the same labels" in messages, messages
    with pytest.raises(DatasetError, match=r"CWS not in RFMiD_Training_Labels\.csv"):
        index.raise_if_problems()
    # a split's CSV without Disease_Risk is listed with the other problems, not raised alone
    root = copy(demos, "rfmid", tmp_path / "no-risk")
    val = next(root.rglob("RFMiD_Validation_Labels.csv"))
    header, rows = read_rows(val)
    risk = header.index("Disease_Risk")
    write_rows(val, header[:risk] + header[risk + 1:], [r[:risk] + r[risk + 1:] for r in rows])
    messages = [str(p) for p in read_dataset("rfmid", root).problems]
    assert any(m.startswith(f"{val} row 1: missing column(s) Disease_Risk") for m in messages)


def test_one_class_folder_is_not_a_classification_set(tmp_path: Path) -> None:
    from PIL import Image

    for layout, folders in (("raw", ["normal"]), ("split", ["train/normal", "val/normal"])):
        for folder in folders:
            (tmp_path / layout / folder).mkdir(parents=True)
            for i in range(4):
                Image.new("L", (8, 8), 40 * i).save(tmp_path / layout / folder / f"{i}.png")
        index = read_dataset("imagefolder", tmp_path / layout)
        where = tmp_path / layout / ("train" if layout == "split" else "")
        assert [str(p) for p in index.problems] == [
            f"{str(where).rstrip('/')}: one class folder only (normal): a classifier needs two "
            "or more"]


def test_idrid_strips_header_spaces_and_checks_grades(demos: dict[str, Path],
                                                      tmp_path: Path) -> None:
    index = read_dataset("idrid", demos["idrid"], options=ReadOptions(val_fraction=0.2))
    assert index.problems == [] and index.drawn_split
    assert {"train", "val", "test"} == set(index.frame["split"])
    assert index.labelled("test")  # IDRiD's test set has grades
    root = copy(demos, "idrid", tmp_path)
    labels = next(root.rglob("*Training Labels.csv"))
    header, rows = read_rows(labels)
    rows[4][1] = "7"
    write_rows(labels, [f" {c} " for c in header], rows)
    index = read_dataset("idrid", root)
    assert [str(p) for p in index.problems] == [f"{labels} row 6: label 7 is out of range 0-4"]
    # IDRiD_001.jpg exists in both sets: each split reads its own folder's image
    train, test = index.split("train"), index.split("test")
    one = "IDRiD_001"
    paths = [p for p in (*train["path"], *index.split("val")["path"]) if Path(p).stem == one]
    assert "Training Set" in paths[0] and "Testing Set" in test["path"][0]


def test_aptos_and_kaggle_draw_val_and_keep_eyes_together(demos: dict[str, Path]) -> None:
    aptos = read_dataset("aptos", demos["aptos"])
    assert aptos.problems == [] and not aptos.labelled("test")
    assert len(aptos.split("val")) > 0
    kaggle = read_dataset("kaggle_dr", demos["kaggle_dr"])
    assert kaggle.problems == [] and set(kaggle.frame["split"]) == {"train", "val", "test"}
    splits = kaggle.frame.groupby("patient")["split"].nunique()
    assert (splits == 1).all() and kaggle.frame.groupby("patient").size().max() == 2


@pytest.mark.parametrize("kind", ["medmnist", "imagefolder", "medmnist_npz", "rfmid", "idrid",
                                  "aptos", "kaggle_dr"])
def test_search_data_checks_every_format(kind: str, demos: dict[str, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert data_main(["check", kind, "--data", str(demos[kind])]) == 0
    assert ": OK," in capsys.readouterr().out


def test_search_data_demo_writes_a_format_and_refuses_a_wrong_layout(tmp_path: Path) -> None:
    from trainables.errors import ConfigError

    assert data_main(["demo", "medmnist", "--out", str(tmp_path / "npz"), "--layout", "npz"]) == 0
    assert (tmp_path / "npz" / "shapesmnist_64.npz").is_file()
    with pytest.raises(ConfigError, match="--layout 'course': this demo set has split, raw, npz"):
        data_main(["demo", "medmnist", "--out", str(tmp_path / "x"), "--layout", "course"])


def test_the_chest_radiographs_are_a_raw_grayscale_class_tree_split_70_15_15(
        demos: dict[str, Path]) -> None:
    from trainables.data.demo_sets import CHEST_CLASSES

    index = read_dataset("imagefolder", demos["chestxray"])
    assert index.problems == [] and index.channels == 1 and index.drawn_split
    assert index.class_names == sorted(CHEST_CLASSES)
    sizes = {split: len(index.split(split)) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == 360 and sizes["val"] == sizes["test"] == 54
    for split in ("val", "test"):  # stratified: every class equally
        assert index.split(split)["label"].value_counts().tolist() == [18, 18, 18]


# ---- every reader against the same faults -------------------------------------------------
# Each labelled format's training CSV (or an image it names) is broken in the same ways, and
# `python -m search.data check` must answer each with a line naming the file and row (exit 1,
# no traceback), or accept what the format allows (exit 0, the images all read).

@dataclass(frozen=True)
class Labelled:
    """Where a format keeps its training labels: the CSV, its ID and label columns, the image a
    row names, and how it words a label it refuses."""

    name: str
    kind: str
    csv: str  # the training CSV's name, found under the set
    id: str
    labels: tuple[str, ...]  # the label column(s) a fault edits (DeepDRiD's original: per eye)
    image: Callable[[Path, dict[str, str]], Path]  # (the CSV, a row) -> its image
    out_of_range: str
    refused: Callable[[str], str]  # a refused label value -> the problem's words


def _graded(value: str) -> str:
    try:
        return f"label {int(value)} is out of range 0-4"
    except ValueError:
        return f"label {value!r} is not a whole number"


LABELLED = [
    Labelled("deepdrid course", "deepdrid", "train.csv", "image_id", ("patient_DR_Level",),
             lambda csv, r: csv.parent / r["img_path"].replace("\\", "/"), "5", _graded),
    Labelled("deepdrid original", "deepdrid", "regular-fundus-training.csv", "image_id",
             ("left_eye_DR_Level", "right_eye_DR_Level"),
             lambda csv, r: csv.parent / "Images" / r["patient_id"] / f"{r['image_id']}.jpg", "5",
             _graded),
    Labelled("rfmid", "rfmid", "RFMiD_Training_Labels.csv", "ID", ("Disease_Risk",),
             lambda csv, r: csv.parent / "Training" / f"{r['ID']}.png", "2",
             lambda v: f"labels must be 0 or 1: Disease_Risk={v!r}"),
    Labelled("idrid", "idrid", "a. IDRiD_Disease Grading_Training Labels.csv", "Image name",
             ("Retinopathy grade",), lambda csv, r: csv.parent.parent / "1. Original Images" /
             "a. Training Set" / f"{r['Image name']}.jpg", "7", _graded),
    Labelled("aptos", "aptos", "train.csv", "id_code", ("diagnosis",),
             lambda csv, r: csv.parent / "train_images" / f"{r['id_code']}.png", "9", _graded),
    Labelled("kaggle_dr", "kaggle_dr", "trainLabels.csv", "image", ("level",),
             lambda csv, r: csv.parent / "resized_train" / f"{r['image']}.jpeg", "-1", _graded),
]
ROWS_KEPT = 12  # of each CSV: small sets, every image decoded in a fraction of a second


@pytest.fixture(scope="module")
def labelled_sets(demos: dict[str, Path], course_demo: Path,
                  original_demo: Path) -> dict[str, Path]:
    return {"deepdrid course": course_demo, "deepdrid original": original_demo,
            **{k: demos[k] for k in ("rfmid", "idrid", "aptos", "kaggle_dr")}}


def _breakable(source: Path, out: Path) -> Path:
    """A copy of `source` whose CSVs are real files cut to their first `ROWS_KEPT` rows and
    whose other files are links (a fault replaces the link it breaks)."""
    def place(src: str, dst: str) -> None:
        if src.endswith(".csv"):
            header, rows = read_rows(Path(src))
            write_rows(Path(dst), header, rows[:ROWS_KEPT])
        else:
            os.symlink(src, dst)
    return Path(shutil.copytree(source, out, copy_function=place))


def _replace(path: Path, data: bytes) -> None:
    target = path.resolve()
    path.unlink()
    path.write_bytes(data)
    assert target.is_file()  # the shared set is untouched


def check_data(kind: str, root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`python -m search.data check KIND --data ROOT` as a user runs it (search.cli.run: a
    medtune error is one line, anything else escapes as a traceback and fails the test)."""
    with pytest.raises(SystemExit) as done:
        cli_run(data_main, ["check", kind, "--data", str(root)])
    printed = capsys.readouterr()
    return int(done.value.code or 0), printed.out + printed.err


def _edit(csv: Path, change: Callable[[list[str], list[list[str]]], tuple[list[str],
                                                                         list[list[str]]]]) -> None:
    header, rows = read_rows(csv)
    write_rows(csv, *change(header, rows))


def _set(header: list[str], row: list[str], columns: tuple[str, ...], value: str) -> list[str]:
    return [value if h.strip() in columns else v for h, v in zip(header, row, strict=True)]


def _without(header: list[str], rows: list[list[str]], columns: tuple[str, ...]):
    keep = [i for i, h in enumerate(header) if h.strip() not in columns]
    return [header[i] for i in keep], [[r[i] for i in keep] for r in rows]


FAULTS = ["missing label column", "missing ID column", "extra column", "label out of range",
          "label not a number", "label empty", "image missing", "image corrupt",
          "image truncated", "duplicate row", "duplicate with another label", "empty split",
          "no labels file", "labels file not text"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("fmt", LABELLED, ids=lambda f: f.name)
def test_every_reader_names_each_fault_with_its_file_and_row(
        fmt: Labelled, fault: str, labelled_sets: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    root = _breakable(labelled_sets[fmt.name], tmp_path / "set")
    csv = next(root.rglob(fmt.csv))
    header, rows = read_rows(csv)
    record = dict(zip([h.strip() for h in header], rows[1], strict=True))  # data row 2: line 3
    image = fmt.image(csv, record)
    assert image.is_file(), image
    ok, expected = False, ""
    if fault == "missing label column":
        _edit(csv, lambda h, r: _without(h, r, fmt.labels))
        expected = f"{csv} row 1: missing column(s) {', '.join(fmt.labels)}"
    elif fault == "missing ID column":
        _edit(csv, lambda h, r: _without(h, r, (fmt.id,)))
        expected = f"{csv} row 1: missing column(s) {fmt.id}"
    elif fault == "extra column":
        _edit(csv, lambda h, r: ([*h, "notes"], [[*x, "seen twice"] for x in r]))
        # RFMiD's columns after ID are its labels: a column more is a label that must be 0/1
        ok = fmt.kind != "rfmid"
        expected = f"{csv} row 2: labels must be 0 or 1: notes='seen twice'"
    elif fault.startswith("label "):
        value = {"label out of range": fmt.out_of_range, "label not a number": "abc",
                 "label empty": ""}[fault]
        _edit(csv, lambda h, r: (h, [r[0], _set(h, r[1], fmt.labels, value), *r[2:]]))
        expected = f"{csv} row 3: {fmt.refused(value)}"
    elif fault == "image missing":
        image.unlink()
        expected = f"{csv} row 3: image {image} not found"
    elif fault in ("image corrupt", "image truncated"):
        data = image.read_bytes()
        _replace(image, b"not an image at all" if fault == "image corrupt" else
                 data[: len(data) // 2])
        expected = f"{csv} row 3: image {image} cannot be decoded"
    elif fault == "duplicate row":
        _edit(csv, lambda h, r: (h, [*r, r[1]]))
        ok, expected = True, f"{csv} row {len(rows) + 2}: image {record[fmt.id]} repeats row 3"
    elif fault == "duplicate with another label":
        other = str(1 - int(record[fmt.labels[-1]] or 0) if fmt.kind == "rfmid"
                    else (int(record[fmt.labels[-1]] or 0) + 1) % 5)
        _edit(csv, lambda h, r: (h, [*r, _set(h, r[1], fmt.labels, other)]))
        expected = (f"{csv} row {len(rows) + 2}: image {record[fmt.id]} is listed twice with "
                    "different labels")
    elif fault == "empty split":
        _edit(csv, lambda h, r: (h, []))
        expected = "the train split has no usable images"
    elif fault == "no labels file":
        csv.unlink()
        expected = fmt.csv.removeprefix("a. ")  # IDRiD's is named without the folder's mark
    elif fault == "labels file not text":
        csv.write_bytes(bytes(range(256)) * 4)
        expected = f"{csv}: not a readable CSV file"
    code, said = check_data(fmt.kind, root, capsys)
    assert "Traceback" not in said
    if ok:
        assert code == 0, said
        assert "OK, " in said
        if fault == "duplicate row":
            assert f"warning: {expected}" in said
        return
    assert code == EXIT_PROBLEMS, said
    assert expected in said, said


@pytest.mark.parametrize("fault", ["image corrupt", "image truncated", "empty split"])
@pytest.mark.parametrize("layout", ["raw", "split"])
def test_class_folders_name_each_fault(layout: str, fault: str, demos: dict[str, Path],
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _breakable(demos["imagefolder" if layout == "raw" else "medmnist"], tmp_path / "set")
    train = root / "train" if layout == "split" else root
    image = sorted((train / "round_striped").glob("*.jpeg"))[1]
    if fault == "empty split":  # every class folder of one split without its images
        emptied = root / "val" if layout == "split" else root
        for path in emptied.rglob("*.jpeg"):
            path.unlink()
        expected = f"{emptied / 'round_striped'}: empty class folder (no images)"
    else:
        data = image.read_bytes()
        _replace(image, b"not an image at all" if fault == "image corrupt" else
                 data[: len(data) // 2])
        expected = f"{image}: image {image} cannot be decoded"
    code, said = check_data("imagefolder", root, capsys)
    assert "Traceback" not in said
    assert code == EXIT_PROBLEMS and expected in said, said


def _npz(path: Path, **changes: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(n, 1).astype(np.uint8)
    np.savez(path, **{**arrays, **changes})  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("fault", ["file corrupt", "file truncated", "label negative",
                                   "label not a whole number", "labels not numbers",
                                   "empty split", "labels missing"])
def test_a_medmnist_npz_names_each_fault(fault: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = _npz(tmp_path / "good.npz")
    labels = (np.arange(6) % 3).reshape(6, 1)
    expected = f"{tmp_path / 'set.npz'}: "
    if fault in ("file corrupt", "file truncated"):
        data = path.read_bytes()
        (tmp_path / "set.npz").write_bytes(b"not an npz at all" if fault == "file corrupt"
                                           else data[: len(data) // 2])
        expected += "not a readable .npz file"
    elif fault == "label negative":
        _npz(tmp_path / "set.npz", val_labels=labels - 1)
        expected += "val_labels holds values other than class numbers >= 0"
    elif fault == "label not a whole number":
        _npz(tmp_path / "set.npz", val_labels=labels + 0.5)
        expected += "val_labels holds values other than class numbers >= 0"
    elif fault == "labels not numbers":
        _npz(tmp_path / "set.npz", val_labels=labels.astype(str))
        expected += "val_labels holds values other than class numbers >= 0"
    elif fault == "empty split":
        _npz(tmp_path / "set.npz", test_images=np.zeros((0, 28, 28), np.uint8),
             test_labels=np.zeros((0, 1), np.uint8))
        expected += "the test split has no usable images"
    else:
        np.savez(tmp_path / "set.npz", **{k: v for k, v in np.load(path).items()
                                          if k != "train_labels"})
        expected += "missing array(s) train_labels"
    code, said = check_data("medmnist_npz", tmp_path / "set.npz", capsys)
    assert "Traceback" not in said
    assert code == EXIT_PROBLEMS and expected in said, said
