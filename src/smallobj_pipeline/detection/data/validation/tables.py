"""The two pandas tables validation judges, built from a :class:`CocoDataset`, and the
non-fatal findings read off them.

- annotations: one row per annotation (ids, box, the raw ``iscrowd``, the image's declared size,
  ``x_max``/``y_max`` and how far the box overflows its image);
- images: one row per image (declared size, whether ``file_name`` stays inside the dataset
  directory, exists, its header size against ``max_image_pixels``, decodes, and the decoded size
  and channel count, grey levels and EXIF orientation). The header is read first: an image over
  the pixel limit is refused without being decoded, so a huge file cannot exhaust the memory.

Warnings (:func:`image_warnings`, logged and saved, never fatal): images that would keep fewer
than ``min_levels`` grey levels under the intensity mode (e.g. a 12-bit image under ``fixed``),
and images whose EXIF orientation rotates them (applied, as annotation tools do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ...errors import DatasetError
from ..coco import (
    DEFAULT_MAX_IMAGE_PIXELS,
    CocoDataset,
    exif_orientation,
    image_header,
    read_header,
    read_raw,
    safe_join,
)
from ..intensity import bit_depth, grey_levels
from ..masks import has_mask, mask_facts
from .results import MAX_LISTED, plain


# ------------------------------------------------------------------------------ annotations
def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _valid_iscrowd(value: Any) -> bool:
    """COCO's ``iscrowd`` is the number 0 or 1 (JSON ``true``/``false`` pass as 1/0); a string
    such as ``"0"`` would be truthy and turn the object into an ignored crowd region."""
    return isinstance(value, int | bool) and value in (0, 1)


def is_crowd(ann: dict[str, Any]) -> bool:
    return _valid_iscrowd(ann.get("iscrowd", 0)) and bool(ann.get("iscrowd", 0))


ANNOTATION_COLUMNS = [
    "annotation_id",
    "image_id",
    "category_id",
    "x",
    "y",
    "w",
    "h",
    "image_width",
    "image_height",
    "x_max",
    "y_max",
    "image_known",
    "iscrowd",
]


SEGMENTATION_COLUMNS = [
    "seg_error",
    "seg_min_points",
    "seg_outside_px",
    "seg_rle_height",
    "seg_rle_width",
    "mask_area",
    "mask_box_excess",
]


def _segmentation_facts(ann: dict[str, Any], img: dict[str, Any] | None) -> dict[str, Any]:
    """What the segmentation checks look at (NaN / None: no segmentation, or no image)."""
    out: dict[str, Any] = dict.fromkeys(SEGMENTATION_COLUMNS, float("nan"))
    out["seg_error"] = None
    if not ann.get("segmentation"):
        return out
    if not has_mask(ann):  # present but neither a list nor a dict
        out["seg_error"] = (
            f"must be polygons (a list) or RLE (a dict), got {ann['segmentation']!r:.60}"
        )
        return out
    if img is None or not (_num(img.get("height")) > 0 and _num(img.get("width")) > 0):
        return out
    facts = mask_facts(ann["segmentation"], int(img["height"]), int(img["width"]), ann["bbox"])
    out["seg_error"] = facts["error"]
    for column, key in (
        ("seg_min_points", "min_points"), ("seg_outside_px", "outside_px"),
        ("seg_rle_height", "rle_height"), ("seg_rle_width", "rle_width"),
        ("mask_area", "mask_area"), ("mask_box_excess", "box_excess_px"),
    ):  # fmt: skip
        out[column] = float("nan") if facts[key] is None else float(facts[key])
    return out


def _annotation_row(ann: dict[str, Any], img: dict[str, Any] | None) -> dict[str, Any]:
    x, y, w, h = (_num(v) for v in ann["bbox"])
    iscrowd = ann.get("iscrowd", 0)
    return {
        **_segmentation_facts(ann, img),
        "annotation_id": ann["id"],
        "image_id": ann["image_id"],
        "category_id": ann["category_id"],
        "x": x,
        "y": y,
        "w": w,
        "h": h,
        "image_width": _num(img["width"]) if img is not None else float("nan"),
        "image_height": _num(img["height"]) if img is not None else float("nan"),
        "x_max": x + w,
        "y_max": y + h,
        "image_known": img is not None,
        "iscrowd": repr(iscrowd) + f" ({type(iscrowd).__name__})",  # as the summary quotes it
    }


def annotations_table(coco: CocoDataset) -> pd.DataFrame:
    """One row per annotation, in file order, with its image's declared width/height joined;
    ``iscrowd_value`` holds the raw ``iscrowd`` (0 where absent) as an object column."""
    first_image: dict[Any, dict[str, Any]] = {}
    for img in coco.images:
        first_image.setdefault(img["id"], img)
    rows = [_annotation_row(ann, first_image.get(ann["image_id"])) for ann in coco.annotations]
    df = pd.DataFrame(rows, columns=ANNOTATION_COLUMNS + SEGMENTATION_COLUMNS)
    df["seg_error"] = df["seg_error"].astype(object)
    df["iscrowd_value"] = pd.Series(
        [ann.get("iscrowd", 0) for ann in coco.annotations], dtype=object
    )
    df["right_overflow"] = df["x_max"] - df["image_width"]
    df["bottom_overflow"] = df["y_max"] - df["image_height"]
    return df.reset_index(drop=True)


IMAGE_COLUMNS = [
    "image_id",
    "file_name",
    "width",
    "height",
    "path_ok",
    "exists",
    "readable",
    "actual_width",
    "actual_height",
    "channels",
    "pixels",
    "error",
    "levels_raw",
    "levels",
    "bit_depth",
    "exif_rotated",
]


def images_table(
    coco: CocoDataset,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    intensity: Any = None,
) -> pd.DataFrame:
    """One row per image; files are opened one at a time (header first, then decoded and
    released).

    ``exists`` is null where the path escapes; ``pixels`` (from the header) is null where the
    file is missing or its header unreadable; ``readable`` and the actual size/channels are null
    where the file is missing or over ``max_image_pixels`` (never decoded), so each problem is
    reported by one check only. ``levels_raw`` / ``levels`` count the distinct grey levels in
    the file and after scaling by ``intensity`` (an :class:`.intensity.Intensity`; validation
    runs before the dataset range is known, so ``auto`` is judged per image); ``exif_rotated``
    marks files whose EXIF orientation turns them by 90 degrees.
    """
    rows = [_image_row(coco.root, img, max_image_pixels, intensity) for img in coco.images]
    df = pd.DataFrame(rows, columns=IMAGE_COLUMNS)
    for col in ("exists", "readable"):
        df[col] = df[col].astype(object)
    return df.reset_index(drop=True)


def _image_row(
    root: Path, img: dict[str, Any], max_image_pixels: int | None, intensity: Any
) -> dict[str, Any]:
    """One row of :func:`images_table`: path, existence, then what the file itself says."""
    nan = float("nan")
    row: dict[str, Any] = {
        "image_id": img["id"],
        "file_name": str(img["file_name"]),
        "width": _num(img["width"]),
        "height": _num(img["height"]),
        "path_ok": True,
        "exists": None,
        "readable": None,
        **dict.fromkeys(("actual_width", "actual_height", "channels", "pixels"), nan),
        "error": None,
        "levels_raw": nan,
        "levels": nan,
        "bit_depth": None,
        "exif_rotated": False,
    }
    try:
        path = safe_join(root, str(img["file_name"]))
    except DatasetError as exc:
        return {**row, "path_ok": False, "error": str(exc)}
    row["exists"] = path.is_file()
    if not row["exists"]:
        return {**row, "error": f"{path}: image file not found"}
    return {**row, **_file_facts(path, max_image_pixels, intensity)}


def _file_facts(path: Path, max_image_pixels: int | None, intensity: Any) -> dict[str, Any]:
    """Header pixels, then (within the pixel limit) the decoded size, channels and grey levels;
    ``readable`` False and ``error`` where the file fails to read."""
    try:
        hw, hh, _ = read_header(path)
    except DatasetError as exc:
        return {"readable": False, "error": str(exc)}
    facts: dict[str, Any] = {"pixels": float(hw) * float(hh)}
    if max_image_pixels is not None and hw * hh > max_image_pixels:
        try:
            image_header(path, max_pixels=max_image_pixels, decode=False)
        except DatasetError as exc:  # the "too large" message, without decoding
            facts["error"] = str(exc)
        return facts
    try:
        raw = read_raw(path)
    except DatasetError as exc:
        return {**facts, "readable": False, "error": str(exc)}
    facts.update(
        readable=True,
        actual_width=float(raw.shape[1]),
        actual_height=float(raw.shape[0]),
        channels=float(1 if raw.ndim == 2 else raw.shape[2]),
        exif_rotated=_exif_rotated(path),
    )
    try:
        facts.update(_levels(raw, intensity))
    except DatasetError as exc:
        facts.update(readable=False, error=str(exc))
    return facts


LEVEL_SAMPLE = 1 << 20  # pixels looked at to count grey levels (a strided subset of large images)


def _levels(raw: np.ndarray, intensity: Any) -> dict[str, Any]:
    step = max(1, int(np.ceil(np.sqrt(raw.shape[0] * raw.shape[1] / LEVEL_SAMPLE))))
    sample = raw[::step, ::step]
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    return {
        "levels_raw": float(np.unique(sample).size),
        "levels": float(grey_levels(sample, intensity)),
        "bit_depth": bit_depth(raw.dtype, float(finite.max()) if finite.size else 0.0),
    }


def _exif_rotated(path: Any) -> bool:
    if str(path).lower().endswith((".tif", ".tiff")):
        return False
    try:
        with Image.open(path) as img:
            return exif_orientation(img) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - the header was read already; no orientation then
        return False


def image_warnings(images: pd.DataFrame, min_levels: int, mode: str) -> list[str]:
    """Non-fatal findings: images crushed to fewer than ``min_levels`` grey levels by the
    intensity ``mode`` (fewer than the file holds), images turned by their EXIF orientation."""
    out = []
    crushed = images[(images["levels"] < min_levels) & (images["levels"] < images["levels_raw"])]
    for _, r in crushed.iterrows():
        out.append(
            f"image id {plain(r['image_id'])} ({r['file_name']}): {r['bit_depth']} pixels keep "
            f"only {r['levels']:g} of {r['levels_raw']:g} grey levels under intensity.mode "
            f"'{mode}'"
            + (
                "; intensity.mode 'auto' scales them by the dataset's range instead"
                if mode == "fixed"
                else ""
            )
        )
    rotated = images[images["exif_rotated"] == True]  # noqa: E712 - pandas column comparison
    if len(rotated):
        ids = ", ".join(str(plain(i)) for i in rotated["image_id"].head(MAX_LISTED))
        out.append(
            f"{len(rotated)} image(s) carry an EXIF orientation that turns them by 90 degrees "
            f"(image ids {ids}{', ...' if len(rotated) > MAX_LISTED else ''}): the pipeline "
            "applies it, as annotation tools display the image; widths, heights, boxes and masks "
            "must refer to the turned image"
        )
    return out
