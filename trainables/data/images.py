"""Decoding and fundus preprocessing of one image, done once per image when the cache is built.

JPEGs are decoded with libjpeg's DCT scaling (`Image.draft`) straight to about twice the
cache size: a 2000 px fundus photo costs a fraction of a full decode, and every byte of the
stream is still read, so a truncated file still fails.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageFilter, UnidentifiedImageError

# A completely decoded image is the check: never accept a truncated one silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError,
                  Image.DecompressionBombError)


def probe_image(path: str) -> tuple[tuple[int, int] | None, str | None]:
    """Decode `path` completely; return ((width, height), None) or (None, what is wrong)."""
    try:
        with Image.open(path) as im:
            size = im.size
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
        return size, None
    except FileNotFoundError:
        return None, "not found"
    except _DECODE_ERRORS as e:
        return None, f"cannot be decoded ({type(e).__name__}: {e})"


def decode(path: str, size: int, mode: str = "RGB") -> Image.Image:
    """Decode to `mode` (RGB or L) at no less than `2 * size` on the short side (JPEG DCT
    scaling)."""
    with Image.open(path) as im:
        im.draft(mode, (2 * size, 2 * size))
        return im.convert(mode)


def fundus_mask(rgb: np.ndarray, threshold: int = 12) -> np.ndarray:
    """Pixels inside the camera field: the black surround is dark in every channel."""
    return rgb.max(axis=2) > threshold


def fundus_box(im: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the fundus field; the whole image if none is found."""
    mask = fundus_mask(np.asarray(im))
    rows, cols = np.flatnonzero(mask.mean(axis=1) > 0.02), np.flatnonzero(mask.mean(axis=0) > 0.02)
    if len(rows) and len(cols):
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    return 0, 0, im.size[0], im.size[1]


def crop_to_fundus(im: Image.Image) -> Image.Image:
    """Crop to the bounding box of the fundus field and pad it to a centred square."""
    return pad_square(im.crop(fundus_box(im)))


def pad_square(im: Image.Image) -> Image.Image:
    """Pad with black (zeros in any mode) to a centred square."""
    w, h = im.size
    side = max(w, h)
    if w == h:
        return im
    out = Image.new(im.mode, (side, side))
    out.paste(im, ((side - w) // 2, (side - h) // 2))
    return out


def circle_mask(size: int, scale: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2
    return np.hypot(xx - c, yy - c) <= scale * size / 2


def ben_graham(rgb: np.ndarray) -> np.ndarray:
    """Local-average colour subtraction: 4 * (image - gaussian blur) + 128, as in Ben Graham's
    Kaggle DR winning entry, with the blur scaled to the image (sigma = size / 30)."""
    size = rgb.shape[0]
    blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius=size / 30)))
    out = 4.0 * rgb.astype(np.float32) - 4.0 * blurred.astype(np.float32) + 128.0
    out = np.clip(out, 0, 255).astype(np.uint8)
    out[~circle_mask(size, 0.95)] = 128  # the bright rim the subtraction leaves is cut off
    return out


def load_mask(mask_path: str, image_path: str, size: int, preprocess: str) -> np.ndarray:
    """A lesion mask (same size as its image) in the geometry `load_fundus` gives the image:
    the same crop, padding and resize. Returns bool (size, size)."""
    im = decode(image_path, size)
    with Image.open(mask_path) as m:
        mask = m.convert("L").resize(im.size, Image.Resampling.NEAREST)
    mask = pad_square(mask) if preprocess == "none" else pad_square(mask.crop(fundus_box(im)))
    return np.asarray(mask.resize((size, size), Image.Resampling.NEAREST)) > 127


def load_gray(path: str, size: int) -> np.ndarray:
    """One grayscale image as uint8 (size, size, 1), padded to a square and resized."""
    return resize_square(decode(path, size, "L"), size)


def resize_square(im: Image.Image, size: int) -> np.ndarray:
    """Pad to a centred square and resize to (size, size, C) uint8 (C = 1 for L, 3 for RGB)."""
    out = np.asarray(pad_square(im).resize((size, size), Image.Resampling.BICUBIC,
                                           reducing_gap=2.0), dtype=np.uint8)
    return np.ascontiguousarray(out[..., None] if out.ndim == 2 else out)


def load_fundus(path: str, size: int, preprocess: str) -> np.ndarray:
    """One image as uint8 (size, size, 3) after preprocessing: none, circle or ben."""
    im = decode(path, size)
    im = pad_square(im) if preprocess == "none" else crop_to_fundus(im)
    rgb = np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0))
    if preprocess == "circle":
        rgb = rgb.copy()
        rgb[~circle_mask(size)] = 0
    elif preprocess == "ben":
        rgb = ben_graham(rgb)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


# ---- the per-process work of a cache build and a data check (trainables.data.pool)

def _decoder(kind: str, size: int, preprocess: str, npz: str, split: str) -> Any:
    """fn(path, item) -> uint8 (size, size, C) for one image of a split."""
    if kind == "npz":  # MedMNIST: every image of the split in one array
        arrays = _npz_split(npz, split)
        mode = "RGB" if arrays.ndim == 4 and arrays.shape[3] == 3 else "L"
        return lambda path, item: resize_square(Image.fromarray(
            np.asarray(arrays[item]).reshape(arrays.shape[1:3] + ((3,) if mode == "RGB" else ())),
            mode), size)
    if kind == "gray":
        return lambda path, item: load_gray(path, size)
    return lambda path, item: load_fundus(path, size, preprocess)


@functools.lru_cache(maxsize=2)
def _npz_split(npz: str, split: str) -> np.ndarray:
    return np.load(npz, allow_pickle=False)[f"{split}_images"]


def decode_rows(job: tuple[str, int, tuple[str, int, str, str, str], list[str], list[int]]
                ) -> list[tuple[int, str]]:
    """Decode rows start.. of a split into the cache array `out` (a .npy file, opened
    memory-mapped here: nothing but the errors travels back); returns (row offset, what is
    wrong) for each image that cannot be decoded."""
    out_path, start, spec, paths, items = job
    out = np.load(out_path, mmap_mode="r+")
    load = _decoder(*spec)
    problems = []
    for i, (path, item) in enumerate(zip(paths, items, strict=True)):
        try:
            out[start + i] = load(path, item)
        except _DECODE_ERRORS as e:
            problems.append((start + i, f"cannot be decoded ({type(e).__name__}: {e})"))
    out.flush()
    return problems


def probe_paths(paths: list[str]) -> list[tuple[tuple[int, int] | None, str | None]]:
    """`probe_image` of each path: a data check's chunk."""
    return [probe_image(p) for p in paths]
