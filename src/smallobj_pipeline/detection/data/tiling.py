"""Slice-aided training for large scenes: the tile grid, the tiling decision, and the tiled
training split.

A scene of 2,000-10,000 px with 6-40 px objects cannot be trained on whole: resized to fit, its
objects shrink below the smallest anchor; at full size one step takes minutes or does not fit in
memory. The training split is therefore cut into overlapping tiles (SAHI's slice-aided
fine-tuning), *after* the split is decided on whole images, so no scene lands in two splits.
Validation and test images stay whole: they are predicted tile by tile with the same grid
(:mod:`..evaluation.sliced`) and scored against their own ground truth, so a tiled and an
untiled experiment are compared on the same images.

One grid for everything: :func:`tile_starts` / :func:`tile_windows` cut the training tiles here
and the inference tiles in :mod:`..evaluation.sliced` (evaluation and ``predict``).

Tiles are *windows* of their source image, not files: a tile's image record names the source
file plus ``tile: {source_id, x, y}``, and :meth:`.coco.CocoDataset.read_image` crops it after
decoding (one decoded source is cached per process). Nothing is written but the annotations, so
a changed source or changed parameters can never leave stale tiles behind.

Written by hand because the libraries that do it do not fit: SAHI's ``slice_coco`` writes every
tile as a file and is not a dependency; albumentations crops one image at a time, not a grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BeforeValidator, Field

from ..errors import ConfigError
from ..modeling.anchors import MAX_UPSCALE, SMALL_OBJECT_TARGET_SIDE, input_scale_factor
from ..modeling.config import (
    AutoPositiveInt,
    ConfigSection,
    Fraction,
    PositiveNumber,
    is_auto,
    parse_section,
)
from .coco import CocoDataset
from .masks import area as mask_area
from .masks import crop, has_mask
from .stats import box_sides

logger = logging.getLogger(__name__)

TILE_MULTIPLE = 32  # an auto tile size is a multiple of the coarsest FPN stride used (32)
MIN_TILE = 64  # px: smallest auto tile


# ---------------------------------------------------------------------- the grid
def overlap_px(overlap: float | int, tile: int) -> int:
    """An overlap given as a fraction of the tile (``< 1``) or in pixels (``>= 1``), in px."""
    if overlap < 1:
        return int(round(float(overlap) * tile))
    return int(overlap)


def tile_starts(length: int, tile: int, overlap: float | int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` px that overlap by
    ``overlap`` (a fraction of the tile when ``< 1``, else pixels); the last tile is flush with
    the border, so every tile lies inside the image."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap_px(overlap, tile))
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


def tile_windows(
    width: int, height: int, tile: int, overlap: float | int
) -> list[tuple[int, int, int, int]]:
    """``(x, y, w, h)`` of every tile of a ``width`` x ``height`` image, row by row; a side
    shorter than the tile gives one tile of that side."""
    return [
        (x, y, min(tile, width), min(tile, height))
        for y in tile_starts(height, tile, overlap)
        for x in tile_starts(width, tile, overlap)
    ]


# ---------------------------------------------------------------------- configuration
def check_overlap(value: Any) -> Any:
    """An overlap setting: a fraction of the tile in [0, 1) or whole pixels (pydantic
    validator of ``tiling.overlap`` and ``slicing.overlap``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("overlap must be a fraction in [0, 1) or a number of pixels")
    if value < 0 or (value >= 1 and not float(value).is_integer()):
        raise ValueError(f"overlap must be a fraction in [0, 1) or whole pixels, got {value}")
    return value


def _auto_or_overlap(value: Any) -> Any:
    return None if is_auto(value) else check_overlap(value)


class TilingConfig(ConfigSection):
    """The ``tiling`` section of ``parameters_data.yml``."""

    SECTION: ClassVar[str] = "tiling"

    # fmt: off
    mode: Literal["auto", "on", "off"] = Field("auto", description=(
        "auto: tile when the median training image is over auto_factor x tile_size"))
    tile_size: AutoPositiveInt = Field(None, description=(
        "tile side in px; auto: max_input_side / the small-object input scale"))
    overlap: Annotated[float | None, BeforeValidator(_auto_or_overlap)] = Field(None, description=(
        "fraction of the tile (< 1) or px; auto: the 95th-percentile object side"))
    auto_factor: PositiveNumber = Field(2.0, description=(
        "mode auto tiles when median image side > auto_factor x tile_size"))
    max_input_side: AutoPositiveInt = Field(640, description=(
        "network-input side of one tile (memory and time budget), for tile_size auto"))
    min_visibility: Fraction = Field(0.3, description=(
        "a box cut by a tile edge is kept (clipped) when this share of it is inside"))
    negative_fraction: Fraction = Field(0.1, description=(
        "share of tiles without objects kept as negatives (seeded)"))
    seed: Annotated[int, Field(ge=0)] = Field(0, description="seed of the negative tiles")
    # fmt: on


# ---------------------------------------------------------------------- the decision
def _train_ids(coco: CocoDataset) -> list[int]:
    return list(coco.splits.get("train") or [img["id"] for img in coco.images])


def _object_sides(coco: CocoDataset, ids: Sequence[int]) -> np.ndarray:
    return np.asarray([s for s in box_sides(coco, ids) if s > 0], dtype=float)


def _auto_tile(cfg: TilingConfig, median_side: float, p95: float, image_side: int) -> int:
    scale = input_scale_factor(median_side, SMALL_OBJECT_TARGET_SIDE, (1, 1), max_side=None)
    tile = int(cfg.max_input_side / scale) // TILE_MULTIPLE * TILE_MULTIPLE
    floor = max(MIN_TILE, int(math.ceil(4 * p95 / TILE_MULTIPLE)) * TILE_MULTIPLE)
    return max(floor, min(tile, max(image_side, floor)))


def plan_tiling(coco: CocoDataset, tiling: Mapping[str, Any] | TilingConfig | None) -> dict:
    """Whether and how the training split is tiled, with the reason (logged and saved)."""
    cfg = (
        tiling
        if isinstance(tiling, TilingConfig)
        else parse_section(TilingConfig, dict(tiling or {}))
    )
    ids = _train_ids(coco)
    sides = _object_sides(coco, ids)
    median = float(np.median(sides)) if sides.size else 0.0
    p95 = float(np.percentile(sides, 95)) if sides.size else 0.0
    by_id = coco.images_by_id
    long_sides = [max(int(by_id[i]["width"]), int(by_id[i]["height"])) for i in ids if i in by_id]
    image_side = int(np.median(long_sides)) if long_sides else 0
    scale = input_scale_factor(median, SMALL_OBJECT_TARGET_SIDE, (1, 1), max_side=None)
    if cfg.tile_size is not None:
        tile, tile_why = int(cfg.tile_size), f"tiling.tile_size {cfg.tile_size}"
    else:
        tile = _auto_tile(cfg, median, p95, image_side)
        tile_why = (
            f"auto: {cfg.max_input_side} px of network input / input scale x{scale:.2f} (median "
            f"object {median:.1f} px to {SMALL_OBJECT_TARGET_SIDE} px, at most x{MAX_UPSCALE:g}), "
            f"a multiple of {TILE_MULTIPLE}, at least 4 x the 95th-percentile object ({p95:.1f} px)"
        )
    overlap = int(math.ceil(p95)) if cfg.overlap is None else overlap_px(cfg.overlap, tile)
    if overlap >= tile:
        raise ConfigError(
            f"tiling.overlap ({overlap} px) must be smaller than the tile ({tile} px)"
        )
    if cfg.mode == "auto":
        tiled = image_side > cfg.auto_factor * tile
        reason = (
            f"median training image {image_side} px {'>' if tiled else '<='} "
            f"{cfg.auto_factor:g} x tile {tile} px"
        )
    else:
        tiled, reason = cfg.mode == "on", f"tiling.mode {cfg.mode}"
    return {
        "mode": cfg.mode, "tiled": bool(tiled), "reason": reason,
        "tile_size": tile, "tile_size_why": tile_why, "overlap_px": overlap,
        "min_visibility": cfg.min_visibility, "negative_fraction": cfg.negative_fraction,
        "seed": cfg.seed, "median_object_side": round(median, 2), "p95_object_side": round(p95, 2),
        "median_image_side": image_side, "input_scale": round(scale, 3),
    }  # fmt: skip


# ---------------------------------------------------------------------- the tiles
def clip_annotation(
    ann: Mapping[str, Any], window: Sequence[int], min_visibility: float
) -> dict[str, Any] | None:
    """``ann`` in the coordinates of ``window`` (x, y, w, h), its box clipped to it and its
    segmentation cut to it (:func:`.masks.crop`); None when
    it is dropped. An object is kept when at least ``min_visibility`` of its box is inside (and,
    with a mask, one of its pixels); a crowd region (an area to ignore, COCO's ``iscrowd``)
    whenever any of its box is inside."""
    x0, y0, w, h = window
    bx, by, bw, bh = (float(v) for v in ann["bbox"])
    ix1, iy1 = max(bx, x0), max(by, y0)
    iw, ih = min(bx + bw, x0 + w) - ix1, min(by + bh, y0 + h) - iy1
    if iw <= 0 or ih <= 0:
        return None
    share = (iw * ih) / (bw * bh) if bw * bh > 0 else 0.0
    if not ann.get("iscrowd", 0) and share < min_visibility - 1e-12:
        return None
    out = {k: v for k, v in ann.items() if k not in ("segmentation", "bbox", "area")}
    out["bbox"] = [ix1 - x0, iy1 - y0, iw, ih]
    out["area"] = float(ann.get("area", bw * bh)) * share
    if has_mask(ann):  # the mask cut to the tile too (Mask R-CNN trains on tiles)
        out["segmentation"] = crop(ann["segmentation"], window)
        if not ann.get("iscrowd", 0) and not mask_area(out["segmentation"], h, w):
            return None  # its box reaches the tile, none of its pixels do
    return out


def _tiles_of(img: Mapping[str, Any], anns, plan: Mapping[str, Any]):
    """``(window, clipped annotations)`` of every tile of one source image."""
    for window in tile_windows(
        int(img["width"]), int(img["height"]), plan["tile_size"], plan["overlap_px"]
    ):
        kept = [clip_annotation(a, window, plan["min_visibility"]) for a in anns]
        yield window, [a for a in kept if a is not None]


def tile_dataset(
    coco: CocoDataset, tiling: Mapping[str, Any] | TilingConfig | None
) -> tuple[CocoDataset, dict[str, Any]]:
    """``coco`` with its training split replaced by tiles of the training images (when the plan
    says so), and the plan with what was made. Validation and test images stay whole."""
    plan = plan_tiling(coco, tiling)
    logger.info(
        "Tiling: %s (%s); tile %d px (%s), overlap %d px",
        "on" if plan["tiled"] else "off", plan["reason"], plan["tile_size"],
        plan["tile_size_why"], plan["overlap_px"],
    )  # fmt: skip
    if not plan["tiled"]:
        return coco, plan
    train = _train_ids(coco)
    train_set = set(train)
    rng = np.random.default_rng(plan["seed"])
    next_image = max(int(img["id"]) for img in coco.images) + 1
    next_ann = max((int(a["id"]) for a in coco.annotations), default=0) + 1
    images = [img for img in coco.images if img["id"] not in train_set]
    annotations = [a for a in coco.annotations if a["image_id"] not in train_set]
    tile_ids: list[int] = []
    counts = {"tiles": 0, "negative_tiles_kept": 0, "negative_tiles_dropped": 0}
    for src_id in train:
        img = coco.images_by_id[src_id]
        for (x, y, w, h), anns in _tiles_of(img, coco.annotations_by_image[src_id], plan):
            if not any(not a.get("iscrowd", 0) for a in anns):
                if rng.random() >= plan["negative_fraction"]:
                    counts["negative_tiles_dropped"] += 1
                    continue
                counts["negative_tiles_kept"] += 1
            record = {"id": next_image, "file_name": img["file_name"], "width": w, "height": h}
            record["tile"] = {"source_id": src_id, "x": x, "y": y}
            images.append(record)
            for a in anns:
                annotations.append({**a, "id": next_ann, "image_id": next_image})
                next_ann += 1
            tile_ids.append(next_image)
            next_image += 1
    counts["tiles"] = len(tile_ids)
    counts["source_images"] = len(train)
    plan = {**plan, **counts}
    logger.info(
        "Tiling: %d training images -> %d tiles (%d empty tiles kept as negatives, %d dropped)",
        len(train), len(tile_ids), counts["negative_tiles_kept"], counts["negative_tiles_dropped"],
    )  # fmt: skip
    splits = {**coco.splits, "train": tile_ids}
    info = {**coco.info, "tiling": plan}
    tiled = CocoDataset(coco.root, images, annotations, coco.categories, splits, info)
    return tiled, plan
