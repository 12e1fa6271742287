"""What happens to a dataset that failed validation: :func:`apply_policy` stops the run
(``fail``, with the summary) or removes the offending annotations and images and reports each
with its reasons (``drop``); it refuses to leave no image or no object behind.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...errors import ConfigError
from ..coco import CocoDataset
from .results import UNIQUE_ANNOTATION_ID, DataValidationError, ValidationOutcome, plain
from .tables import is_crowd

POLICIES = ("fail", "drop")


def apply_policy(
    coco: CocoDataset, outcome: ValidationOutcome, policy: str
) -> tuple[CocoDataset, dict[str, Any]]:
    """``fail``: raise :class:`DataValidationError` with the summary when a check failed.
    ``drop``: remove offending annotations and images (with their annotations); returns the
    cleaned dataset and ``{"dropped_images": [...], "dropped_annotations": [...]}``."""
    if policy not in POLICIES:
        raise ConfigError(f"validation.policy must be one of {list(POLICIES)}, got {policy!r}")
    if outcome.success:
        return coco, {}
    if policy == "fail":
        raise DataValidationError(outcome.summary())
    ann_df, img_df = _tables_of(coco, outcome)
    image_reasons, ann_reasons = _drop_reasons(outcome, ann_df)
    dropped_image_ids = {img_df["image_id"].iloc[r] for r in image_reasons}
    for r, image_id in enumerate(ann_df["image_id"]):
        if image_id in dropped_image_ids:
            ann_reasons.setdefault(r, []).append(f"its image {image_id} was dropped")
    cleaned = _without(coco, image_reasons, dropped_image_ids, ann_reasons, outcome)
    return cleaned, _drop_report(coco, img_df, image_reasons, ann_reasons)


def _tables_of(coco: CocoDataset, outcome: ValidationOutcome) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The outcome's tables, after checking they were built from ``coco``."""
    ann_df, img_df = outcome.annotations_table, outcome.images_table
    if (
        ann_df is None
        or img_df is None
        or list(img_df["image_id"]) != [img["id"] for img in coco.images]
        or list(ann_df["annotation_id"]) != [a["id"] for a in coco.annotations]
    ):
        raise ConfigError(
            "apply_policy: the validation outcome was computed on a different dataset"
        )
    return ann_df, img_df


def _drop_reasons(
    outcome: ValidationOutcome, ann_df: pd.DataFrame
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Row -> names of the failed checks, for images and for annotations."""
    image_reasons: dict[int, list[str]] = {}
    ann_reasons: dict[int, list[str]] = {}
    for c in outcome.failed:
        target = ann_reasons if c.table == "annotations" else image_reasons
        rows = c.rows
        if c.name == UNIQUE_ANNOTATION_ID:  # keep the first annotation of each id
            dup = ann_df["annotation_id"].duplicated(keep="first")
            rows = [r for r in rows if dup.iloc[r]]
        for r in rows:
            target.setdefault(r, []).append(c.name)
    return image_reasons, ann_reasons


def _without(
    coco: CocoDataset,
    image_reasons: dict[int, list[str]],
    dropped_image_ids: set[Any],
    ann_reasons: dict[int, list[str]],
    outcome: ValidationOutcome,
) -> CocoDataset:
    """``coco`` without the dropped rows; refused when no image or no object would be left."""
    images = [
        img
        for r, img in enumerate(coco.images)
        if r not in image_reasons and img["id"] not in dropped_image_ids
    ]
    annotations = [a for r, a in enumerate(coco.annotations) if r not in ann_reasons]
    if not images:
        raise DataValidationError(
            "policy 'drop' would remove every image of the dataset:\n" + outcome.summary()
        )
    if not any(not is_crowd(a) for a in annotations):
        raise DataValidationError(
            "policy 'drop' would remove every object of the dataset (nothing left to learn from):\n"
            + outcome.summary()
        )
    keep_ids = {img["id"] for img in images}
    return CocoDataset(
        root=coco.root,
        images=images,
        annotations=annotations,
        categories=coco.categories,
        splits={k: [i for i in v if i in keep_ids] for k, v in coco.splits.items()},
        info=coco.info,
    )


def _drop_report(
    coco: CocoDataset,
    img_df: pd.DataFrame,
    image_reasons: dict[int, list[str]],
    ann_reasons: dict[int, list[str]],
) -> dict[str, Any]:
    def image_entry(r: int, reasons: list[str]) -> dict[str, Any]:
        img, error = coco.images[r], img_df["error"].iloc[r]
        entry = {"id": plain(img["id"]), "file_name": img["file_name"], "reasons": reasons}
        return {**entry, **({"error": error} if error else {})}

    def ann_entry(r: int, reasons: list[str]) -> dict[str, Any]:
        ann = coco.annotations[r]
        return {"id": plain(ann["id"]), "image_id": plain(ann["image_id"]), "reasons": reasons}

    return {
        "dropped_images": [image_entry(r, v) for r, v in sorted(image_reasons.items())],
        "dropped_annotations": [ann_entry(r, v) for r, v in sorted(ann_reasons.items())],
    }
