"""What validation reports: the check names, :class:`CheckResult` and
:class:`ValidationOutcome` (the report's JSON and the summary a failed run raises), the
per-row messages that say what is wrong, and :func:`check_result`, which turns a check's
failing rows into its result. No great-expectations here: only names, numbers and text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ...errors import DatasetError

MAX_LISTED = 10

# check names (shown to the user, used in reports and drop reasons)
BOX_INSIDE = "box inside its image"
BOX_POSITIVE = "positive box width and height"
BOX_FINITE = "finite box values"
KNOWN_CATEGORY = "known category id"
UNIQUE_ANNOTATION_ID = "unique annotation ids"
ANNOTATION_IMAGE_EXISTS = "annotation image_id refers to an existing image"
UNIQUE_IMAGE_ID = "unique image ids"
PATH_INSIDE = "file_name stays inside the dataset directory"
FILE_EXISTS = "image file exists"
FILE_READABLE = "image file is readable"
DECLARED_SIZE = "image has the declared width and height"
ALLOWED_CHANNELS = "image has an allowed channel count"
IMAGE_NOT_TOO_LARGE = "image is within validation.max_image_pixels"
ISCROWD_VALID = "iscrowd is 0 or 1"
SEG_FORMAT = "segmentation is polygons or RLE"
SEG_POINTS = "polygon has at least 3 points"
SEG_INSIDE = "polygon inside its image"
SEG_RLE_SIZE = "RLE size is the image's"
SEG_NOT_EMPTY = "mask is not empty"
SEG_IN_BOX = "bbox encloses the mask"
MAX_DETAILS = 3  # error messages quoted per failed check in the summary

ANNOTATION_CHECKS = (
    BOX_INSIDE,
    BOX_POSITIVE,
    BOX_FINITE,
    KNOWN_CATEGORY,
    UNIQUE_ANNOTATION_ID,
    ANNOTATION_IMAGE_EXISTS,
    ISCROWD_VALID,
    SEG_FORMAT,
    SEG_POINTS,
    SEG_INSIDE,
    SEG_RLE_SIZE,
    SEG_NOT_EMPTY,
    SEG_IN_BOX,
)
IMAGE_CHECKS = (
    UNIQUE_IMAGE_ID,
    PATH_INSIDE,
    FILE_EXISTS,
    IMAGE_NOT_TOO_LARGE,
    FILE_READABLE,
    DECLARED_SIZE,
    ALLOWED_CHANNELS,
)
GX = "great_expectations"  # computed_by of a check made of GX expectations
PYTHON = "python"  # computed_by of a check computed by plain code


@dataclass(frozen=True)
class Check:
    """One named check of one table: GX ``expectations`` (tagged with the name), or, for a
    check that is plain code, ``failing``: the mask of failing rows."""

    name: str
    table: str  # "annotations" or "images"
    description: str
    expectations: tuple[Any, ...] = ()
    failing: Callable[[pd.DataFrame], pd.Series] | None = None

    @property
    def computed_by(self) -> str:
        return PYTHON if self.failing is not None else GX


class DataValidationError(DatasetError):
    """The dataset failed validation under policy ``fail``; the message is the summary."""


@dataclass
class CheckResult:
    name: str
    table: str  # "annotations" or "images"
    success: bool
    failing_count: int
    image_ids: list[Any]  # first offending image ids (up to 10)
    annotation_ids: list[Any]  # first offending annotation ids (up to 10)
    description: str
    rows: list[int] = field(default_factory=list, repr=False)  # failing row positions in `table`
    more_image_ids: bool = False  # more offending image ids than listed
    more_annotation_ids: bool = False
    details: list[str] = field(default_factory=list)  # first error messages (file checks)
    computed_by: str = GX  # "great_expectations" or "python" (see the module docstring)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "table": self.table,
            "success": self.success,
            "failing_count": self.failing_count,
            "image_ids": plain(self.image_ids),
            "annotation_ids": plain(self.annotation_ids),
            "description": self.description,
            "details": list(self.details),
            "computed_by": self.computed_by,
        }


@dataclass
class ValidationOutcome:
    success: bool
    checks: list[CheckResult]
    root: str = ""
    gx_results: dict[str, Any] = field(default_factory=dict, repr=False)  # table -> GX result
    annotations_table: pd.DataFrame | None = field(default=None, repr=False)
    images_table: pd.DataFrame | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    def to_dict(self) -> dict[str, Any]:
        gx_dicts = {}
        for table, result in self.gx_results.items():
            gx_dicts[table] = result.to_json_dict() if hasattr(result, "to_json_dict") else result
        return plain(
            {
                "success": self.success,
                "root": self.root,
                "settings": self.settings,
                "num_images": 0 if self.images_table is None else len(self.images_table),
                "num_annotations": 0
                if self.annotations_table is None
                else len(self.annotations_table),
                "checks": [c.to_dict() for c in self.checks],
                "failed_checks": [c.name for c in self.failed],
                "warnings": list(self.warnings),
                "great_expectations": gx_dicts,
            }
        )

    def summary(self) -> str:
        head = f"Dataset validation of {self.root or '<dataset>'}: "
        if self.success:
            return head + f"all {len(self.checks)} checks passed."
        lines = [head + f"{len(self.failed)} of {len(self.checks)} checks failed."]
        for c in self.failed:
            rows = "annotation" if c.table == "annotations" else "image"
            parts = [f"- {c.name}: {c.failing_count} failing {rows}(s)"]
            if c.annotation_ids:
                parts.append(f"annotation ids {_fmt_ids(c.annotation_ids, c.more_annotation_ids)}")
            if c.image_ids:
                parts.append(f"image ids {_fmt_ids(c.image_ids, c.more_image_ids)}")
            line = "; ".join(parts) + f" ({c.description})"
            if c.details:
                line += "; " + " | ".join(c.details)
            lines.append(line)
        return "\n".join(lines)


def _fmt_ids(ids: list[Any], more: bool) -> str:
    return "[" + ", ".join(str(i) for i in ids) + (", ..." if more else "") + "]"


def plain(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples/sets to lists."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


# ------------------------------------------------------------------------------ results
def check_result(check: Check, df: pd.DataFrame, rows: set[int], errors: list[str]) -> CheckResult:
    """The result of ``check`` on ``df``: its failing row positions ``rows`` and the errors of
    expectations that crashed, with the first offending ids and what is wrong with them."""
    desc = check.description
    if errors:  # an expectation crashed: report it rather than pass silently
        desc = f"{desc}; great-expectations error: {'; '.join(errors)}"
    ordered = sorted(rows)
    sub = df.iloc[ordered]
    all_img = list(dict.fromkeys(sub["image_id"]))
    all_ann = list(dict.fromkeys(sub["annotation_id"])) if check.table == "annotations" else []
    return CheckResult(
        name=check.name,
        table=check.table,
        success=not rows and not errors,
        failing_count=len(rows),
        image_ids=plain(all_img[:MAX_LISTED]),
        annotation_ids=plain(all_ann[:MAX_LISTED]),
        description=desc,
        rows=ordered,
        more_image_ids=len(all_img) > MAX_LISTED,
        more_annotation_ids=len(all_ann) > MAX_LISTED,
        details=_details(check.name, sub.head(MAX_DETAILS)),
        computed_by=check.computed_by,
    )


# ------------------------------------------------------------------------------ details
def _file_error(r: pd.Series) -> str | None:
    return f"image id {plain(r['image_id'])}: {r['error']}" if r["error"] else None


def _declared_size(r: pd.Series) -> str:
    msg = (
        f"image id {plain(r['image_id'])} ({r['file_name']}): declared {r['width']:g} x "
        f"{r['height']:g}, the file is {r['actual_width']:g} x {r['actual_height']:g}"
    )
    turned = (r["width"], r["height"]) == (r["actual_height"], r["actual_width"])
    if r["exif_rotated"] and turned:
        msg += (
            " after its EXIF orientation is applied (the declared size is the stored, unturned "
            "one). The pipeline applies EXIF orientation, as annotation tools display images: "
            "if the boxes were drawn on the unturned pixels, remove the tag (e.g. "
            "`exiftool -Orientation= FILE`) or re-export the annotations on the turned image"
        )
    return msg


def _channels(r: pd.Series) -> str:
    return f"image id {plain(r['image_id'])} ({r['file_name']}): {r['channels']:g} channel(s)"


def _box(r: pd.Series, with_size: bool) -> str:
    box = ", ".join(f"{r[k]:g}" for k in ("x", "y", "w", "h"))
    size = (
        f" in a {r['image_width']:g} x {r['image_height']:g} image"
        if with_size and r["image_known"]
        else ""
    )
    return (
        f"annotation id {plain(r['annotation_id'])} (image id {plain(r['image_id'])}): "
        f"bbox [{box}]{size}"
    )


def _ann_field(column: str) -> Callable[[pd.Series], str]:
    return lambda r: f"annotation id {plain(r['annotation_id'])}: {column} {plain(r[column])}"


def _iscrowd(r: pd.Series) -> str:
    return (
        f"annotation id {plain(r['annotation_id'])} (image id {plain(r['image_id'])}): "
        f"iscrowd {r['iscrowd']}; must be the number 0 or 1"
    )


def _seg(what: Callable[[pd.Series], str]) -> Callable[[pd.Series], str]:
    return lambda r: (
        f"annotation id {plain(r['annotation_id'])} (image id {plain(r['image_id'])}): "
        f"segmentation {what(r)}"
    )


# check name -> what is wrong with one failing row (None: nothing to add)
DETAIL_MESSAGES: dict[str, Callable[[pd.Series], str | None]] = {
    PATH_INSIDE: _file_error,
    FILE_EXISTS: _file_error,
    IMAGE_NOT_TOO_LARGE: _file_error,
    FILE_READABLE: _file_error,
    DECLARED_SIZE: _declared_size,
    ALLOWED_CHANNELS: _channels,
    BOX_INSIDE: lambda r: _box(r, with_size=True),
    BOX_POSITIVE: lambda r: _box(r, with_size=False),
    BOX_FINITE: lambda r: _box(r, with_size=False),
    KNOWN_CATEGORY: _ann_field("category_id"),
    ANNOTATION_IMAGE_EXISTS: _ann_field("image_id"),
    ISCROWD_VALID: _iscrowd,
    SEG_FORMAT: _seg(lambda r: str(r["seg_error"])),
    SEG_POINTS: _seg(lambda r: f"has a part of {r['seg_min_points']:g} point(s)"),
    SEG_INSIDE: _seg(
        lambda r: (
            f"reaches {r['seg_outside_px']:g} px outside the "
            f"{r['image_width']:g} x {r['image_height']:g} image"
        )
    ),
    SEG_RLE_SIZE: _seg(
        lambda r: (
            f"RLE size [{r['seg_rle_height']:g}, {r['seg_rle_width']:g}] (height, width), "
            f"the image is [{r['image_height']:g}, {r['image_width']:g}]"
        )
    ),
    SEG_NOT_EMPTY: _seg(lambda r: "covers no pixel"),
    SEG_IN_BOX: _seg(
        lambda r: (
            f"has pixels {r['mask_box_excess']:g} px outside its bbox "
            f"[{', '.join(f'{r[k]:g}' for k in ('x', 'y', 'w', 'h'))}]"
        )
    ),
}


def _details(name: str, rows: pd.DataFrame) -> list[str]:
    """What is wrong with the first failing rows of check ``name``, one message per row."""
    message = DETAIL_MESSAGES.get(name)
    if message is None:
        return []
    return [m for m in (message(r) for _, r in rows.iterrows()) if m is not None]
