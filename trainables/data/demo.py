"""A seeded synthetic fundus set in the real DeepDRiD layouts, with a lesion mask per image.

Each eye is a scene in retina coordinates (the camera field is the unit disc): an optic disc,
a macula, vessel arcades and, by DR grade, lesions (microaneurysms, haemorrhages, hard exudates,
cotton-wool spots, new vessels). Each eye is photographed twice (macula- and disc-centred), with
nuisance variation drawn independently of the grade: illumination, colour, blur, rotation,
exposure, left/right mirroring, JPEG quality. So the grade is in the lesions and nowhere else.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trainables.errors import ConfigError
from trainables.progress import Progress

log = logging.getLogger(__name__)

DEMO_VERSION = 1  # bump when the images change, so cached demo sets are rebuilt
GRADE_SHARES = (0.30, 0.20, 0.20, 0.15, 0.15)  # share of patients per DR grade
ORIGINAL_COLUMNS = [
    "patient_id", "image_id", "image_path", "Overall quality", "left_eye_DR_Level",
    "right_eye_DR_Level", "patient_DR_Level", "Clarity", "Field definition", "Artifact",
]


@dataclass(frozen=True)
class DemoSpec:
    """Size of the generated set. Images are `width` x `height` pixels, like a wide camera frame."""

    train_patients: int = 60
    val_patients: int = 16
    test_patients: int = 10
    width: int = 544
    height: int = 512
    seed: int = 0


@dataclass(frozen=True)
class Lesion:
    kind: str  # ma | haemorrhage | exudate | cotton_wool | new_vessels
    x: float  # retina coordinates, field radius 1
    y: float
    size: float  # radius in field radii
    angle: float = 0.0
    seed: int = 0  # shape detail of new-vessel tufts


@dataclass(frozen=True)
class EyeScene:
    eye: str  # "l" or "r"
    grade: int
    vessels: list[tuple[list[tuple[float, float]], float]]  # polyline, width in field radii
    lesions: list[Lesion]


# (min, max) count of each lesion kind per DR grade; every grade adds kinds of its own.
LESIONS_BY_GRADE: dict[int, dict[str, tuple[int, int]]] = {
    0: {},
    1: {"ma": (5, 10)},
    2: {"ma": (8, 14), "haemorrhage": (3, 6), "exudate": (3, 6)},
    3: {"ma": (10, 18), "haemorrhage": (10, 16), "exudate": (5, 9), "cotton_wool": (2, 4)},
    4: {"ma": (10, 18), "haemorrhage": (10, 16), "exudate": (5, 9), "cotton_wool": (2, 4),
        "new_vessels": (2, 3)},
}
LESION_SIZE = {  # radius range in field radii; at 128 px a field radius is about 60 px
    "ma": (0.016, 0.024),
    "haemorrhage": (0.035, 0.065),
    "exudate": (0.012, 0.022),
    "cotton_wool": (0.05, 0.075),
    "new_vessels": (0.09, 0.13),
}
DISC_X, MACULA_X = 0.42, -0.12  # right eye; a left eye is the mirror image


def make_eye(rng: np.random.Generator, eye: str, grade: int) -> EyeScene:
    """Draw the anatomy and the lesions of one eye."""
    side = 1.0 if eye == "r" else -1.0
    vessels = _vessel_tree(rng, side)
    return EyeScene(eye, grade, vessels, draw_lesions(rng, side, LESIONS_BY_GRADE[grade]))


def draw_lesions(rng: np.random.Generator, side: float,
                 counts: dict[str, tuple[int, int]]) -> list[Lesion]:
    """Lesions of each kind in `counts`, as many as drawn from its (min, max), each at a site
    of its kind; hard exudates come in small clusters."""
    lesions: list[Lesion] = []
    for kind, (lo, hi) in counts.items():
        for _ in range(int(rng.integers(lo, hi + 1))):
            x, y = _lesion_site(rng, side, kind)
            size = float(rng.uniform(*LESION_SIZE[kind]))
            if kind == "exudate":
                for _ in range(int(rng.integers(2, 6))):
                    lesions.append(Lesion(kind, x + rng.normal(0, 0.03), y + rng.normal(0, 0.03),
                                          size * float(rng.uniform(0.6, 1.1))))
                continue
            lesions.append(Lesion(kind, x, y, size, float(rng.uniform(0, math.pi)),
                                  int(rng.integers(1 << 30))))
    return lesions


def _lesion_site(rng: np.random.Generator, side: float, kind: str) -> tuple[float, float]:
    while True:
        r, a = 0.85 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        x, y = r * math.cos(a), r * math.sin(a)
        if kind == "new_vessels" and rng.uniform() < 0.5:  # often at the disc
            x, y = side * DISC_X + rng.normal(0, 0.06), rng.normal(0, 0.06)
            return x, y
        if math.hypot(x - side * DISC_X, y) > 0.14:  # not on the optic disc
            return x, y


def _vessel_tree(rng: np.random.Generator, side: float) -> list[tuple[list[tuple[float, float]], float]]:
    """Four arcades leaving the disc, with branches; temporal arcades bend around the macula."""
    out: list[tuple[list[tuple[float, float]], float]] = []
    starts = [(-side, 1.0, 0.75), (-side, -1.0, 0.75), (side, 1.0, 0.5), (side, -1.0, 0.5)]
    for direction, up, length in starts:
        angle = math.atan2(up * rng.uniform(0.6, 1.0), direction * rng.uniform(0.3, 0.6))
        bend = -up * direction * rng.uniform(0.8, 1.4) if direction == -side else 0.3 * up * direction
        _grow(rng, out, (side * DISC_X, 0.0), angle, 0.022, length * 1.6, bend, depth=0)
    return out


def _grow(rng: np.random.Generator, out: list, start: tuple[float, float], angle: float,
          width: float, length: float, bend: float, depth: int) -> None:
    step, pts = 0.04, [start]
    x, y = start
    for _ in range(int(length / step)):
        angle += bend * step + rng.normal(0, 0.08)
        x, y = x + step * math.cos(angle), y + step * math.sin(angle)
        if math.hypot(x, y) > 1.05:
            break
        pts.append((x, y))
        if depth < 2 and rng.uniform() < 0.12 and len(pts) > 3:
            turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
            _grow(rng, out, (x, y), angle + turn, width * 0.65, length * 0.45,
                  rng.normal(0, 0.6), depth + 1)
    out.append((pts, width))


@dataclass(frozen=True)
class View:
    """How one photograph sees the eye: field centre, rotation, nuisance factors."""

    cx: float
    cy: float
    rotation: float
    exposure: float
    tint: tuple[float, float, float]
    light_angle: float
    light_strength: float
    blur: float
    quality: int


def make_view(rng: np.random.Generator, scene: EyeScene, centred_on: str) -> View:
    side = 1.0 if scene.eye == "r" else -1.0
    target = DISC_X * 0.55 if centred_on == "disc" else MACULA_X * 0.5
    return View(
        cx=side * target + rng.normal(0, 0.03), cy=rng.normal(0, 0.03),
        rotation=float(rng.uniform(-0.25, 0.25)), exposure=float(rng.uniform(0.75, 1.15)),
        tint=(float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.85, 1.15)),
              float(rng.uniform(0.8, 1.2))),
        light_angle=float(rng.uniform(0, 2 * math.pi)), light_strength=float(rng.uniform(0, 0.35)),
        blur=float(rng.uniform(0, 1.6)), quality=int(rng.integers(80, 96)),
    )


def render(scene: EyeScene, view: View, width: int, height: int,
           rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """Photograph `scene` through `view`: an RGB fundus image and its binary lesion mask."""
    radius_px = 0.51 * height  # the field circle is clipped a little at top and bottom
    cos_r, sin_r = math.cos(view.rotation), math.sin(view.rotation)

    def to_px(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - view.cx, y - view.cy
        u, v = cos_r * dx - sin_r * dy, sin_r * dx + cos_r * dy
        return width / 2 + u * radius_px, height / 2 - v * radius_px

    def px(r: float) -> float:
        return r * radius_px

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (xx - width / 2) / radius_px, (height / 2 - yy) / radius_px
    rr = np.hypot(u, v)
    base = np.array([178, 82, 38], np.float32) * view.exposure * np.array(view.tint, np.float32)
    shade = 1.0 - 0.35 * rr**2 + view.light_strength * (u * math.cos(view.light_angle)
                                                        + v * math.sin(view.light_angle))
    texture = _smooth_noise(rng, height, width, scale=24) * 0.08 + 1.0
    img = base[None, None, :] * (shade * texture)[..., None]
    # the macula: darker, less saturated centre
    mx, my = to_px((1 if scene.eye == "r" else -1) * MACULA_X, 0.0)
    md = np.hypot(xx - mx, yy - my) / px(0.18)
    img *= (1.0 - 0.35 * np.exp(-(md**2)))[..., None]
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    mask = Image.new("L", (width, height), 0)
    mdraw = ImageDraw.Draw(mask)

    dx_disc, _ = to_px((1 if scene.eye == "r" else -1) * DISC_X, 0.0)
    _disc(draw, to_px((1 if scene.eye == "r" else -1) * DISC_X, 0.0), px(0.085), view)
    del dx_disc
    for pts, w in scene.vessels:
        draw.line([to_px(*p) for p in pts], fill=_col((150, 28, 22), view),
                  width=max(1, round(px(w))), joint="curve")
    for lesion in scene.lesions:
        _lesion(draw, mdraw, lesion, to_px, px, view)

    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=0.6 + view.blur))
    outside = Image.fromarray(((rr > 1.0) * 255).astype(np.uint8))
    canvas.paste((4, 2, 2), mask=outside)
    mask.paste(0, mask=outside)
    return canvas, mask


def _col(rgb: tuple[int, int, int], view: View) -> tuple[int, int, int]:
    r, g, b = (c * view.exposure * t for c, t in zip(rgb, view.tint, strict=True))
    return (min(255, int(r)), min(255, int(g)), min(255, int(b)))


def _disc(draw: ImageDraw.ImageDraw, centre: tuple[float, float], r: float, view: View) -> None:
    x, y = centre
    draw.ellipse([x - r, y - r, x + r, y + r], fill=_col((235, 170, 95), view))
    c = r * 0.45
    draw.ellipse([x - c, y - c, x + c, y + c], fill=_col((250, 215, 150), view))


def _lesion(draw: ImageDraw.ImageDraw, mdraw: ImageDraw.ImageDraw, lesion: Lesion, to_px,
            px, view: View) -> None:
    x, y = to_px(lesion.x, lesion.y)
    r = max(1.0, px(lesion.size))
    if lesion.kind == "new_vessels":
        rng = np.random.default_rng(lesion.seed)
        for _ in range(6):  # a tuft of fine tortuous loops
            pts, a, cx, cy = [], rng.uniform(0, 2 * math.pi), x, y
            for _ in range(10):
                a += rng.normal(0, 0.9)
                cx, cy = cx + 0.35 * r * math.cos(a), cy + 0.35 * r * math.sin(a)
                pts.append((cx, cy))
            width = max(1, round(r * 0.09))
            draw.line(pts, fill=_col((165, 20, 30), view), width=width, joint="curve")
            mdraw.line(pts, fill=255, width=width + 2)
        return
    colour = {
        "ma": (120, 10, 12),
        "haemorrhage": (110, 12, 10),
        "exudate": (245, 225, 90),
        "cotton_wool": (240, 225, 200),
    }[lesion.kind]
    stretch = 1.6 if lesion.kind in ("haemorrhage", "cotton_wool") else 1.0
    box = _rotated_ellipse(x, y, r * stretch, r, lesion.angle)
    draw.polygon(box, fill=_col(colour, view))
    mdraw.polygon(box, fill=255)


def _rotated_ellipse(x: float, y: float, a: float, b: float, angle: float) -> list[tuple[float, float]]:
    ts = np.linspace(0, 2 * math.pi, 20, endpoint=False)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(x + a * math.cos(t) * ca - b * math.sin(t) * sa,
             y + a * math.cos(t) * sa + b * math.sin(t) * ca) for t in ts]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    small = rng.normal(0, 1, (h // scale + 2, w // scale + 2)).astype(np.float32)
    up = Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(up)


def _patient_grades(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """(left, right) grades per patient. DR is mostly symmetric; the other eye is sometimes one less."""
    out = []
    for g in rng.choice(5, size=n, p=GRADE_SHARES):
        other = int(g) - 1 if g > 0 and rng.uniform() < 0.2 else int(g)
        out.append((int(g), other) if rng.uniform() < 0.5 else (other, int(g)))
    return out


def write_deepdrid_demo(out: Path, *, layout: str | None = "course",
                        spec: DemoSpec | None = None) -> Path:
    """Write the demo set under `out` in the DeepDRiD `course` or `original` layout.

    Four images per patient (two per eye, macula- and disc-centred); lesion masks under
    `out/masks/<image_id>.png`. Returns `out`.
    """
    layout = layout or "course"
    if layout not in ("course", "original"):
        raise ConfigError(f"--layout {layout!r}: the DeepDRiD demo has course, original")
    spec = spec or DemoSpec()
    rng = np.random.default_rng([spec.seed, DEMO_VERSION])
    out.mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    splits = {"train": spec.train_patients, "val": spec.val_patients, "test": spec.test_patients}
    patient = 100
    progress = Progress(4 * sum(splits.values()), "writing the demo set")
    for split, n_patients in splits.items():
        rows: list[dict[str, object]] = []
        for left, right in _patient_grades(rng, n_patients):
            patient += 1
            for eye, grade in (("l", left), ("r", right)):
                scene = make_eye(rng, eye, grade)
                for shot, centred_on in ((1, "macula"), (2, "disc")):
                    image_id = f"{patient}_{eye}{shot}"
                    image, mask = render(scene, make_view(rng, scene, centred_on),
                                         spec.width, spec.height, rng)
                    rel = _image_relpath(layout, split, patient, image_id)
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    image.save(out / rel, quality=int(rng.integers(80, 96)))
                    mask.save(out / "masks" / f"{image_id}.png")
                    rows.append({"patient": patient, "image_id": image_id, "eye": eye,
                                 "eye_grade": grade, "patient_grade": max(left, right),
                                 "rel": rel})
                    progress.update()
        _write_csv(out, layout, split, rows)
    progress.close()
    log.info("wrote the %s-layout demo set to %s", layout, out)
    return out


def _image_relpath(layout: str, split: str, patient: int, image_id: str) -> str:
    if layout == "course":
        return f"{split}/{patient}/{image_id}.jpg"
    return f"{ORIGINAL_FOLDERS[split]}/Images/{patient}/{image_id}.jpg"


ORIGINAL_FOLDERS = {"train": "regular-fundus-training", "val": "regular-fundus-validation",
                    "test": "regular-fundus-testing"}


def _write_csv(out: Path, layout: str, split: str, rows: list[dict[str, object]]) -> None:
    if layout == "course":
        header = ["image_id", "img_path", "patient_DR_Level"] if split != "test" else [
            "image_id", "img_path"]
        with open(out / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in rows:
                w.writerow([r["image_id"], r["rel"], r["patient_grade"]][: len(header)])
        return
    folder = ORIGINAL_FOLDERS[split]
    with open(out / folder / f"{folder}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ORIGINAL_COLUMNS)
        for r in rows:
            # the release's image_path is wrong on purpose here too: Windows separators, no Images/
            wrong = f"\\{folder}\\{r['patient']}\\{r['image_id']}.jpg"
            left = r["eye_grade"] if r["eye"] == "l" else ""
            right = r["eye_grade"] if r["eye"] == "r" else ""
            w.writerow([r["patient"], r["image_id"], wrong, 1, left, right, r["patient_grade"],
                        1, 1, 0])
