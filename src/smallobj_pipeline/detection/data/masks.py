"""Instance masks of COCO annotations: reading, writing, cutting to tiles and checking them.

The COCO ``segmentation`` field is one of
- polygons: a list of parts, each ``[x1, y1, x2, y2, ...]`` pixels (at least 3 points);
- uncompressed RLE: ``{"size": [height, width], "counts": [int, ...]}`` (column-major runs);
- compressed RLE: ``{"size": [height, width], "counts": "<COCO's string>"}``.

Rasterising, run-length coding, area and box come from pycocotools' mask utilities
(``frPyObjects``, ``merge``, ``decode``, ``encode``, ``area``, ``toBbox``), so masks are exactly
COCO's (the same pixels COCOeval scores). What is written here, because pycocotools has no
function for it: telling the three forms apart, naming what is wrong with a malformed one
(for validation, with the annotation's id), cutting a segmentation to a tile window and the
measures validation checks (points outside the image, mask pixels outside the box). Compressed
RLE strings are also parsed here (:func:`_string_counts`, pycocotools' ``rleFrString`` in
Python) before pycocotools sees them: its C reader accepts a corrupt string without complaint
and decodes it to stray pixels, and huge polygon coordinates crash it, so both are refused first.

Masks are decoded one image at a time (:func:`image_masks`), never held for a whole dataset.
An empty ``segmentation`` (``[]``, ``{}`` or absent), as box-only exports write it, means "no
mask".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

POLYGON = "polygon"
RLE = "rle"
RLE_UNCOMPRESSED = "rle_uncompressed"


def has_mask(ann: Mapping[str, Any]) -> bool:
    """The annotation carries a (non-empty) segmentation."""
    seg = ann.get("segmentation")
    return bool(seg) and isinstance(seg, list | dict)


def segmentation_kind(seg: Any) -> str:
    """``polygon``, ``rle`` or ``rle_uncompressed``; :class:`ValueError` saying what is wrong
    when ``seg`` is none of them (a compressed RLE is parsed: its runs must cover the size)."""
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list | tuple) and len(size) == 2):
            raise ValueError(f"RLE 'size' must be [height, width], got {size!r:.60}")
        if not all(_count(v) for v in size):
            raise ValueError(f"RLE 'size' must be two non-negative integers, got {size!r:.60}")
        if isinstance(counts, str | bytes):
            runs = _string_counts(counts)
            if runs is None:
                raise ValueError(f"RLE 'counts' is not a valid COCO RLE string: {counts!r:.40}")
            _check_sum(runs, size, "compressed")
            return RLE
        if isinstance(counts, list) and all(_count(v) for v in counts):
            _check_sum(counts, size, "uncompressed")
            return RLE_UNCOMPRESSED
        raise ValueError(
            f"RLE 'counts' must be a string or a list of non-negative integers, got {counts!r:.40}"
        )
    if isinstance(seg, list) and seg:
        for i, part in enumerate(seg):
            if not isinstance(part, list):
                raise ValueError(
                    f"polygon part {i} is {part!r:.30}, not a list [x1, y1, x2, y2, ...] "
                    "(polygons are a list of parts: [[x1, y1, ...], ...])"
                )
            bad = [v for v in part if not _coordinate(v)]
            if bad:
                raise ValueError(
                    f"polygon part {i} holds {bad[0]!r:.30} ({type(bad[0]).__name__}): coordinates "
                    f"must be finite numbers within +-{MAX_COORDINATE:g} px"
                )
            if len(part) % 2:
                raise ValueError(f"polygon part {i} has an odd number of coordinates ({len(part)})")
        return POLYGON
    raise ValueError(f"segmentation must be polygons (a list) or RLE (a dict), got {seg!r:.60}")


# pycocotools rasterises polygons in C ints at 5x: coordinates far beyond any image overflow
# them (a crash) or allocate without bound; larger ones are refused as malformed
MAX_COORDINATE = 1e6


def _coordinate(v: Any) -> bool:
    return (
        isinstance(v, numbers.Real)
        and not isinstance(v, bool | np.bool_)
        and math.isfinite(v)
        and abs(v) <= MAX_COORDINATE
    )


def _count(v: Any) -> bool:
    """A non-negative integer (not a bool, not a float)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_) and v >= 0


def _check_sum(runs: Sequence[int], size: Sequence[int], form: str) -> None:
    h, w = size
    if sum(runs) != h * w:
        raise ValueError(
            f"{form} RLE counts sum to {sum(runs)}, not height x width {h} x {w} = {h * w}"
        )


def _string_counts(counts: str | bytes) -> list[int] | None:
    """The runs of a compressed COCO RLE string (pycocotools' ``rleFrString``, which reads a
    corrupt string without complaint), or None when it is not one."""
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return None
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x = k = 0
        more = True
        while more:
            if p >= len(counts):
                return None  # the string ends inside a number
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return None
        runs.append(x)
    return runs


def to_rle(seg: Any, height: int, width: int, kind: str | None = None) -> dict[str, Any]:
    """One compressed RLE of ``seg`` (parts merged) for an image of ``height`` x ``width``;
    ``kind``: ``seg``'s :func:`segmentation_kind` when the caller has checked it already."""
    kind = kind or segmentation_kind(seg)
    if kind == POLYGON:
        parts = [p for p in seg if len(p) >= 6]  # a part of < 3 points has no area
        if not parts:
            return mask_utils.encode(np.zeros((height, width, 1), np.uint8, order="F"))[0]
        return mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    if kind == RLE_UNCOMPRESSED:
        h, w = seg["size"]
        return mask_utils.frPyObjects(seg, h, w)
    return _bytes_rle(seg)


