""":func:`validate_dataset`: the options checked, the tables built, every check run, the
outcome assembled. A dataset without images, categories or any object (an annotation that is
not a crowd region) is refused here (:class:`DataValidationError`): no policy can make it
usable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ...errors import ConfigError
from ..coco import ANNOTATIONS_FILE, DEFAULT_MAX_IMAGE_PIXELS, CocoDataset
from ..intensity import Intensity, check_settings
from .expectations import annotation_checks, failing_rows, image_checks, run_expectations
from .results import DataValidationError, ValidationOutcome, check_result
from .tables import annotations_table, image_warnings, images_table, is_crowd


def check_not_empty(coco: CocoDataset) -> None:
    """Refuse a dataset no policy can make usable: no images, no categories or no annotation at
    all (single images without boxes are fine: negative examples)."""
    where = f"{coco.root / ANNOTATIONS_FILE}"
    if not coco.images:
        raise DataValidationError(
            f"{where}: the dataset is empty: 'images' is an empty list (nothing to train or "
            "evaluate on)"
        )
    if not coco.categories:
        raise DataValidationError(
            f"{where}: 'categories' is an empty list: a detector needs at least one object class"
        )
    if not coco.annotations:
        raise DataValidationError(
            f"{where}: 'annotations' is an empty list: none of the {len(coco.images)} images has "
            "a box (images without boxes are allowed as negative examples, but a detector needs "
            "some objects)"
        )
    if all(is_crowd(a) for a in coco.annotations):
        raise DataValidationError(
            f"{where}: all {len(coco.annotations)} annotations are crowd regions (iscrowd 1), "
            "which training and evaluation ignore: a detector needs some objects with iscrowd 0"
        )


def _check_options(bbox_tolerance: float, max_image_pixels: Any) -> tuple[float, int | None]:
    """``bbox_tolerance`` as a float and ``max_image_pixels`` as an int (or None), or a
    :class:`ConfigError` naming the setting."""
    tol = float(bbox_tolerance)
    if not math.isfinite(tol) or tol < 0:
        raise ConfigError(
            "validation.bbox_tolerance must be a non-negative number of pixels, "
            f"got {bbox_tolerance!r}"
        )
    if max_image_pixels is None:
        return tol, None
    try:
        ok = float(max_image_pixels) >= 1 and not isinstance(max_image_pixels, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            "validation.max_image_pixels must be a positive number of pixels (or null for no "
            f"limit), got {max_image_pixels!r}"
        )
    return tol, int(max_image_pixels)


def validate_dataset(
    coco: CocoDataset,
    allowed_channels: Sequence[int] = (1, 3),
    bbox_tolerance: float = 0.5,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    intensity: Any = None,
    min_levels: int = 32,
) -> ValidationOutcome:
    """Run every check on ``coco``; bad rows are not raised (see :func:`apply_policy`), but an
    empty dataset is (:func:`check_not_empty`). ``max_image_pixels`` (``None``: no limit): images
    whose header declares more pixels are reported and never decoded. ``intensity`` and
    ``min_levels``: images scaled to fewer grey levels than that are warned about."""
    if isinstance(intensity, dict) or intensity is None:
        settings = check_settings(intensity)
        intensity = Intensity.from_dict(
            {k: v for k, v in settings.items() if k in ("mode", "percentiles")}
        )
    allowed = [int(c) for c in allowed_channels]
    tol, max_image_pixels = _check_options(bbox_tolerance, max_image_pixels)
    check_not_empty(coco)
    tables = {
        "annotations": annotations_table(coco),
        "images": images_table(coco, max_image_pixels, intensity),
    }
    checks = annotation_checks(coco, tol) + image_checks(allowed, max_image_pixels)
    gx_results = run_expectations(tables, checks)
    results = [
        check_result(c, tables[c.table], *failing_rows(c, tables[c.table], gx_results[c.table]))
        for c in checks
    ]
    return ValidationOutcome(
        success=all(c.success for c in results),
        checks=results,
        root=str(coco.root),
        gx_results=gx_results,
        annotations_table=tables["annotations"],
        images_table=tables["images"],
        settings={
            "allowed_channels": allowed,
            "bbox_tolerance": tol,
            "max_image_pixels": max_image_pixels,
            "intensity_mode": intensity.mode,
            "min_levels": int(min_levels),
        },
        warnings=image_warnings(tables["images"], int(min_levels), intensity.mode),
    )
