"""Small-object defaults derived from dataset statistics: pure functions on numbers.

torchvision's Faster R-CNN defaults suit COCO: anchors 32-512 px, at most 100 detections per image,
images resized to a short side of 800. For images holding many small objects those defaults miss
objects (anchors far larger than the objects; more objects than detections kept). The functions
here derive, from the training set's statistics:

- anchor sizes covering the observed box sides (one size per FPN level);
- detections per image and RPN proposal counts above the most objects any image holds;
- an input scale that upsamples images whose median object is smaller than the smallest anchor.

:func:`resolve_small_object_defaults` applies them to a model config, filling only the settings
the user left unset (``None`` or ``"auto"``), and says what it filled and why.

Units: anchors live in the coordinates of the *resized* network input, so anchor sizes are derived
from the box sides multiplied by the input scale the model will apply (derived, user-set or
torchvision's 800/1333 resize).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field, Strict

from .. import constants as K
from ..errors import ConfigError
from .config import ConfigSection, is_auto, parse_section

logger = logging.getLogger(__name__)

MIN_ANCHOR = 4  # px: the stride of P2, the finest FPN level; smaller anchors are pointless
# Target for the smallest anchor when anchors are derived: objects at least this big on the
# network input are matched by several P2 anchors (stride 4) with IoU >= ~0.6.
SMALL_OBJECT_TARGET_SIDE = 16
MAX_UPSCALE = 4.0
MAX_INPUT_SIDE = 2048  # px: upscaling stops when the long side would exceed this
DETECTIONS_MARGIN = 1.5  # detections kept per object of the most crowded image
PROPOSALS_PER_OBJECT = 4.0  # RPN proposals kept per object of the most crowded image


class SmallObjectSwitches(ConfigSection):
    """The ``small_object_defaults`` section: which defaults are derived from the statistics
    (a switched-off default keeps torchvision's value)."""

    SECTION: ClassVar[str] = "small_object_defaults"

    # fmt: off
    anchors: Annotated[bool, Strict()] = Field(True, description=(
        "anchor sizes from the training boxes' sides, one per FPN level"))
    detections: Annotated[bool, Strict()] = Field(True, description=(
        "detections per image and RPN proposals from the most crowded training image"))
    input_scale: Annotated[bool, Strict()] = Field(True, description=(
        "input size that brings the median object to the smallest anchor"))
    # fmt: on


SWITCHES = tuple(SmallObjectSwitches.model_fields)


# ---------------------------------------------------------------------- anchors
def derive_anchor_sizes(
    box_sides: Sequence[float],
    num_levels: int = 5,
    percentile: float = 50.0,
    min_anchor: int = 2 * MIN_ANCHOR,
) -> list[int]:
    """One anchor size per FPN level, fitted to the training boxes but kept proportional to the
    FPN strides (4, 8, 16, 32, 64) as in torchvision's design: the P2 size is the ``percentile``
    (median by default) of the box sides, at least ``min_anchor`` px, and each level doubles it.

    Why not spread the sizes over the observed range (as YOLO's autoanchor does per head)? With
    one size per level, a range of 6-24 px would put ~20 px anchors on the stride-32/64 levels,
    whose anchor centres are 32-64 px apart: almost no object gets a well-aligned anchor there.
    Doubling per level keeps every level's anchors at the same size-to-stride ratio, and the
    octave between levels bounds the IoU loss of the nearest anchor size.

    Degenerate inputs: no (finite, positive) sides gives torchvision's default
    ``[32, 64, 128, 256, 512]`` (truncated/extended by doubling to ``num_levels``).
    """
    if num_levels < 1:
        raise ConfigError(f"num_levels must be >= 1, got {num_levels}")
    sides = (
        np.asarray([float(s) for s in box_sides], dtype=float) if len(box_sides) else np.zeros(0)
    )
    sides = sides[np.isfinite(sides) & (sides > 0)]
    if sides.size == 0:
        return [K.TORCHVISION_ANCHOR_SIZES[0] * 2**i for i in range(num_levels)]
    base = max(int(min_anchor), int(round(float(np.percentile(sides, percentile)))))
    return [base * 2**i for i in range(num_levels)]


# ---------------------------------------------------------------------- detections and proposals
def derive_detections_per_image(
    max_objects_per_image: float,
    margin: float = DETECTIONS_MARGIN,
    minimum: int = K.TORCHVISION_DETECTIONS_PER_IMG,
) -> int:
    """``max(minimum, ceil(max_objects_per_image * margin))``: room for every object of the most
    crowded image plus a margin for duplicates/false positives (COCO's AP needs them all)."""
    if max_objects_per_image is None or not math.isfinite(float(max_objects_per_image)):
        return int(minimum)
    return int(max(minimum, math.ceil(max(0.0, float(max_objects_per_image)) * margin)))


def derive_proposal_counts(
    max_objects_per_image: float,
    factor: float = PROPOSALS_PER_OBJECT,
    default_train: int = K.TORCHVISION_RPN_POST_NMS["train"],
    default_test: int = K.TORCHVISION_RPN_POST_NMS["test"],
) -> dict[str, int]:
    """RPN post-NMS top-N kept per image: ``max(torchvision default, factor x max objects)``, so
    crowded images still get several proposals per object."""
    need = 0
    if max_objects_per_image is not None:
        need = int(math.ceil(max(0.0, float(max_objects_per_image)) * factor))
    return {
        "rpn_post_nms_top_n_train": int(max(default_train, need)),
        "rpn_post_nms_top_n_test": int(max(default_test, need)),
    }


# ---------------------------------------------------------------------- input scale
def input_scale_factor(
    median_side: float,
    smallest_anchor: float,
    image_size: Sequence[float],
    max_scale: float = MAX_UPSCALE,
    max_side: float | None = MAX_INPUT_SIDE,
    allow_downscale: bool = False,
) -> float:
    """Factor bringing the median object up to ``smallest_anchor``: ``smallest_anchor /
    median_side``, capped at ``max_scale`` and so the long image side stays ``<= max_side``;
    never below 1 (native size) unless ``allow_downscale``."""
    w, h = float(image_size[0]), float(image_size[1])
    if not (median_side and median_side > 0 and w > 0 and h > 0):
        return 1.0
    scale = min(float(smallest_anchor) / float(median_side), float(max_scale))
    if max_side:
        scale = min(scale, float(max_side) / max(w, h))
    if not allow_downscale:
        scale = max(scale, 1.0)
    return scale


def derive_input_scale(
    median_side: float,
    smallest_anchor: float,
    image_size: Sequence[float],
    max_scale: float = MAX_UPSCALE,
    max_side: float | None = MAX_INPUT_SIDE,
    allow_downscale: bool = False,
) -> dict[str, int]:
    """``{"min_size", "max_size"}`` for torchvision's resize (short side to ``min_size`` unless
    the long side would pass ``max_size``) so that an image of ``image_size`` ([w, h], e.g. the
    median) is scaled by :func:`input_scale_factor`. A factor of 1 keeps the native size (the
    resize is then the identity for that image size), so large objects are left alone."""
    scale = input_scale_factor(
        median_side, smallest_anchor, image_size, max_scale, max_side, allow_downscale
    )
    w, h = float(image_size[0]), float(image_size[1])
    return {"min_size": int(round(min(w, h) * scale)), "max_size": int(round(max(w, h) * scale))}


def effective_scale(min_size: Any, max_size: Any, image_size: Sequence[float]) -> float:
    """The factor torchvision's GeneralizedRCNNTransform applies to an image of ``image_size``."""
    w, h = float(image_size[0]), float(image_size[1])
    short = min(min_size) if isinstance(min_size, list | tuple) else min_size
    return min(float(short) / min(w, h), float(max_size) / max(w, h))


# ---------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class BoxStats:
    """What the small-object defaults read from the dataset statistics."""

    sides: list[float]  # training box sides, px
    median_side: float | None
    image_size: Any  # median [w, h]
    has_image_size: bool
    max_objects: Any  # objects in the most crowded image

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> BoxStats:
        raw_sides = stats.get("train_box_sides")
        sides = [float(s) for s in ([] if raw_sides is None else list(raw_sides)) if s is not None]
        median_side = stats.get("median_box_side")
        if median_side is None and sides:
            median_side = float(np.median(sides))
        size = stats.get("image_size_median")
        has_size = (
            isinstance(size, list | tuple)
            and len(size) == 2
            and all(v and float(v) > 0 for v in size)
        )
        return cls(sides, median_side, size, has_size, stats.get("max_objects_per_image"))


def resolve_small_object_defaults(
    model_cfg: Mapping[str, Any], stats: Mapping[str, Any] | None, enabled: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill the model settings the user left unset (``None``/``"auto"``) from dataset statistics.

    ``stats`` keys used: ``train_box_sides`` (list of box sides, px), ``max_objects_per_image``,
    ``median_box_side``, ``image_size_median`` ([w, h]). ``enabled``: switches ``anchors``,
    ``detections``, ``input_scale`` (:class:`SmallObjectSwitches`; missing switches are on). A
    switched-off or underivable setting stays ``auto`` and the model factory uses
    torchvision's default.

    Returns ``(resolved model config, derived)`` where ``derived[key] = {"value": ..., "why": ...}``
    for each setting filled here.
    """
    cfg = dict(model_cfg or {})
    switches = parse_section(SmallObjectSwitches, enabled)
    boxes = BoxStats.from_stats(dict(stats or {}))
    derived: dict[str, Any] = {}
    derive_anchors = switches.anchors and is_auto(cfg.get("anchor_sizes"))
    if switches.input_scale:  # first: anchors are in the pixels of the resized input
        _fill_input_scale(cfg, derived, boxes, derive_anchors)
    if derive_anchors:
        _fill_anchor_sizes(cfg, derived, boxes)
    if switches.detections:
        _fill_detections(cfg, derived, boxes.max_objects)
    return cfg, derived


def _smallest_anchor(cfg: Mapping[str, Any], derive_anchors: bool) -> tuple[float, str]:
    """The smallest anchor the input scale aims at, and how it was chosen."""
    user_anchors = cfg.get("anchor_sizes")
    if not is_auto(user_anchors):
        first = user_anchors[0]
        smallest = float(min(first) if isinstance(first, list | tuple) else first)
        return smallest, f"the smallest anchor set in model.anchor_sizes ({smallest:g} px)"
    if derive_anchors:
        side = SMALL_OBJECT_TARGET_SIDE
        return float(side), f"{side} px, the side P2 anchors (stride 4) match well"
    smallest = float(K.TORCHVISION_ANCHOR_SIZES[0])
    return smallest, f"torchvision's smallest anchor ({smallest:g} px)"


def _fill_input_scale(
    cfg: dict[str, Any], derived: dict[str, Any], boxes: BoxStats, derive_anchors: bool
) -> None:
    unset = [k for k in ("min_size", "max_size") if is_auto(cfg.get(k))]
    if not unset:
        return
    if not (boxes.median_side and boxes.has_image_size):
        logger.warning(
            "small_object_defaults.input_scale: no median_box_side/image_size_median in the "
            "dataset statistics; min_size/max_size keep torchvision's defaults (%d/%d)",
            K.TORCHVISION_MIN_SIZE, K.TORCHVISION_MAX_SIZE,
        )  # fmt: skip
        return
    smallest, smallest_why = _smallest_anchor(cfg, derive_anchors)
    median, size = float(boxes.median_side), boxes.image_size
    sizes = derive_input_scale(median, smallest, size)
    factor = input_scale_factor(median, smallest, size)
    if factor > 1.0:
        effect = (
            f"upscaled x{factor:.2f} so the median object reaches {smallest_why} (capped at "
            f"x{MAX_UPSCALE:g} and a {MAX_INPUT_SIDE} px long side)"
        )
    else:
        effect = f"native size kept (the median object already covers {smallest_why})"
    why = (
        f"median object side {median:.1f} px, median image {int(size[0])}x{int(size[1])}: " + effect
    )
    for key in unset:
        cfg[key] = sizes[key]
        derived[key] = {"value": sizes[key], "why": why}


def _fill_anchor_sizes(cfg: dict[str, Any], derived: dict[str, Any], boxes: BoxStats) -> None:
    """Anchor sizes in network-input pixels: the box sides times the input scale."""
    if not boxes.sides:
        logger.warning(
            "small_object_defaults.anchors: no train_box_sides in the dataset statistics; "
            "anchor_sizes keep torchvision's defaults %s", list(K.TORCHVISION_ANCHOR_SIZES),
        )  # fmt: skip
        return
    min_size = K.TORCHVISION_MIN_SIZE if is_auto(cfg.get("min_size")) else cfg["min_size"]
    max_size = K.TORCHVISION_MAX_SIZE if is_auto(cfg.get("max_size")) else cfg["max_size"]
    scale = effective_scale(min_size, max_size, boxes.image_size) if boxes.has_image_size else 1.0
    sizes = derive_anchor_sizes([s * scale for s in boxes.sides])
    median = float(np.median(boxes.sides))
    cfg["anchor_sizes"] = sizes
    derived["anchor_sizes"] = {
        "value": sizes,
        "why": (
            f"P2 anchor = median of {len(boxes.sides)} training box sides ({median:.1f} px) x "
            f"input scale {scale:.2f}, at least {2 * MIN_ANCHOR} px, doubling per FPN level like "
            "the strides"
            + ("" if boxes.has_image_size else " (no image_size_median: scale assumed 1)")
        ),
    }


def _fill_detections(cfg: dict[str, Any], derived: dict[str, Any], max_objects: Any) -> None:
    """Detections per image and RPN proposals above the most objects an image holds."""
    if max_objects is None:
        logger.warning(
            "small_object_defaults.detections: no max_objects_per_image in the dataset "
            "statistics; detections/proposals keep torchvision's defaults"
        )
        return
    values = {"box_detections_per_img": derive_detections_per_image(max_objects)}
    values.update(derive_proposal_counts(max_objects))
    post_nms = K.TORCHVISION_RPN_POST_NMS
    whys = {
        "box_detections_per_img": (
            f"max({K.TORCHVISION_DETECTIONS_PER_IMG}, {DETECTIONS_MARGIN:g} x {max_objects} "
            "objects in the most crowded image)"
        ),
        "rpn_post_nms_top_n_train": (
            f"max(torchvision's {post_nms['train']}, {PROPOSALS_PER_OBJECT:g} x {max_objects} "
            "objects per image)"
        ),
        "rpn_post_nms_top_n_test": (
            f"max(torchvision's {post_nms['test']}, {PROPOSALS_PER_OBJECT:g} x {max_objects} "
            "objects per image)"
        ),
    }
    for key, value in values.items():
        if is_auto(cfg.get(key)):
            cfg[key] = value
            derived[key] = {"value": value, "why": whys[key]}