def decode(seg: Any, height: int, width: int) -> np.ndarray:
    """``seg`` as a ``(height, width)`` uint8 mask of 0/1."""
    rle = to_rle(seg, height, width)
    if tuple(rle["size"]) != (height, width):
        raise ValueError(f"RLE size {list(rle['size'])} is not the image's [{height}, {width}]")
    return mask_utils.decode(rle)


def area(seg: Any, height: int, width: int) -> int:
    """Pixels of ``seg`` in an image of ``height`` x ``width`` (an RLE: of its own size)."""
    return int(mask_utils.area(to_rle(seg, height, width)))


def encode(mask: np.ndarray) -> dict[str, Any]:
    """A ``(H, W)`` mask (bool or 0/1) as compressed COCO RLE with a JSON-ready ``counts``."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def image_masks(anns: Sequence[Mapping[str, Any]], height: int, width: int) -> np.ndarray:
    """``(N, height, width)`` uint8 masks of ``anns`` (in order), decoded now (one image)."""
    out = np.zeros((len(anns), height, width), dtype=np.uint8)
    for i, ann in enumerate(anns):
        try:
            out[i] = decode(ann["segmentation"], height, width)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"annotation id {ann.get('id')}: segmentation: {exc}") from None
    return out


def crop(seg: Any, window: Sequence[int]) -> Any:
    """``seg`` in the coordinates of ``window`` (x, y, w, h): polygons are shifted (pycocotools
    rasterises only what falls inside), an RLE is decoded, cut and encoded again."""
    x0, y0, w, h = (int(v) for v in window)
    if segmentation_kind(seg) == POLYGON:
        return [[v - (x0 if i % 2 == 0 else y0) for i, v in enumerate(part)] for part in seg]
    full_h, full_w = seg["size"]
    return encode(decode(seg, full_h, full_w)[y0 : y0 + h, x0 : x0 + w])


def mask_facts(seg: Any, height: int, width: int, bbox: Sequence[float]) -> dict[str, Any]:
    """What validation asks of one segmentation in an image of ``height`` x ``width``:
    ``kind`` (or ``error``), ``min_points``, ``outside_px`` (how far polygon points leave the
    image), ``rle_height``/``rle_width``, ``mask_area`` (pixels) and ``box_excess_px`` (how far
    mask pixels reach beyond ``bbox``)."""
    facts: dict[str, Any] = dict.fromkeys(
        ("kind", "error", "min_points", "outside_px", "rle_height", "rle_width", "mask_area",
         "box_excess_px"),
    )  # fmt: skip
    try:
        facts["kind"] = kind = segmentation_kind(seg)
    except ValueError as exc:
        facts["error"] = str(exc)
        return facts
    if kind == POLYGON:
        facts["min_points"] = min(len(part) // 2 for part in seg)
        facts["outside_px"] = _outside_px(seg, height, width)
    else:
        facts["rle_height"], facts["rle_width"] = (int(v) for v in seg["size"])
        if (facts["rle_height"], facts["rle_width"]) != (height, width):
            return facts
    try:
        rle = to_rle(seg, height, width, kind)
    except (ValueError, TypeError) as exc:  # a corrupt compressed string
        facts["error"] = f"RLE does not decode: {exc}"
        return facts
    facts["mask_area"] = int(mask_utils.area(rle))
    if facts["mask_area"]:
        facts["box_excess_px"] = _box_excess(mask_utils.toBbox(rle), bbox)
    return facts


def _outside_px(seg: Iterable[list[float]], height: int, width: int) -> float:
    xs = np.concatenate([np.asarray(p[0::2], float) for p in seg])
    ys = np.concatenate([np.asarray(p[1::2], float) for p in seg])
    if not xs.size:  # parts without points (reported by the points check)
        return 0.0
    over = [-xs.min(), -ys.min(), xs.max() - width, ys.max() - height]
    return float(max(0.0, *over))


def _box_excess(mask_box: Sequence[float], bbox: Sequence[float]) -> float:
    mx, my, mw, mh = (float(v) for v in mask_box)
    bx, by, bw, bh = (float(v) for v in bbox)
    over = [bx - mx, by - my, (mx + mw) - (bx + bw), (my + mh) - (by + bh)]
    return float(max(0.0, *over))


def rle_iou(dt: Sequence[Mapping[str, Any]], gt: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """IoU matrix ``(len(dt), len(gt))`` of compressed RLEs (pycocotools' ``iou``)."""
    if not dt or not gt:
        return np.zeros((len(dt), len(gt)))
    as_bytes = [_bytes_rle(r) for r in dt], [_bytes_rle(r) for r in gt]
    return np.asarray(mask_utils.iou(as_bytes[0], as_bytes[1], [0] * len(gt)), dtype=np.float64)


def _bytes_rle(rle: Mapping[str, Any]) -> dict[str, Any]:
    """A compressed RLE as pycocotools' C functions take it (``counts`` as bytes)."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
