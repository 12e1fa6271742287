"""Crops for pretraining: square windows cut from a COCO split around each object (its box plus
``context`` times its side on every side, at least ``min_crop_side`` px, moved inside the image
where it fits, zero-padded where it does not), labelled by category, plus ``background`` windows
(sides drawn from the same image's object windows, placed by a seeded RNG) that intersect no
box at all. Every window is resized to ``crop_size`` px.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..data.coco import CocoDataset
from ..data.dataset import to_channels
from ..errors import ConfigError

logger = logging.getLogger(__name__)

BACKGROUND = "background"


@dataclass
class CropSet:
    """Crops cut from a COCO split. ``windows`` are ``x0, y0, x1, y1`` in source-image pixels
    (they may extend past the image where it was padded); ``kinds`` is ``object`` or
    ``background``; ``ann_ids`` the annotation of each object crop (``None`` for background)."""

    images: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    windows: np.ndarray
    image_ids: list[Any]
    kinds: list[str]
    ann_ids: list[Any]

    def __len__(self) -> int:
        return len(self.images)

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.classes)}


def crop_classes(coco: CocoDataset, background: bool) -> tuple[list[str], dict[int, int]]:
    """Class names (``background`` first when used) and category id -> class index."""
    names = coco.category_names()
    offset = 1 if background else 0
    classes = ([BACKGROUND] if background else []) + [names[cid] for cid in coco.category_ids]
    if len(set(classes)) != len(classes):  # duplicate names: make them unique with the id
        classes = ([BACKGROUND] if background else []) + [
            f"{names[cid]}_{cid}" for cid in coco.category_ids
        ]
    return classes, {cid: i + offset for i, cid in enumerate(coco.category_ids)}


def object_window(
    bbox: Sequence[float], width: int, height: int, context: float, min_side: int
) -> tuple[int, int, int]:
    """Square window ``(x0, y0, side)`` around a COCO box ``[x, y, w, h]``: side = the box's
    longer side x (1 + 2 x context), at least ``min_side`` and 2 px more than the box (so
    rounding never cuts it), centred on the box, then moved inside the image along each axis
    where it fits. It always contains the box."""
    x, y, w, h = (float(v) for v in bbox)
    side = max(
        int(min_side), math.ceil(max(w, h) * (1.0 + 2.0 * context)), math.ceil(max(w, h)) + 2
    )
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = math.floor(cx - side / 2.0), math.floor(cy - side / 2.0)
    x0 = _inside(x0, side, width, x, x + w)
    y0 = _inside(y0, side, height, y, y + h)
    return x0, y0, side


def _inside(start: int, side: int, limit: int, lo: float, hi: float) -> int:
    if side <= limit:
        return min(max(start, 0), limit - side)
    # window larger than the image: keep it centred on the box (padding on both sides)
    return min(max(start, math.ceil(hi) - side), math.floor(lo))


def crop_square(image: np.ndarray, x0: int, y0: int, side: int, out_size: int) -> np.ndarray:
    """``image[y0:y0+side, x0:x0+side]`` (zero-padded outside the image) resized to ``out_size``."""
    h, w = image.shape[:2]
    shape = (side, side) + image.shape[2:]
    window = np.zeros(shape, dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        window[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if side == out_size:
        return window
    interp = cv2.INTER_AREA if side > out_size else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(window, (out_size, out_size), interpolation=interp))


def _intersects_any(x0: float, y0: float, side: float, boxes: np.ndarray) -> bool:
    """Whether the window shares any area with a box (``x1, y1, x2, y2`` rows); touching is not."""
    if not len(boxes):
        return False
    return bool(
        np.any(
            (x0 < boxes[:, 2])
            & (x0 + side > boxes[:, 0])
            & (y0 < boxes[:, 3])
            & (y0 + side > boxes[:, 1])
        )
    )


def background_windows(
    boxes_xyxy: np.ndarray,
    width: int,
    height: int,
    sides: Sequence[int],
    count: int,
    rng: np.random.Generator,
    attempts: int = 50,
    min_side: int = 8,
) -> list[tuple[int, int, int]]:
    """Up to ``count`` windows ``(x0, y0, side)`` inside the image that intersect no box.

    Each side is drawn from ``sides`` (the image's object windows); a crowded image where no
    placement is found in ``attempts`` tries is retried with half the side (not below
    ``min_side``), else that crop is given up."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out: list[tuple[int, int, int]] = []
    if not sides or count <= 0:
        return out
    for _ in range(count):
        side = int(sides[int(rng.integers(len(sides)))])
        side = min(side, width, height)
        placed = None
        while placed is None and side >= min(min_side, width, height):
            for _ in range(attempts):
                x0 = int(rng.integers(0, width - side + 1))
                y0 = int(rng.integers(0, height - side + 1))
                if not _intersects_any(x0, y0, side, boxes):
                    placed = (x0, y0, side)
                    break
            if placed is None:
                if side // 2 < min(min_side, width, height):
                    break
                side //= 2
        if placed is not None:
            out.append(placed)
    return out


def extract_crops(
    coco: CocoDataset,
    image_ids: Sequence[Any] | None = None,
    *,
    crop_size: int = 64,
    context: float = 0.5,
    min_crop_side: int = 8,
    crops_per_image: int | None = None,
    background_ratio: float = 0.5,
    background_attempts: int = 50,
    in_channels: int = 1,
    seed: int = 0,
    intensity: Any = None,
) -> CropSet:
    """Object and background crops of ``image_ids`` (default: every image), see the module
    docstring. Crowd annotations give no object crop but are avoided by background crops.
    Deterministic for a given ``seed``. Pixels are scaled by ``intensity``
    (:mod:`..data.intensity`), as the detector will see them."""
    rng = np.random.default_rng(seed)
    background = background_ratio > 0
    classes, class_of_category = crop_classes(coco, background)
    if len(classes) < 2:
        raise ConfigError(
            f"{coco.root}: a classifier needs at least 2 classes, the dataset has "
            f"{coco.num_classes} category: "
            "set pretrain.background_ratio > 0 to add a background class"
        )
    ids = [img["id"] for img in coco.images] if image_ids is None else list(image_ids)
    anns_per_image = {i: coco.annotations_by_image.get(i, []) for i in ids}
    mean_objects = float(np.mean([len(a) for a in anns_per_image.values()])) if ids else 0.0
    crops, all_sides = _Crops(crop_size), []
    for image_id in ids:
        image = to_channels(coco.read_image(image_id, intensity), in_channels)
        anns = anns_per_image[image_id]
        objects = _objects(anns, crops_per_image, rng)
        sides = crops.add_objects(
            image, image_id, objects, class_of_category, context, min_crop_side
        )
        all_sides += sides
        if background:
            wanted = background_ratio * (len(objects) if objects else mean_objects)
            count = int(math.floor(wanted) + (rng.random() < wanted - math.floor(wanted)))
            pool = sides or all_sides or [max(min_crop_side, crop_size)]
            crops.add_background(image, image_id, anns, count, pool, rng, background_attempts,
                                 min_crop_side)  # fmt: skip
    return crops.to_set(classes)


def _objects(anns: list[dict[str, Any]], limit: int | None, rng: np.random.Generator) -> list[dict]:
    """The image's non-crowd boxes with an area; at most ``limit`` of them (seeded choice)."""
    objects = [a for a in anns if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    if limit is not None and len(objects) > limit:
        keep = sorted(rng.choice(len(objects), size=limit, replace=False).tolist())
        objects = [objects[i] for i in keep]
    return objects


class _Crops:
    """The lists a :class:`CropSet` is made of, filled one crop at a time."""

    def __init__(self, crop_size: int):
        self.crop_size = crop_size
        self.images, self.labels, self.windows = [], [], []
        self.image_ids, self.kinds, self.ann_ids = [], [], []

    def add(
        self,
        image: np.ndarray,
        window: tuple[int, int, int],
        label: int,
        image_id: Any,
        kind: str,
        ann_id: Any,
    ) -> int:
        """Cut ``window`` (``x0, y0, side``) out of ``image``; returns its side."""
        x0, y0, side = window
        self.images.append(crop_square(image, x0, y0, side, self.crop_size))
        self.labels.append(label)
        self.windows.append((x0, y0, x0 + side, y0 + side))
        self.image_ids.append(image_id)
        self.kinds.append(kind)
        self.ann_ids.append(ann_id)
        return side

    def add_objects(
        self,
        image: np.ndarray,
        image_id: Any,
        objects: list[dict[str, Any]],
        class_of_category: dict[int, int],
        context: float,
        min_side: int,
    ) -> list[int]:
        """One crop per object (its window, see :func:`object_window`); returns their sides."""
        height, width = image.shape[:2]
        return [
            self.add(image, object_window(a["bbox"], width, height, context, min_side),
                     class_of_category[a["category_id"]], image_id, "object", a.get("id"))
            for a in objects
        ]  # fmt: skip

    def add_background(
        self,
        image: np.ndarray,
        image_id: Any,
        anns: list[dict[str, Any]],
        count: int,
        sides: list[int],
        rng: np.random.Generator,
        attempts: int,
        min_side: int,
    ) -> None:
        """Up to ``count`` crops that overlap no box of ``anns`` (crowd regions included)."""
        height, width = image.shape[:2]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        placed = background_windows(boxes, int(width), int(height), sides, count, rng,
                                    attempts=attempts, min_side=min_side)  # fmt: skip
        if len(placed) < count:
            logger.debug("image %s: %d of %d background crops placed (crowded image)",
                         image_id, len(placed), count)  # fmt: skip
        for window in placed:
            self.add(image, window, 0, image_id, "background", None)

    def to_set(self, classes: list[str]) -> CropSet:
        return CropSet(
            images=self.images,
            labels=np.asarray(self.labels, dtype=np.int64),
            classes=classes,
            windows=np.asarray(self.windows, dtype=np.int64).reshape(-1, 4),
            image_ids=self.image_ids,
            kinds=self.kinds,
            ann_ids=self.ann_ids,
        )
