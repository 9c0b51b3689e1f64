"""The image cache: preprocessing, a single build under concurrency, invalidation, mmap reads."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from trainables.data.cache import build_cache
from trainables.data.datasets import read_deepdrid
from trainables.data.images import circle_mask, load_fundus
from trainables.errors import DatasetError


@pytest.fixture()
def retina_jpeg(tmp_path: Path) -> Path:
    """scikit-image's real fundus photograph, on a wider black frame like a camera's."""
    rgb = skdata.retina()
    h, w, _ = rgb.shape
    frame = np.zeros((h, w + 200, 3), np.uint8)
    frame[:, 100:100 + w] = rgb
    path = tmp_path / "retina.jpg"
    Image.fromarray(frame).save(path, quality=92)
    return path


@pytest.mark.parametrize("preprocess", ["none", "circle", "ben"])
def test_preprocessing_gives_square_images(retina_jpeg: Path, preprocess: str) -> None:
    out = load_fundus(str(retina_jpeg), 96, preprocess)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    outside = ~circle_mask(96)
    if preprocess == "circle":
        assert out[outside].max() == 0  # the surround is black
        assert out[~outside].mean() > 40  # and the fundus fills the square
    if preprocess == "ben":
        inside = circle_mask(96, 0.9)
        assert abs(float(out[inside].mean()) - 128) < 20  # local average subtracted
        assert (out[~circle_mask(96, 0.95)] == 128).all()
    if preprocess == "none":  # padded, not cropped: black bars above and below the wide frame
        assert out[:5].max() < 20


def test_circle_crop_removes_the_black_frame(retina_jpeg: Path) -> None:
    none = load_fundus(str(retina_jpeg), 96, "none")
    circle = load_fundus(str(retina_jpeg), 96, "circle")
    assert (circle.max(axis=2) > 12).mean() > (none.max(axis=2) > 12).mean() + 0.1


def _build(args: tuple[str, str]) -> bool:
    root, cache = args
    index = read_deepdrid(root)
    return build_cache(index, size=48, preprocess="circle", root=Path(cache)).built


def test_two_processes_build_the_cache_once(course_demo: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        built = pool.map(_build, [(str(course_demo), str(tmp_path))] * 2)
    assert sorted(built) == [False, True]
    cached = build_cache(read_deepdrid(course_demo), size=48, preprocess="circle", root=tmp_path)
    assert not cached.built
    train = cached.images["train"]
    assert isinstance(train, np.memmap) and not train.flags.writeable
    assert train.shape == (24, 48, 48, 3)


def test_cache_matches_direct_decoding(course_demo: Path, tmp_path: Path) -> None:
    index = read_deepdrid(course_demo)
    cached = build_cache(index, size=48, preprocess="ben", root=tmp_path)
    for i in (0, 7):
        direct = load_fundus(index.split("val")["path"][i], 48, "ben")
        np.testing.assert_array_equal(cached.images["val"][i], direct)


def test_changed_image_or_csv_rebuilds(course_copy: Path, tmp_path: Path) -> None:
    assert build_cache(read_deepdrid(course_copy), size=48, preprocess="none", root=tmp_path).built
    assert not build_cache(read_deepdrid(course_copy), size=48, preprocess="none",
                           root=tmp_path).built
    image = course_copy / "train" / "101" / "101_l1.jpg"
    Image.new("RGB", (170, 160), (200, 0, 0)).save(image)
    os.utime(image, ns=(1, 1))
    rebuilt = build_cache(read_deepdrid(course_copy), size=48, preprocess="none", root=tmp_path)
    assert rebuilt.built
    assert rebuilt.images["train"][0, 24, 24, 0] > 150  # the new red image is in the cache
    csv = course_copy / "val.csv"
    csv.write_text(csv.read_text() + "\n")  # any byte change of a CSV counts
    assert build_cache(read_deepdrid(course_copy), size=48, preprocess="none",
                       root=tmp_path).built


def test_a_decoding_failure_writes_no_cache(course_copy: Path, tmp_path: Path) -> None:
    bad = course_copy / "test" / "110" / "110_l1.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(DatasetError, match=r"test.csv row 2: image .*110_l1.jpg cannot be decoded"):
        build_cache(read_deepdrid(course_copy), size=48, preprocess="circle", root=tmp_path)
    assert not list(tmp_path.glob("*/manifest.json"))


def test_a_process_per_core_builds_what_one_process_builds(course_copy: Path,
                                                           tmp_path: Path) -> None:
    """Two spawned processes writing chunks into the arrays give the in-process arrays, byte
    for byte; an image they cannot decode is named with its CSV row, and nothing is kept."""
    from trainables.data.datasets import validate

    one = build_cache(read_deepdrid(course_copy), size=48, preprocess="ben",
                      root=tmp_path / "one", processes=1)
    two = build_cache(read_deepdrid(course_copy), size=48, preprocess="ben",
                      root=tmp_path / "two", processes=2)
    assert two.built and set(one.images) == set(two.images) == {"train", "val", "test"}
    for split in one.images:
        np.testing.assert_array_equal(one.images[split], two.images[split])
        assert two.images[split].any(axis=(1, 2, 3)).all()  # every row written
    assert '"processes": 2' in (two.folder / "manifest.json").read_text()

    bad = course_copy / "val" / "108" / "108_r2.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(DatasetError, match=r"val.csv row \d+: image .*108_r2.jpg cannot be decoded"):
        build_cache(read_deepdrid(course_copy), size=48, preprocess="ben", root=tmp_path / "three",
                    processes=2)
    assert not list((tmp_path / "three").glob("*/manifest.json"))
    # the data check in processes finds it too, and reads every other image's size
    index = validate(read_deepdrid(course_copy), processes=2)
    assert [p.message for p in index.problems if "108_r2.jpg" in p.message]
    assert len(index.sizes) == len(index.frame) - 1


def test_the_processes_follow_the_cores_and_the_work() -> None:
    from trainables.data.pool import MIN_PER_PROCESS, chunks, node_cores, plan_processes

    assert plan_processes(10) == 1  # too small to pay for starting processes
    assert plan_processes(10 * MIN_PER_PROCESS) == min(node_cores(), 10)
    assert plan_processes(5, processes=8) == 5 and plan_processes(500, processes=3) == 3
    for n, p in ((1, 1), (37, 1), (1000, 4), (35_000, 16)):
        parts = chunks(n, p)
        assert [i for part in parts for i in part] == list(range(n))  # each row once, in order
        assert max(len(part) for part in parts) <= (64 if p > 1 else 16)
