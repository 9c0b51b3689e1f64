"""Demo sets of the other formats, generated and written in each format's real layout.

- `shapes`: a Medical MNIST-style set, 6 classes of 64 px grayscale images whose class is
  visible only in shape and texture (brightness, contrast, size, position and rotation are
  nuisance), as class folders (`split`: train/val/test, `raw`: one folder per class) or as a
  MedMNIST `.npz`.
- `rfmid`: fundus photographs from the DeepDRiD demo's renderer in which each label is its own
  independent finding (haemorrhages, hard exudates, cotton-wool spots, new vessels), in
  RFMiD's layout; `Disease_Risk` is any finding present.
- `idrid`, `aptos`, `kaggle_dr`: graded fundus photographs in those releases' layouts; APTOS's
  through another camera (colour cast, exposure, blur, lighting, field centre): a domain shift
  from the DeepDRiD demo, as between the real sets.
- `chestxray`: grayscale chest radiographs (two lung fields in a bright thorax) whose class is
  visible only in its findings: pneumonia as patchy opacities in the middle and lower zones,
  tuberculosis as upper-zone nodules and cavities; size, position, tilt, exposure, ribs and
  noise are nuisance. Class folders NORMAL / PNEUMONIA / TUBERCULOSIS.

And every dataset kind's demo writer (DeepDRiD's from trainables.data.demo): `demo_writers`, and
`ensure_demo`, which generates a kind's set once per machine.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trainables.data.demo import (
    DEMO_VERSION,
    LESIONS_BY_GRADE,
    DemoSpec,
    EyeScene,
    View,
    _patient_grades,
    _vessel_tree,
    draw_lesions,
    make_eye,
    make_view,
    render,
    write_deepdrid_demo,
)
from trainables.errors import ConfigError
from trainables.progress import Progress

log = logging.getLogger(__name__)

SHAPES = ("round", "long", "angular")
TEXTURES = ("striped", "speckled")
SHAPE_CLASSES = [f"{s}_{t}" for s in SHAPES for t in TEXTURES]
SHAPES_PER_CLASS = {"train": 80, "val": 24, "test": 16}
SHAPE_SIZE = 64


def _check_layout(layout: str | None, allowed: tuple[str, ...]) -> str:
    chosen = layout or allowed[0]
    if chosen not in allowed:
        raise ConfigError(f"--layout {chosen!r}: this demo set has {', '.join(allowed)}")
    return chosen


# ---- Medical MNIST-style shapes -----------------------------------------------------------

def shape_image(rng: np.random.Generator, shape: str, texture: str) -> np.ndarray:
    """One 64 x 64 uint8 image of a textured body on a noisy background."""
    n = SHAPE_SIZE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    background = float(rng.uniform(0.05, 0.35))
    body = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(body)
    cx, cy = rng.uniform(24, 40, size=2)
    r = float(rng.uniform(11, 17))
    angle = float(rng.uniform(0, math.pi))
    if shape == "round":
        a, b = r, r * float(rng.uniform(0.85, 1.0))
    elif shape == "long":
        a, b = r * 1.25, r * float(rng.uniform(0.35, 0.5))
    else:
        a = b = r
    if shape == "angular":  # a square or a triangle
        corners = int(rng.choice([3, 4]))
        pts = [(cx + a * math.cos(angle + 2 * math.pi * k / corners),
                cy + a * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)]
    else:
        pts = [(cx + a * math.cos(t) * math.cos(angle) - b * math.sin(t) * math.sin(angle),
                cy + a * math.cos(t) * math.sin(angle) + b * math.sin(t) * math.cos(angle))
               for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    draw.polygon(pts, fill=255)
    inside = np.asarray(body.filter(ImageFilter.GaussianBlur(0.8)), np.float32) / 255
    if texture == "striped":
        period, theta = float(rng.uniform(4.5, 7.0)), float(rng.uniform(0, math.pi))
        pattern = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta))
                                     / period + rng.uniform(0, 2 * math.pi))
    else:
        dots = rng.uniform(size=(n, n)) < 0.12
        pattern = np.asarray(Image.fromarray((dots * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(0.7)), np.float32) / 255
        pattern = pattern / max(float(pattern.max()), 1e-6)
    level, contrast = float(rng.uniform(0.4, 0.85)), float(rng.uniform(0.25, 0.5))
    tone = level * (1 - contrast / 2 + contrast * pattern)
    noise = rng.normal(0, 0.04, size=(n, n)).astype(np.float32)
    image = background * (1 - inside) + tone * inside + noise
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def _shape_rows(seed: int, per_class: dict[str, int]) -> dict[str, list[tuple[np.ndarray, int]]]:
    rng = np.random.default_rng([seed, DEMO_VERSION, 7])
    out: dict[str, list[tuple[np.ndarray, int]]] = {}
    total = len(SHAPE_CLASSES) * sum(per_class.values())
    with Progress(total, "drawing the shapes demo set") as progress:
        for split, count in per_class.items():
            rows = []
            for c, name in enumerate(SHAPE_CLASSES):
                for _ in range(count):
                    rows.append((shape_image(rng, *name.split("_")), c))
                    progress.update()
            out[split] = [rows[i] for i in rng.permutation(len(rows))]
    return out


def write_shapes_demo(out: Path, *, layout: str | None = None,
                      spec: DemoSpec | None = None) -> Path:
    """Class folders `out/{train,val,test}/<class>/<n>.jpeg` (layout `split`), one folder per
    class (`raw`: medtune draws the splits), or `out/shapesmnist_64.npz` (`npz`)."""
    layout = _check_layout(layout, ("split", "raw", "npz"))
    spec = spec or DemoSpec()
    rows = _shape_rows(spec.seed, SHAPES_PER_CLASS)
    out.mkdir(parents=True, exist_ok=True)
    if layout == "npz":
        arrays: dict[str, np.ndarray] = {}
        for split, items in rows.items():
            arrays[f"{split}_images"] = np.stack([im for im, _ in items])
            arrays[f"{split}_labels"] = np.array([[c] for _, c in items], dtype=np.uint8)
        np.savez_compressed(out / "shapesmnist_64.npz", **arrays)  # type: ignore[arg-type]
        return out / "shapesmnist_64.npz"
    number = 0
    for split, items in rows.items():
        for image, c in items:
            number += 1
            folder = out / SHAPE_CLASSES[c] if layout == "raw" else out / split / SHAPE_CLASSES[c]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "L").save(folder / f"{number:05d}.jpeg", quality=92)
    (out / "README.txt").write_text("medtune demo: generated shapes, not medical images\n")
    return out


def write_raw_shapes_demo(out: Path, *, layout: str | None = None,
                          spec: DemoSpec | None = None) -> Path:
    """The shapes as one raw class-folder tree (the `imagefolder` demo)."""
    return write_shapes_demo(out, layout=layout or "raw", spec=spec)


# ---- RFMiD-style multi-label fundus set ----------------------------------------------------

FINDINGS = {"HEM": "haemorrhage", "EX": "exudate", "CWS": "cotton_wool", "NV": "new_vessels"}
FINDING_SHARE = 0.35  # each finding independently present in this share of eyes
RFMID_COUNTS = {"train": 240, "val": 80, "test": 48}
RFMID_DIRS = {"train": ("Training_Set", "Training", "RFMiD_Training_Labels.csv"),
              "val": ("Evaluation_Set", "Validation", "RFMiD_Validation_Labels.csv"),
              "test": ("Test_Set", "Test", "RFMiD_Testing_Labels.csv")}


def findings_eye(rng: np.random.Generator, eye: str, present: list[str]) -> EyeScene:
    """An eye with exactly the lesion kinds in `present`, each at its grade-4 count."""
    side = 1.0 if eye == "r" else -1.0
    lesions = draw_lesions(rng, side, {kind: LESIONS_BY_GRADE[4][kind] for kind in present})
    return EyeScene(eye, 0, _vessel_tree(rng, side), lesions)


def write_rfmid_demo(out: Path, *, layout: str | None = None,
                     spec: DemoSpec | None = None) -> Path:
    """RFMiD's layout: per split a labels CSV (ID, Disease_Risk, one column per finding) and
    `<ID>.png` images, 272 x 256 px."""
    _check_layout(layout, ("release",))
    spec = spec or DemoSpec()
    rng = np.random.default_rng([spec.seed, DEMO_VERSION, 29])
    with Progress(sum(RFMID_COUNTS.values()), "writing the rfmid demo set") as progress:
        for split, count in RFMID_COUNTS.items():
            _write_rfmid_split(out, split, count, rng, progress)
    return out


def _write_rfmid_split(out: Path, split: str, count: int, rng: np.random.Generator,
                       progress: Progress) -> None:
    base, images, name = RFMID_DIRS[split]
    (out / base / images).mkdir(parents=True, exist_ok=True)
    with open(out / base / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Disease_Risk", *FINDINGS])
        for i in range(1, count + 1):
            flags = [int(rng.uniform() < FINDING_SHARE) for _ in FINDINGS]
            present = [kind for kind, on in zip(FINDINGS.values(), flags, strict=True) if on]
            scene = findings_eye(rng, "r" if rng.uniform() < 0.5 else "l", present)
            image, _ = render(scene, make_view(rng, scene, "macula"), 272, 256, rng)
            image.save(out / base / images / f"{i}.png")
            w.writerow([i, int(any(flags)), *flags])
            progress.update()


# ---- graded fundus sets in other releases' layouts ---------------------------------------

GRADED_COUNTS = {"train": 150, "test": 40}  # images; val is drawn by the reader
APTOS_COUNTS = {"train": 360, "test": 40}  # the larger stage-1 set of deepdrid_two_stage


def other_camera(rng: np.random.Generator, view: View) -> View:
    """Another clinic's camera (APTOS): a yellow-green cast, brighter and softer photographs
    with stronger uneven lighting, centred on the disc as often as on the macula."""
    return dataclasses.replace(
        view, tint=(float(rng.uniform(1.05, 1.3)), float(rng.uniform(1.0, 1.25)),
                    float(rng.uniform(0.5, 0.75))),
        exposure=float(rng.uniform(0.95, 1.35)), blur=float(rng.uniform(0.8, 2.4)),
        light_strength=float(rng.uniform(0.25, 0.55)), quality=int(rng.integers(70, 88)))


def _graded_images(rng: np.random.Generator, count: int, size: tuple[int, int], *,
                   progress: Progress, camera: str = "deepdrid"
                   ) -> list[tuple[Image.Image, int, str]]:
    """`count` eyes as (image, grade, eye) pairs, two eyes per patient."""
    out: list[tuple[Image.Image, int, str]] = []
    for left, right in _patient_grades(rng, (count + 1) // 2):
        for eye, grade in (("l", left), ("r", right)):
            scene = make_eye(rng, eye, grade)
            if camera == "aptos":
                centred = "disc" if rng.uniform() < 0.5 else "macula"
                view = other_camera(rng, make_view(rng, scene, centred))
            else:
                view = make_view(rng, scene, "macula")
            image, _ = render(scene, view, *size, rng)
            out.append((image, grade, eye))
            if len(out) <= count:
                progress.update()
    return out[:count]


def write_graded_demo(out: Path, kind: str, *, spec: DemoSpec | None = None) -> Path:
    """IDRiD grading, APTOS 2019 or Kaggle DR Resized, each in its release's layout."""
    spec = spec or DemoSpec()
    rng = np.random.default_rng([spec.seed, DEMO_VERSION, {"idrid": 1, "aptos": 2,
                                                            "kaggle_dr": 3}[kind]])
    out.mkdir(parents=True, exist_ok=True)
    total = sum((APTOS_COUNTS if kind == "aptos" else GRADED_COUNTS).values())
    with Progress(total, f"writing the {kind} demo set") as progress:
        _write_graded(out, kind, rng, progress)
    return out


