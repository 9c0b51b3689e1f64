"""Readers of class folders, MedMNIST .npz, RFMiD, IDRiD, APTOS and Kaggle DR, on small generated
files in each real layout, with their errors; and `search.data` for every format."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.data import main as data_main
from tests.helpers import read_rows, write_rows
from trainables.cache import cache_root
from trainables.datasets import ReadOptions
from trainables.demo_sets import FINDINGS, SHAPE_CLASSES, SHAPES_PER_CLASS, ensure_demo
from trainables.errors import DatasetError
from trainables.formats import read_dataset


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
    from trainables.demo_sets import CHEST_CLASSES

    index = read_dataset("imagefolder", demos["chestxray"])
    assert index.problems == [] and index.channels == 1 and index.drawn_split
    assert index.class_names == sorted(CHEST_CLASSES)
    sizes = {split: len(index.split(split)) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == 360 and sizes["val"] == sizes["test"] == 54
    for split in ("val", "test"):  # stratified: every class equally
        assert index.split(split)["label"].value_counts().tolist() == [18, 18, 18]
