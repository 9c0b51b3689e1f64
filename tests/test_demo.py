"""The generated demo set: seeded, lesions by grade, masks that mark them."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import TINY_SPEC, make_demo
from trainables.data.datasets import read_deepdrid
from trainables.data.demo import LESIONS_BY_GRADE, make_eye


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
    for lower, higher in itertools.pairwise(kinds):
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


def _grade_probe_accuracy(with_lesions: bool, n: int = 300) -> float:
    """Cross-validated accuracy of a linear model that reads a rendered eye's colour statistics
    and a 4x4 thumbnail: exposure, tint, illumination and blur are all in view of it."""
    from dataclasses import replace

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from trainables.data.demo import make_view, render

    rng = np.random.default_rng(1)
    features, grades = [], []
    for i in range(n):
        grade = i % 5
        scene = make_eye(rng, "lr"[i % 2], grade)
        if not with_lesions:
            scene = replace(scene, lesions=[])
        image, _ = render(scene, make_view(rng, scene, ("macula", "disc")[i // 2 % 2]), 96, 90, rng)
        rgb = np.asarray(image, np.float32) / 255
        fundus = rgb[rgb.max(axis=2) > 0.05]
        thumb = np.asarray(image.resize((4, 4)), np.float32).ravel() / 255
        features.append(np.concatenate([fundus.mean(0), fundus.std(0),
                                        *np.percentile(fundus, [10, 50, 90], axis=0), thumb]))
        grades.append(grade)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    return float(cross_val_score(model, np.array(features), np.array(grades), cv=5).mean())


def test_nothing_but_the_lesions_tells_the_grade() -> None:
    """Eyes of every grade rendered with their lesions removed are at chance (0.2 for five
    balanced grades) for a probe that reads the grade well when the lesions are there."""
    assert _grade_probe_accuracy(with_lesions=False) < 0.3
    assert _grade_probe_accuracy(with_lesions=True) > 0.45