def _write_graded(out: Path, kind: str, rng: np.random.Generator, progress: Progress) -> None:
    if kind == "idrid":
        labels = out / "B. Disease Grading" / "2. Groundtruths"
        labels.mkdir(parents=True, exist_ok=True)
        for split, folder, csv_name in (
                ("train", "a. Training Set", "a. IDRiD_Disease Grading_Training Labels.csv"),
                ("test", "b. Testing Set", "b. IDRiD_Disease Grading_Testing Labels.csv")):
            images = out / "B. Disease Grading" / "1. Original Images" / folder
            images.mkdir(parents=True, exist_ok=True)
            with open(labels / csv_name, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["Image name", "Retinopathy grade", "Risk of macular edema "])
                eyes = _graded_images(rng, GRADED_COUNTS[split], (288, 256), progress=progress)
                for i, (image, grade, _) in enumerate(eyes, start=1):
                    name = f"IDRiD_{i:03d}"
                    image.save(images / f"{name}.jpg", quality=92)
                    w.writerow([name, grade, min(2, grade // 2)])
    elif kind == "aptos":
        for split, header in (("train", ["id_code", "diagnosis"]), ("test", ["id_code"])):
            (out / f"{split}_images").mkdir(exist_ok=True)
            with open(out / f"{split}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(header)
                for image, grade, _ in _graded_images(rng, APTOS_COUNTS[split], (256, 256),
                                                      progress=progress, camera="aptos"):
                    code = f"{int(rng.integers(1 << 40)):012x}"
                    image.save(out / f"{split}_images" / f"{code}.png")
                    w.writerow([code, grade][: len(header)])
    else:
        (out / "resized_train").mkdir(exist_ok=True)
        with open(out / "trainLabels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "level"])
            items = _graded_images(rng, sum(GRADED_COUNTS.values()), (256, 256),
                                   progress=progress)
            for n, (image, grade, eye) in enumerate(items):
                name = f"{10 + n // 2}_{'left' if eye == 'l' else 'right'}"
                image.save(out / "resized_train" / f"{name}.jpeg", quality=92)
                w.writerow([name, grade])


def graded_writer(kind: str) -> Callable[..., Path]:
    def write(out: Path, *, layout: str | None = None, spec: DemoSpec | None = None) -> Path:
        _check_layout(layout, ("release",))
        return write_graded_demo(out, kind, spec=spec)
    return write


def write_npz_shapes_demo(out: Path, *, layout: str | None = None,
                          spec: DemoSpec | None = None) -> Path:
    return write_shapes_demo(out, layout=layout or "npz", spec=spec)


# ---- chest radiographs ---------------------------------------------------------------------

CHEST_CLASSES = ("NORMAL", "PNEUMONIA", "TUBERCULOSIS")
CHEST_PER_CLASS = {"train": 84, "val": 18, "test": 18}  # 120 a class: raw splits it 70/15/15
CHEST_SIZE = 128


def _soft_ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float,
                  edge: float = 12.0) -> np.ndarray:
    """1 inside the ellipse, 0 outside, with a soft edge."""
    inside = 1.0 - ((x - cx) / a) ** 2 - ((y - cy) / b) ** 2
    return 1.0 / (1.0 + np.exp(np.clip(-edge * inside, -50, 50)))


def _blurred_noise(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    noise = Image.fromarray((rng.uniform(size=(n, n)) * 255).astype(np.uint8))
    out = np.asarray(noise.filter(ImageFilter.GaussianBlur(radius)), np.float32)
    return (out - out.mean()) / max(float(out.std()), 1e-6)


def chest_image(rng: np.random.Generator, finding: str) -> np.ndarray:
    """One CHEST_SIZE x CHEST_SIZE uint8 radiograph with `finding` (one of CHEST_CLASSES)."""
    n = CHEST_SIZE
    grid = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5) / n * 2 - 1  # y, x in [-1, 1]
    tilt = float(rng.uniform(-0.09, 0.09))
    scale = float(rng.uniform(0.85, 1.05))
    dx, dy = rng.uniform(-0.06, 0.06, size=2)
    y = (grid[0] * math.cos(tilt) - grid[1] * math.sin(tilt) - dy) / scale
    x = (grid[0] * math.sin(tilt) + grid[1] * math.cos(tilt) - dx) / scale
    thorax = _soft_ellipse(x, y, 0, 0.05, 0.9, 1.05, 6)
    lungs_raw = [_soft_ellipse(x, y, side * 0.36, -0.08, 0.26 * float(rng.uniform(0.9, 1.1)),
                               0.55 * float(rng.uniform(0.9, 1.05))) for side in (-1, 1)]
    lungs = np.maximum(*lungs_raw)
    heart = _soft_ellipse(x, y, float(rng.uniform(0.02, 0.1)), 0.3, 0.24, 0.22, 8)
    soft_tissue = float(rng.uniform(0.5, 0.65))
    image = 0.08 + soft_tissue * thorax
    image = image - float(rng.uniform(0.3, 0.4)) * lungs * (1 - heart)
    ribs = 0.5 + 0.5 * np.sin(2 * math.pi * (y + 0.15 * x * x) / float(rng.uniform(0.14, 0.2))
                              + rng.uniform(0, 2 * math.pi))
    image = image + 0.06 * ribs * lungs
    image = image + 0.05 * _blurred_noise(rng, n, 2.5) * lungs  # vessel markings
    for side in (-1, 1):  # clavicles
        image = image + 0.12 * _soft_ellipse(x, y, side * 0.35, -0.72 + side * 0.02 * tilt,
                                             0.3, 0.035, 4)
    if finding == "PNEUMONIA":  # patchy opacities, middle and lower zones
        for _ in range(int(rng.integers(2, 5))):
            lung = float(rng.choice([-1, 1]))
            cx, cy = lung * float(rng.uniform(0.25, 0.45)), float(rng.uniform(0.0, 0.35))
            r = float(rng.uniform(0.1, 0.17))
            patch = _soft_ellipse(x, y, cx, cy, r, r * float(rng.uniform(0.7, 1.2)), 4)
            texture = np.clip(0.6 + 0.5 * _blurred_noise(rng, n, 1.5), 0, 1.4)
            image = image + float(rng.uniform(0.22, 0.32)) * patch * texture * lungs
    elif finding == "TUBERCULOSIS":  # upper-zone nodules and cavities
        for _ in range(int(rng.integers(4, 8))):
            lung = float(rng.choice([-1, 1]))
            cx, cy = lung * float(rng.uniform(0.22, 0.48)), float(rng.uniform(-0.55, -0.25))
            r = float(rng.uniform(0.025, 0.04))
            image = image + float(rng.uniform(0.25, 0.35)) * _soft_ellipse(x, y, cx, cy, r, r, 8)
        for _ in range(int(rng.integers(1, 3))):
            lung = float(rng.choice([-1, 1]))
            cx, cy = lung * float(rng.uniform(0.25, 0.45)), float(rng.uniform(-0.5, -0.3))
            r = float(rng.uniform(0.055, 0.075))
            ring = _soft_ellipse(x, y, cx, cy, r, r, 10) - _soft_ellipse(x, y, cx, cy, 0.6 * r,
                                                                         0.6 * r, 10)
            image = image + 0.3 * ring - 0.08 * _soft_ellipse(x, y, cx, cy, 0.55 * r, 0.55 * r)
    exposure, gamma = float(rng.uniform(0.85, 1.15)), float(rng.uniform(0.8, 1.25))
    image = np.clip(image * exposure, 0, 1) ** gamma
    image = image + rng.normal(0, 0.025, size=(n, n)).astype(np.float32)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def write_chest_demo(out: Path, *, layout: str | None = None,
                     spec: DemoSpec | None = None) -> Path:
    """Chest radiographs as one folder per class (`raw`, the default: medtune draws the
    splits) or `out/{train,val,test}/<class>/` (`split`), JPEG, 128 px."""
    layout = _check_layout(layout, ("raw", "split"))
    spec = spec or DemoSpec()
    rng = np.random.default_rng([spec.seed, DEMO_VERSION, 41])
    number = 0
    with Progress(len(CHEST_CLASSES) * sum(CHEST_PER_CLASS.values()),
                  "writing the chestxray demo set") as progress:
        for split, count in CHEST_PER_CLASS.items():
            for _ in range(count):
                for name in CHEST_CLASSES:
                    number += 1
                    folder = out / name if layout == "raw" else out / split / name
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(chest_image(rng, name), "L").save(
                        folder / f"{name.lower()}_{number:04d}.jpeg", quality=92)
                    progress.update()
    (out / "README.txt").write_text("medtune demo: generated radiographs, not medical images\n")
    return out


WRITERS: dict[str, Callable[..., Path]] = {
    "chestxray": write_chest_demo,
    "medmnist": write_shapes_demo,
    "imagefolder": write_raw_shapes_demo,
    "medmnist_npz": write_npz_shapes_demo,
    "rfmid": write_rfmid_demo,
    "idrid": graded_writer("idrid"),
    "aptos": graded_writer("aptos"),
    "kaggle_dr": graded_writer("kaggle_dr"),
}


def demo_writers() -> dict[str, Callable[..., Path]]:
    """A demo writer per dataset kind: fn(out, *, layout=None, spec=None) -> the --data path."""
    return {"deepdrid": write_deepdrid_demo, **WRITERS}


def ensure_demo(dataset: str, root: Path, *, seed: int = 0) -> Path:
    """The demo set of `dataset` under `root/demo/`, generated once per machine (file-locked);
    returns what --data takes (the folder, or the file of a one-file format)."""
    from filelock import FileLock

    writers = demo_writers()
    if dataset not in writers:
        raise ConfigError(f"no demo data for dataset {dataset!r}; have: {', '.join(writers)}")
    folder = root / "demo" / f"{dataset}-seed{seed}-v{DEMO_VERSION}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder / ".complete"
    with FileLock(str(folder) + ".lock"):
        if not done.is_file():
            log.info("generating the %s demo set in %s (once per machine)", dataset, folder)
            shutil.rmtree(folder, ignore_errors=True)
            data = writers[dataset](folder, spec=DemoSpec(seed=seed))
            done.write_text(str(Path(data).relative_to(folder)))
    return folder / (done.read_text().strip() or ".")
