"""Deterministic generator of the bundled small-object dataset (COCO detection format).

Each image is a 1-channel (optionally RGB) ``uint8`` PNG holding many small glyphs (the objects,
one COCO category per class name) on a textured, noisy background, together with distractors
(soft blobs, line segments, filled squares) of similar size and contrast that are *not*
annotated. The annotated box of an object is the tight extent of its drawn pixels.

The same arguments give byte-identical ``annotations.json`` and images: every image draws from
its own ``numpy`` generator seeded with ``(seed, image index)``.
"""

from __future__ import annotations

import inspect
import io as _stdio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..errors import ConfigError, DatasetError
from ..io import write_bytes
from .coco import ANNOTATIONS_FILE, SPLIT_NAMES, CocoDataset, load_json, safe_join

GENERATOR_VERSION = 1
SPLIT_RATIOS = (0.7, 0.15, 0.15)


# ------------------------------------------------------------------------------ glyph masks
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates scaled to [-1, 1] along each axis (end pixels at exactly +-1)."""

    def axis(n: int) -> np.ndarray:
        half = (n - 1) / 2.0
        return (np.arange(n) - half) / half if n > 1 else np.zeros(1)  # exactly symmetric

    return np.broadcast_to(axis(w)[None, :], (h, w)), np.broadcast_to(axis(h)[:, None], (h, w))


def _stroke(w: int, h: int) -> float:
    """Stroke thickness in pixels: about a fifth of the side, at least 2 px."""
    return max(2.0, min(w, h) / 5.0)


def _ring(w: int, h: int) -> np.ndarray:
    u, v = _grid(w, h)
    # distance to the ellipse boundary in pixels, approximately
    r = np.sqrt(u**2 + v**2)
    half = min(w, h) / 2.0
    outer = r <= 1.0 + 0.5 / half
    inner = r < 1.0 - _stroke(w, h) / half
    return outer & ~inner


def _cross(w: int, h: int) -> np.ndarray:
    u, v = _grid(w, h)
    t = _stroke(w, h)
    vertical = np.abs(u) * (w - 1) / 2.0 <= t / 2.0
    horizontal = np.abs(v) * (h - 1) / 2.0 <= t / 2.0
    return vertical | horizontal


def _x(w: int, h: int) -> np.ndarray:
    u, v = _grid(w, h)
    t = _stroke(w, h) / (min(w, h) / 2.0)
    return (np.abs(u - v) <= t * 0.75) | (np.abs(u + v) <= t * 0.75)


def _triangle(w: int, h: int) -> np.ndarray:
    u, v = _grid(w, h)
    # apex at the top centre, base on the bottom row; width grows linearly downwards
    frac = (v + 1.0) / 2.0  # 0 at the top row, 1 at the bottom row
    return np.abs(u) <= frac + 1.0 / max(w - 1, 1)


def _diamond(w: int, h: int) -> np.ndarray:
    u, v = _grid(w, h)
    d = np.abs(u) + np.abs(v)
    t = _stroke(w, h) / (min(w, h) / 2.0)
    return (d <= 1.0 + 1.01 / max(min(w, h) - 1, 1)) & (d >= 1.0 - t)


def _disc(w: int, h: int) -> np.ndarray:
    u, v = _grid(w, h)
    return u**2 + v**2 <= 1.0 + 1.0 / max(min(w, h) - 1, 1)


def _square(w: int, h: int) -> np.ndarray:
    """Hollow square outline."""
    u, v = _grid(w, h)
    tu, tv = _stroke(w, h) / (w / 2.0), _stroke(w, h) / (h / 2.0)
    return (np.abs(u) >= 1.0 - tu) | (np.abs(v) >= 1.0 - tv)


def _tee(w: int, h: int) -> np.ndarray:
    u, v = _grid(w, h)
    t = _stroke(w, h)
    stem = np.abs(u) * (w - 1) / 2.0 <= t / 2.0
    bar = (v + 1.0) * (h - 1) / 2.0 < t
    return stem | bar


def _ell(w: int, h: int) -> np.ndarray:
    u, v = _grid(w, h)
    t = _stroke(w, h)
    return ((u + 1.0) * (w - 1) / 2.0 < t) | ((1.0 - v) * (h - 1) / 2.0 < t)


def _dotted_ring(w: int, h: int) -> np.ndarray:
    """A ring with a dot in its centre."""
    u, v = _grid(w, h)
    dot = np.sqrt(u**2 + v**2) <= max(0.25, 1.5 / max(min(w, h) / 2.0, 1.0))
    return _ring(w, h) | dot


# The bundled sample uses ring and cross; the others give generated sets up to 10 classes.
SHAPES: dict[str, Callable[[int, int], np.ndarray]] = {
    "ring": _ring,
    "cross": _cross,
    "x": _x,
    "triangle": _triangle,
    "diamond": _diamond,
    "disc": _disc,
    "square": _square,
    "tee": _tee,
    "ell": _ell,
    "dotted_ring": _dotted_ring,
}


def _trimmed(mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask[:0, :0]
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _glyph(shape: str, w: int, h: int, min_side: int, max_side: int) -> np.ndarray:
    """Mask of ``shape`` trimmed to its drawn extent, with both sides in [min_side, max_side]."""
    for _ in range(4):
        mask = _trimmed(SHAPES[shape](w, h))
        mh, mw = mask.shape
        if mh >= min_side and mw >= min_side:
            return mask
        w, h = min(w + 1, max_side), min(h + 1, max_side)
    return mask


# ------------------------------------------------------------------------------ backgrounds
def _upsample(coarse: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a coarse grid to (h, w)."""
    gh, gw = coarse.shape
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.clip(np.floor(ys).astype(int), 0, gh - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth low-frequency texture around a random mean level (float, roughly 60..160)."""
    base = rng.uniform(80.0, 130.0)
    tex = np.zeros((h, w))
    for cells, amp in ((3, 22.0), (7, 10.0)):
        coarse = rng.normal(0.0, 1.0, size=(cells + 1, cells + 1))
        tex += amp * _upsample(coarse, h, w)
    return base + tex


# ------------------------------------------------------------------------------ placement
class _Occupancy:
    """Axis-aligned boxes already placed, with a margin that keeps things apart."""

    def __init__(self, h: int, w: int, margin: int) -> None:
        self.grid = np.zeros((h, w), dtype=bool)
        self.margin = margin

    def free(self, x: int, y: int, w: int, h: int) -> bool:
        m = self.margin
        return not self.grid[max(0, y - m) : y + h + m, max(0, x - m) : x + w + m].any()

    def take(self, x: int, y: int, w: int, h: int) -> None:
        self.grid[y : y + h, x : x + w] = True


def _place(
    rng: np.random.Generator,
    occ: _Occupancy,
    img_w: int,
    img_h: int,
    w: int,
    h: int,
    attempts: int = 60,
) -> tuple[int, int] | None:
    if w > img_w or h > img_h:
        return None
    for _ in range(attempts):
        x = int(rng.integers(0, img_w - w + 1))
        y = int(rng.integers(0, img_h - h + 1))
        if occ.free(x, y, w, h):
            occ.take(x, y, w, h)
            return x, y
    return None


def _distractor(rng: np.random.Generator, min_side: int, max_side: int) -> np.ndarray:
    """A float alpha patch in [0, 1] that is not one of the object glyphs."""
    kind = int(rng.integers(0, 3))
    s = int(rng.integers(min_side, max_side + 1))
    if kind == 0:  # soft gaussian blob
        u, v = _grid(s, s)
        sigma = rng.uniform(0.35, 0.6)
        return np.exp(-(u**2 + v**2) / (2 * sigma**2))
    if kind == 1:  # line segment, 1-2 px thick, random angle
        length = s + int(rng.integers(0, max_side // 2 + 1))
        thickness = rng.uniform(0.8, 1.6)
        angle = rng.uniform(0, np.pi)
        n = length + 2
        yy, xx = np.mgrid[0:n, 0:n].astype(float) - (n - 1) / 2.0
        dx, dy = np.cos(angle), np.sin(angle)
        along = xx * dx + yy * dy
        across = -xx * dy + yy * dx
        mask = (np.abs(across) <= thickness) & (np.abs(along) <= length / 2.0)
        return _trimmed(mask).astype(float)
    # filled square / rectangle
    h = int(np.clip(round(s * rng.uniform(0.7, 1.3)), min_side, max_side))
    return np.ones((h, s))


# ------------------------------------------------------------------------------ one image
def _render_image(
    rng: np.random.Generator,
    size: int,
    classes: Sequence[str],
    min_objects: int,
    max_objects: int,
    min_side: int,
    max_side: int,
    num_distractors: tuple[int, int],
) -> tuple[np.ndarray, list[tuple[int, list[int], np.ndarray]]]:
    """The image and its objects: ``(class index, [x, y, w, h], drawn mask)`` each."""
    img = _background(rng, size, size)
    occ = _Occupancy(size, size, margin=2)
    objects: list[tuple[int, list[int], np.ndarray]] = []
    n_obj = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(n_obj):
        cls = int(rng.integers(0, len(classes)))
        w = int(rng.integers(min_side, max_side + 1))
        h = int(np.clip(round(w * rng.uniform(0.8, 1.25)), min_side, max_side))
        mask = _glyph(classes[cls], w, h, min_side, max_side)
        mh, mw = mask.shape
        pos = _place(rng, occ, size, size, mw, mh)
        if pos is None:
            continue
        x, y = pos
        contrast = rng.uniform(70.0, 120.0)
        img[y : y + mh, x : x + mw] += contrast * mask
        objects.append((cls, [x, y, mw, mh], mask))
    n_dis = int(rng.integers(num_distractors[0], num_distractors[1] + 1))
    for _ in range(n_dis):
        alpha = _distractor(rng, min_side, max_side)
        ah, aw = alpha.shape
        pos = _place(rng, occ, size, size, aw, ah, attempts=30)
        if pos is None:
            continue
        x, y = pos
        sign = 1.0 if rng.random() < 0.6 else -1.0
        img[y : y + ah, x : x + aw] += sign * rng.uniform(50.0, 120.0) * alpha
    img += rng.normal(0.0, rng.uniform(5.0, 10.0), size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = _stdio.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# ------------------------------------------------------------------------------ public API
def _check_args(
    num_images: int,
    image_size: int,
    min_objects: int,
    max_objects: int,
    min_side: int,
    max_side: int,
    num_distractors: Sequence[int],
    classes: Sequence[str],
    channels: int,
) -> None:
    if isinstance(classes, str):
        raise ConfigError(f"classes must be a list of shape names, got the string {classes!r}")
    problems = []
    if int(num_images) < 1:
        problems.append(f"num_images={num_images} must be >= 1")
    if not 1 <= int(min_side) <= int(max_side):
        problems.append(
            f"min_side={min_side}, max_side={max_side} must satisfy 1 <= min_side <= max_side"
        )
    if int(image_size) < int(max_side):
        problems.append(f"image_size={image_size} must be >= max_side={max_side}")
    if not 0 <= int(min_objects) <= int(max_objects):
        problems.append(
            f"min_objects={min_objects}, max_objects={max_objects} must satisfy 0 <= min <= max"
        )
    if len(num_distractors) != 2 or not 0 <= int(num_distractors[0]) <= int(num_distractors[1]):
        problems.append(
            f"num_distractors={list(num_distractors)} must be [low, high] with 0 <= low <= high"
        )
    if channels not in (1, 3):
        problems.append(f"channels={channels} must be 1 or 3")
    unknown = [c for c in classes if c not in SHAPES]
    if not classes or unknown:
        problems.append(
            f"classes {list(classes)}: unknown shape(s) {unknown}; choose from {sorted(SHAPES)}"
        )
    if len(set(classes)) != len(classes):
        problems.append(f"classes {list(classes)} contain duplicates")
    if problems:
        raise ConfigError("generate_sample_dataset: " + "; ".join(problems))


def generate_sample_dataset(
    out_dir: str | Path,
    num_images: int = 60,
    image_size: int = 256,
    seed: int = 0,
    min_objects: int = 10,
    max_objects: int = 40,
    min_side: int = 6,
    max_side: int = 24,
    num_distractors: Sequence[int] = (3, 10),
    classes: Sequence[str] = ("ring", "cross"),
    channels: int = 1,
    write_splits: bool = False,
    segmentation: bool = False,
) -> Path:
    """Write ``out_dir/images/NNNN.png`` and ``out_dir/annotations.json`` (written last,
    atomically).

    ``min_objects`` is a target: an image too small to hold that many non-overlapping objects
    gets as many as fit. With ``write_splits`` also writes ``train/val/test.json`` (70/15/15,
    seeded). With ``segmentation`` each object also gets COCO polygons tracing exactly its drawn
    pixels (:func:`mask_polygons`; the images are the same either way). Returns ``out_dir``.
    """
    _check_args(
        num_images,
        image_size,
        min_objects,
        max_objects,
        min_side,
        max_side,
        num_distractors,
        list(classes),
        channels,
    )
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    params = {
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "min_objects": int(min_objects),
        "max_objects": int(max_objects),
        "min_side": int(min_side),
        "max_side": int(max_side),
        "num_distractors": [int(v) for v in num_distractors],
        "classes": list(classes),
        "channels": int(channels),
        "segmentation": bool(segmentation),
    }
    images, annotations = _write_images(out_dir, params)
    _write_annotations(out_dir, images, annotations, params, write_splits)
    return out_dir


def _write_annotations(
    out_dir: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    params: dict[str, Any],
    write_splits: bool,
) -> None:
    """The split files (seeded, or removes stale ones), then ``annotations.json``."""
    categories = [
        {"id": i + 1, "name": name, "supercategory": "glyph"}
        for i, name in enumerate(params["classes"])
    ]
    info = {
        "description": "smallobj_pipeline synthetic small-object sample",
        "generator_version": GENERATOR_VERSION,
        "params": params,
    }
    ids = [img["id"] for img in images]
    splits = _seeded_splits(ids, params["seed"]) if write_splits else {}
    coco = CocoDataset(
        root=out_dir,
        images=images,
        annotations=annotations,
        categories=categories,
        splits=splits,
        info=info,
    )
    coco.write_annotations(out_dir)


def _write_images(
    out_dir: Path, params: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Render and write every image of the sample described by ``params`` (the checked
    arguments of :func:`generate_sample_dataset`); returns its COCO images and annotations."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    size = params["image_size"]
    for index in range(params["num_images"]):
        rng = np.random.default_rng([params["seed"], index])
        gray, objects = _render_image(
            rng,
            size,
            params["classes"],
            params["min_objects"],
            params["max_objects"],
            params["min_side"],
            params["max_side"],
            (params["num_distractors"][0], params["num_distractors"][1]),
        )
        if params["channels"] == 3:
            gains = rng.uniform(0.85, 1.0, size=3)
            arr = np.clip(np.round(gray[..., None].astype(float) * gains), 0, 255).astype(np.uint8)
        else:
            arr = gray
        image_id = index + 1
        file_name = f"images/{index:04d}.png"
        write_bytes(out_dir / file_name, _png_bytes(arr))
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for cls, bbox, mask in objects:
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cls + 1,
                "bbox": [int(v) for v in bbox],
                "area": int(bbox[2] * bbox[3]),
                "iscrowd": 0,
            }
            if params.get("segmentation"):
                ann["segmentation"] = mask_polygons(mask, bbox[0], bbox[1])
                ann["area"] = int(mask.sum())  # COCO's area of a mask is its pixel count
            annotations.append(ann)
    return images, annotations


def mask_polygons(mask: np.ndarray, x: int = 0, y: int = 0) -> list[list[float]]:
    """COCO polygons whose rasterisation by pycocotools gives exactly ``mask``'s pixels, shifted
    by ``(x, y)``. Polygons cannot have holes: a part with a hole is cut at the hole's column
    into parts without (their union is the mask); outlines are traced by OpenCV on the mask
    upsampled 4 times, so they follow pixel edges rather than pixel centres."""
    polygons = []
    for piece in _without_holes(np.ascontiguousarray(mask, dtype=np.uint8)):
        up = np.kron(piece, np.ones((4, 4), np.uint8))
        contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            if len(c) < 3:
                continue
            pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 4.0 + (x, y)
            polygons.append([round(float(v), 3) for v in pts.ravel()])
    return polygons


def _without_holes(mask: np.ndarray) -> list[np.ndarray]:
    """``mask`` split into pieces without holes (cut through the column of a hole's centre)."""
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    holes = [] if hierarchy is None else [c for c, h in zip(contours, hierarchy[0]) if h[3] != -1]
    if not holes:
        return [mask]
    cut = int(round(holes[0].reshape(-1, 2)[:, 0].mean())) + 1
    left, right = mask.copy(), mask.copy()
    left[:, cut:] = 0
    right[:, :cut] = 0
    return [p for part in (left, right) if part.any() for p in _without_holes(part)]


def _seeded_splits(ids: list[int], seed: int) -> dict[str, list[int]]:
    """``ids`` shuffled with ``seed`` and cut 70/15/15 into train/val/test (each sorted)."""
    order = np.random.default_rng([seed, 7919]).permutation(len(ids))
    n_train = int(round(len(ids) * SPLIT_RATIOS[0]))
    n_val = int(round(len(ids) * SPLIT_RATIOS[1]))
    shuffled = [ids[i] for i in order]
    parts = [shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :]]
    return {name: sorted(part) for name, part in zip(SPLIT_NAMES, parts, strict=True)}


def _default(name: str) -> Any:
    """The default of :func:`generate_sample_dataset`'s argument ``name`` (None if it has none)."""
    param = inspect.signature(generate_sample_dataset).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def dataset_exists(out_dir: str | Path, params: dict[str, Any] | None = None) -> bool:
    """True when ``out_dir`` holds a readable ``annotations.json`` whose image files all exist
    and, with ``params`` (generator arguments), that was generated with those values (a sample
    written by other settings, e.g. without ``segmentation``, is not reused)."""
    out_dir = Path(out_dir)
    path = out_dir / ANNOTATIONS_FILE
    if not path.is_file():
        return False
    try:
        data = load_json(path)
        images = data.get("images")
        if not isinstance(images, list):
            return False
        made_with = (data.get("info") or {}).get("params") or {}
        # a setting added after the sample was made counts as made with its default
        if any(made_with.get(k, _default(k)) != v for k, v in (params or {}).items()):
            return False
        return all(safe_join(out_dir, str(img["file_name"])).is_file() for img in images)
    except (DatasetError, KeyError, TypeError):
        return False
