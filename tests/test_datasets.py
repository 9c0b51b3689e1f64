"""Readers of both DeepDRiD layouts and the validation of every kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_SPEC, read_rows, write_rows
from trainables.data.datasets import read_deepdrid, summarize, validate
from trainables.errors import DatasetError

IMAGES_PER_PATIENT = 4


def problems_of(root: Path) -> list[str]:
    return [str(p) for p in validate(read_deepdrid(root)).problems]


def test_course_layout_reads_every_split(course_demo: Path) -> None:
    index = validate(read_deepdrid(course_demo))
    assert index.layout == "course"
    assert index.problems == []
    counts = index.frame["split"].value_counts().to_dict()
    assert counts == {"train": TINY_SPEC.train_patients * IMAGES_PER_PATIENT,
                      "val": TINY_SPEC.val_patients * IMAGES_PER_PATIENT,
                      "test": TINY_SPEC.test_patients * IMAGES_PER_PATIENT}
    assert set(index.split("test")["label"]) == {-1}
    assert index.split("train")["label"].between(0, 4).all()
    # the patient level is the max of the eyes: the same for a patient's four images
    assert (index.split("train").groupby("patient")["label"].nunique() == 1).all()
    assert "images per split and grade" in summarize(index)
    assert "170x160" in summarize(index)


def test_original_layout_builds_paths_from_ids_and_uses_the_eyes_own_level(
        original_demo: Path) -> None:
    index = validate(read_deepdrid(original_demo))
    assert index.layout == "original"
    assert index.problems == []
    train = index.split("train")
    assert all("/Images/" in p for p in train["path"])  # not the CSV's broken image_path
    header, rows = read_rows(original_demo / "regular-fundus-training" /
                             "regular-fundus-training.csv")
    col = {name: i for i, name in enumerate(header)}
    for row, label in zip(rows, train["label"], strict=True):
        eye = "left" if "_l" in row[col["image_id"]] else "right"
        assert int(row[col[f"{eye}_eye_DR_Level"]]) == label


def test_missing_image_names_csv_row(course_copy: Path) -> None:
    (course_copy / "train" / "101" / "101_l1.jpg").unlink()
    problems = problems_of(course_copy)
    assert len(problems) == 1
    assert "train.csv row 2" in problems[0] and "101_l1.jpg not found" in problems[0]


def test_corrupt_and_truncated_jpegs_are_found(course_copy: Path) -> None:
    corrupt = course_copy / "train" / "101" / "101_l2.jpg"
    corrupt.write_bytes(b"this is not a jpeg" * 10)
    truncated = course_copy / "val" / "107" / "107_r1.jpg"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    problems = problems_of(course_copy)
    assert len(problems) == 2
    assert "train.csv row 3" in problems[0] and "cannot be decoded" in problems[0]
    assert "val.csv row 4" in problems[1] and "truncated" in problems[1]


def test_missing_column(course_copy: Path) -> None:
    _, rows = read_rows(course_copy / "val.csv")
    write_rows(course_copy / "val.csv", ["image_id", "img_path", "DR_grade"], rows)
    problems = problems_of(course_copy)
    assert any("val.csv row 1" in p and "missing column(s) patient_DR_Level" in p
               for p in problems)


def test_label_out_of_range(course_copy: Path) -> None:
    header, rows = read_rows(course_copy / "train.csv")
    rows[4][2] = "9"
    write_rows(course_copy / "train.csv", header, rows)
    assert problems_of(course_copy) == [
        f"{course_copy / 'train.csv'} row 6: label 9 is out of range 0-4"]


def test_patient_in_two_splits(course_copy: Path) -> None:
    header, rows = read_rows(course_copy / "val.csv")
    rows[0][0] = "101_l9"  # patient 101 is a training patient
    rows[0][1] = "train/101/101_l1.jpg"
    write_rows(course_copy / "val.csv", header, rows)
    problems = problems_of(course_copy)
    assert len(problems) == 1
    assert "patient 101 is in more than one split (train, val)" in problems[0]
    assert "train.csv row 2" in problems[0] and "val.csv row 2" in problems[0]


def test_empty_split(course_copy: Path) -> None:
    header, _ = read_rows(course_copy / "test.csv")
    write_rows(course_copy / "test.csv", header, [])
    assert problems_of(course_copy) == [f"{course_copy / 'test.csv'}: the test split has no "
                                        "usable images"]


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a DeepDRiD folder"):
        read_deepdrid(tmp_path)


def test_check_command_lists_every_problem_without_traceback(course_copy: Path) -> None:
    (course_copy / "train" / "102" / "102_r2.jpg").unlink()
    header, rows = read_rows(course_copy / "train.csv")
    rows[0][2] = "9"
    write_rows(course_copy / "train.csv", header, rows)
    result = subprocess.run([sys.executable, "-m", "search.data", "check", "deepdrid_finetune",
                             "--data", str(course_copy)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "2 problem(s)" in result.stderr
    assert "train.csv row 2: label 9 is out of range 0-4" in result.stderr
    assert "102_r2.jpg not found" in result.stderr


def test_check_command_summarises_a_good_dataset(course_demo: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "search.data", "check", "deepdrid_attention",
                             "--data", str(course_demo)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "images per split and grade" in result.stdout
    assert "OK, 44 images" in result.stdout


def test_an_image_listed_twice_with_two_labels_is_an_error_naming_both_rows(
        course_copy: Path) -> None:
    header, rows = read_rows(course_copy / "train.csv")
    exact = list(rows[0])  # CSV row 2 again, unchanged: a warning
    conflicting = list(rows[1])  # CSV row 3 again with another grade: which is right?
    conflicting[2] = str((int(rows[1][2]) + 1) % 5)
    write_rows(course_copy / "train.csv", header, [*rows, exact, conflicting])
    index = validate(read_deepdrid(course_copy))
    csv = course_copy / "train.csv"
    assert [str(p) for p in index.problems] == [
        f"{csv} row {len(rows) + 3}: image {rows[1][0]} is listed twice with different labels: "
        f"{rows[1][2]} at row 3, {conflicting[2]} here"]
    assert index.warnings == [f"{csv} row {len(rows) + 2}: image {rows[0][0]} repeats row 2 "
                              "exactly; the repeat is skipped"]
    with pytest.raises(DatasetError, match="listed twice with different labels"):
        index.raise_if_problems()
