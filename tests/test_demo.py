"""The generated demo set: seeded, lesions by grade, masks that mark them."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import TINY_SPEC, make_demo
from trainables.datasets import read_deepdrid
from trainables.demo import LESIONS_BY_GRADE, make_eye


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files(course_demo: Path, tmp_path: Path) -> None:
    assert digest(make_demo(tmp_path / "again", "course", TINY_SPEC)) == digest(course_demo)


def test_every_image_has_a_mask_that_marks_its_lesions(original_demo: Path) -> None:
    frame = read_deepdrid(original_demo).frame
    areas: dict[int, list[float]] = {g: [] for g in range(5)}
    for rec in frame.itertuples():
        mask = np.asarray(Image.open(original_demo / "masks" / f"{rec.image_id}.png"))
        assert mask.shape == (TINY_SPEC.height, TINY_SPEC.width)
        areas[rec.label].append(float((mask > 0).mean()))  # the original layout labels the eye
    assert max(areas[0]) == 0.0  # no lesions without DR
    means = [np.mean(areas[g]) for g in range(5) if areas[g]]
    assert all(m > 0 for m in means[1:])
    assert means == sorted(means)  # more disease, more lesion area


def test_each_grade_adds_a_kind_of_lesion() -> None:
    kinds = [set(LESIONS_BY_GRADE[g]) for g in range(5)]
    for lower, higher in zip(kinds, kinds[1:], strict=False):
        assert lower < higher
    rng = np.random.default_rng(0)
    assert {lesion.kind for lesion in make_eye(rng, "l", 4).lesions} == kinds[4]
    assert make_eye(rng, "r", 0).lesions == []


def test_demo_command_writes_both_layouts(tmp_path: Path) -> None:
    for layout, marker in (("course", "train.csv"),
                           ("original", "regular-fundus-training/regular-fundus-training.csv")):
        out = tmp_path / layout
        result = subprocess.run(
            [sys.executable, "-m", "search.data", "demo", "deepdrid_finetune", "--out", str(out),
             "--layout", layout, "--patients", "3", "2", "1"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert (out / marker).is_file()
        assert len(read_deepdrid(out).frame) == 6 * 4
