"""Data validation of a COCO directory with great-expectations (1.x API).

Two pandas tables are built from a :class:`CocoDataset`:

- annotations: one row per annotation (ids, box, the image's declared size, ``x_max``/``y_max``);
- images: one row per image (declared size, whether ``file_name`` stays inside the dataset
  directory, exists, its header size against ``max_image_pixels``, decodes, and the decoded size
  and channel count). The header is read first: an image over the pixel limit is refused
  without being decoded, so a huge file cannot exhaust the memory.

Each named check is one or more GX expectations tagged with ``meta={"check": name}``; a row
fails a check when it fails any of its expectations. :func:`apply_policy` then stops the run
(``fail``) or removes the offending annotations and images and reports them (``drop``).

A dataset without images, categories or any object (an annotation that is not a crowd
region) is refused by :func:`validate_dataset` itself (:class:`DataValidationError`): no
policy can make it usable.

Warnings (``ValidationOutcome.warnings``, logged and saved, never fatal): images that would
keep fewer than ``min_levels`` grey levels under the intensity mode (e.g. a 12-bit image under
``fixed``), and images whose EXIF orientation rotates them (applied, as annotation tools do).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, DatasetError
from .coco import (
    ANNOTATIONS_FILE,
    DEFAULT_MAX_IMAGE_PIXELS,
    CocoDataset,
    image_header,
    read_header,
    read_raw,
    safe_join,
)

POLICIES = ("fail", "drop")
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
MAX_DETAILS = 3  # error messages quoted per failed check in the summary

ANNOTATION_CHECKS = (BOX_INSIDE, BOX_POSITIVE, BOX_FINITE, KNOWN_CATEGORY, UNIQUE_ANNOTATION_ID,
                     ANNOTATION_IMAGE_EXISTS, ISCROWD_VALID)
IMAGE_CHECKS = (UNIQUE_IMAGE_ID, PATH_INSIDE, FILE_EXISTS, IMAGE_NOT_TOO_LARGE, FILE_READABLE, DECLARED_SIZE,
                ALLOWED_CHANNELS)


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
    rows: list[int] = field(default_factory=list, repr=False)  # all failing row positions in `table`
    more_image_ids: bool = False  # more offending image ids than listed
    more_annotation_ids: bool = False
    details: list[str] = field(default_factory=list)  # first error messages (file checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "table": self.table,
            "success": self.success,
            "failing_count": self.failing_count,
            "image_ids": _plain(self.image_ids),
            "annotation_ids": _plain(self.annotation_ids),
            "description": self.description,
            "details": list(self.details),
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
        return _plain({
            "success": self.success,
            "root": self.root,
            "settings": self.settings,
            "num_images": 0 if self.images_table is None else len(self.images_table),
            "num_annotations": 0 if self.annotations_table is None else len(self.annotations_table),
            "checks": [c.to_dict() for c in self.checks],
            "failed_checks": [c.name for c in self.failed],
            "warnings": list(self.warnings),
            "great_expectations": gx_dicts,
        })

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


def _plain(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples/sets to lists."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


# ------------------------------------------------------------------------------ tables
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


def annotations_table(coco: CocoDataset) -> pd.DataFrame:
    """One row per annotation, in file order, with its image's declared width/height joined."""
    first_image: dict[Any, dict[str, Any]] = {}
    for img in coco.images:
        first_image.setdefault(img["id"], img)
    rows = []
    for ann in coco.annotations:
        x, y, w, h = (_num(v) for v in ann["bbox"])
        img = first_image.get(ann["image_id"])
        iw = _num(img["width"]) if img is not None else float("nan")
        ih = _num(img["height"]) if img is not None else float("nan")
        rows.append({
            "annotation_id": ann["id"],
            "image_id": ann["image_id"],
            "category_id": ann["category_id"],
            "x": x, "y": y, "w": w, "h": h,
            "image_width": iw, "image_height": ih,
            "x_max": x + w, "y_max": y + h,
            "image_known": img is not None,
            "bbox_finite": bool(np.isfinite([x, y, w, h]).all()),
            "iscrowd": repr(ann.get("iscrowd", 0)) + f" ({type(ann.get('iscrowd', 0)).__name__})",
            "iscrowd_ok": _valid_iscrowd(ann.get("iscrowd", 0)),
        })
    columns = ["annotation_id", "image_id", "category_id", "x", "y", "w", "h", "image_width",
               "image_height", "x_max", "y_max", "image_known", "bbox_finite", "iscrowd", "iscrowd_ok"]
    df = pd.DataFrame(rows, columns=columns)
    df["right_overflow"] = df["x_max"] - df["image_width"]
    df["bottom_overflow"] = df["y_max"] - df["image_height"]
    return df.reset_index(drop=True)


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
    rows = []
    for img in coco.images:
        row: dict[str, Any] = {
            "image_id": img["id"],
            "file_name": str(img["file_name"]),
            "width": _num(img["width"]),
            "height": _num(img["height"]),
            "path_ok": True,
            "exists": None,
            "readable": None,
            "actual_width": float("nan"),
            "actual_height": float("nan"),
            "channels": float("nan"),
            "pixels": float("nan"),
            "error": None,
            "levels_raw": float("nan"),
            "levels": float("nan"),
            "bit_depth": None,
            "exif_rotated": False,
        }
        try:
            path = safe_join(coco.root, str(img["file_name"]))
        except DatasetError as exc:
            row["path_ok"] = False
            row["error"] = str(exc)
            rows.append(row)
            continue
        row["exists"] = path.is_file()
        if not row["exists"]:
            row["error"] = f"{path}: image file not found"
            rows.append(row)
            continue
        try:
            hw, hh, _ = read_header(path)
        except DatasetError as exc:
            row.update(readable=False, error=str(exc))
            rows.append(row)
            continue
        row["pixels"] = float(hw) * float(hh)
        if max_image_pixels is not None and hw * hh > max_image_pixels:
            try:
                image_header(path, max_pixels=max_image_pixels, decode=False)
            except DatasetError as exc:  # the "too large" message, without decoding
                row["error"] = str(exc)
            rows.append(row)
            continue
        try:
            raw = read_raw(path)
        except DatasetError as exc:
            row.update(readable=False, error=str(exc))
            rows.append(row)
            continue
        row.update(readable=True, actual_width=float(raw.shape[1]), actual_height=float(raw.shape[0]),
                   channels=float(1 if raw.ndim == 2 else raw.shape[2]),
                   exif_rotated=_exif_rotated(path))
        try:
            row.update(_levels(raw, intensity))
        except DatasetError as exc:
            row.update(readable=False, error=str(exc))
        del raw
        rows.append(row)
    columns = ["image_id", "file_name", "width", "height", "path_ok", "exists", "readable",
               "actual_width", "actual_height", "channels", "pixels", "error", "levels_raw", "levels",
               "bit_depth", "exif_rotated"]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("exists", "readable"):
        df[col] = df[col].astype(object)
    return df.reset_index(drop=True)


LEVEL_SAMPLE = 1 << 20  # pixels looked at to count grey levels (a strided subset of large images)


def _levels(raw: np.ndarray, intensity: Any) -> dict[str, Any]:
    from .intensity import bit_depth, grey_levels

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
    from PIL import Image

    from .coco import exif_orientation

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
            f"image id {_plain(r['image_id'])} ({r['file_name']}): {r['bit_depth']} pixels keep only "
            f"{r['levels']:g} of {r['levels_raw']:g} grey levels under intensity.mode '{mode}'"
            + ("; intensity.mode 'auto' scales them by the dataset's range instead" if mode == "fixed" else "")
        )
    rotated = images[images["exif_rotated"] == True]  # noqa: E712 - pandas column comparison
    if len(rotated):
        ids = ", ".join(str(_plain(i)) for i in rotated["image_id"].head(MAX_LISTED))
        out.append(
            f"{len(rotated)} image(s) carry an EXIF orientation that turns them by 90 degrees (image ids "
            f"{ids}{', ...' if len(rotated) > MAX_LISTED else ''}): the pipeline applies it, as annotation "
            "tools display the image; widths, heights and boxes must refer to the turned image"
        )
    return out


# ------------------------------------------------------------------------------ expectations
def _expectations(
    category_ids: Iterable[Any], allowed_channels: Sequence[int], tol: float, max_pixels: int | None = None
) -> dict[str, list[tuple[str, str, Any]]]:
    """table -> [(check name, description, expectation)]."""
    import great_expectations as gx

    E = gx.expectations

    def m(name: str) -> dict[str, str]:
        return {"check": name}

    cats = sorted(category_ids, key=str)
    ann = [
        (BOX_INSIDE, f"x >= -{tol}, y >= -{tol}, x + w <= width + {tol}, y + h <= height + {tol}",
         E.ExpectColumnValuesToBeBetween(column="x", min_value=-tol, meta=m(BOX_INSIDE))),
        (BOX_INSIDE, "", E.ExpectColumnValuesToBeBetween(column="y", min_value=-tol, meta=m(BOX_INSIDE))),
        (BOX_INSIDE, "", E.ExpectColumnValuesToBeBetween(column="right_overflow", max_value=tol, meta=m(BOX_INSIDE))),
        (BOX_INSIDE, "", E.ExpectColumnValuesToBeBetween(column="bottom_overflow", max_value=tol, meta=m(BOX_INSIDE))),
        (BOX_POSITIVE, "bbox width > 0 and height > 0",
         E.ExpectColumnValuesToBeBetween(column="w", min_value=0, strict_min=True, meta=m(BOX_POSITIVE))),
        (BOX_POSITIVE, "", E.ExpectColumnValuesToBeBetween(column="h", min_value=0, strict_min=True, meta=m(BOX_POSITIVE))),
        (BOX_FINITE, "no NaN or infinite bbox value",
         E.ExpectColumnValuesToBeInSet(column="bbox_finite", value_set=[True], meta=m(BOX_FINITE))),
        (KNOWN_CATEGORY, f"category_id in the categories list {cats}",
         E.ExpectColumnValuesToBeInSet(column="category_id", value_set=cats, meta=m(KNOWN_CATEGORY))),
        (UNIQUE_ANNOTATION_ID, "no two annotations share an id",
         E.ExpectColumnValuesToBeUnique(column="annotation_id", meta=m(UNIQUE_ANNOTATION_ID))),
        (ANNOTATION_IMAGE_EXISTS, "annotation image_id is the id of an image",
         E.ExpectColumnValuesToBeInSet(column="image_known", value_set=[True], meta=m(ANNOTATION_IMAGE_EXISTS))),
        (ISCROWD_VALID, "iscrowd is the number 0 or 1 (absent means 0)",
         E.ExpectColumnValuesToBeInSet(column="iscrowd_ok", value_set=[True], meta=m(ISCROWD_VALID))),
    ]
    img = [
        (UNIQUE_IMAGE_ID, "no two images share an id",
         E.ExpectColumnValuesToBeUnique(column="image_id", meta=m(UNIQUE_IMAGE_ID))),
        (PATH_INSIDE, "file_name is relative and does not leave the dataset directory",
         E.ExpectColumnValuesToBeInSet(column="path_ok", value_set=[True], meta=m(PATH_INSIDE))),
        (FILE_EXISTS, "file_name names an existing file",
         E.ExpectColumnValuesToBeInSet(column="exists", value_set=[True], meta=m(FILE_EXISTS))),
        (IMAGE_NOT_TOO_LARGE,
         f"width x height from the header <= {max_pixels} pixels; larger images are not decoded"
         if max_pixels is not None else "no pixel limit set",
         E.ExpectColumnValuesToBeBetween(column="pixels", max_value=max_pixels, meta=m(IMAGE_NOT_TOO_LARGE))
         if max_pixels is not None else
         E.ExpectColumnValuesToBeBetween(column="pixels", min_value=0, meta=m(IMAGE_NOT_TOO_LARGE))),
        (FILE_READABLE, "the file decodes as a PNG/JPEG/TIFF image",
         E.ExpectColumnValuesToBeInSet(column="readable", value_set=[True], meta=m(FILE_READABLE))),
        (DECLARED_SIZE, "decoded width/height equal the declared width/height",
         E.ExpectColumnPairValuesToBeEqual(column_A="width", column_B="actual_width",
                                           ignore_row_if="either_value_is_missing", meta=m(DECLARED_SIZE))),
        (DECLARED_SIZE, "", E.ExpectColumnPairValuesToBeEqual(column_A="height", column_B="actual_height",
                                                              ignore_row_if="either_value_is_missing",
                                                              meta=m(DECLARED_SIZE))),
        (ALLOWED_CHANNELS, f"channel count in {list(allowed_channels)}",
         E.ExpectColumnValuesToBeInSet(column="channels", value_set=[float(c) for c in allowed_channels],
                                       meta=m(ALLOWED_CHANNELS))),
    ]
    return {"annotations": ann, "images": img}


def _run_gx(tables: dict[str, pd.DataFrame], expectations: dict[str, list[tuple[str, str, Any]]]) -> dict[str, Any]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    source = context.data_sources.add_pandas("coco")
    results = {}
    for table, df in tables.items():
        batch_def = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        batch = batch_def.get_batch(batch_parameters={"dataframe": df})
        suite = gx.ExpectationSuite(name=f"coco_{table}")
        for _, _, expectation in expectations[table]:
            suite.add_expectation(expectation)
        results[table] = batch.validate(suite, result_format={"result_format": "COMPLETE",
                                                              "partial_unexpected_count": 20})
    return results


def _failing_rows(result: Any, check: str) -> tuple[set[int], list[str]]:
    rows: set[int] = set()
    errors = []
    for r in result.results:
        if (r.expectation_config.meta or {}).get("check") != check:
            continue
        info = r.exception_info or {}
        if info.get("raised_exception"):
            errors.append(str(info.get("exception_message")))
            continue
        if not r.success:
            rows.update(int(i) for i in (r.result or {}).get("unexpected_index_list") or [])
    return rows, errors


def check_not_empty(coco: CocoDataset) -> None:
    """Refuse a dataset no policy can make usable: no images, no categories or no annotation at
    all (single images without boxes are fine: negative examples)."""
    where = f"{coco.root / ANNOTATIONS_FILE}"
    if not coco.images:
        raise DataValidationError(f"{where}: the dataset is empty: 'images' is an empty list (nothing to train or evaluate on)")
    if not coco.categories:
        raise DataValidationError(f"{where}: 'categories' is an empty list: a detector needs at least one object class")
    if not coco.annotations:
        raise DataValidationError(
            f"{where}: 'annotations' is an empty list: none of the {len(coco.images)} images has a box "
            "(images without boxes are allowed as negative examples, but a detector needs some objects)"
        )
    if all(is_crowd(a) for a in coco.annotations):
        raise DataValidationError(
            f"{where}: all {len(coco.annotations)} annotations are crowd regions (iscrowd 1), which "
            "training and evaluation ignore: a detector needs some objects with iscrowd 0"
        )


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
    from .intensity import Intensity, check_settings

    if isinstance(intensity, dict) or intensity is None:
        settings = check_settings(intensity)
        intensity = Intensity.from_dict({k: v for k, v in settings.items() if k in ("mode", "percentiles")})
    allowed = [int(c) for c in allowed_channels]
    tol = float(bbox_tolerance)
    if not math.isfinite(tol) or tol < 0:
        raise ConfigError(f"validation.bbox_tolerance must be a non-negative number of pixels, got {bbox_tolerance!r}")
    if max_image_pixels is not None:
        try:
            ok = float(max_image_pixels) >= 1 and not isinstance(max_image_pixels, bool)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"validation.max_image_pixels must be a positive number of pixels (or null for no limit), "
                f"got {max_image_pixels!r}"
            )
        max_image_pixels = int(max_image_pixels)
    check_not_empty(coco)
    tables = {"annotations": annotations_table(coco),
              "images": images_table(coco, max_image_pixels, intensity)}
    expectations = _expectations(coco.category_ids, allowed, tol, max_image_pixels)
    gx_results = _run_gx(tables, expectations)
    checks: list[CheckResult] = []
    for table, items in expectations.items():
        df = tables[table]
        descriptions: dict[str, str] = {}
        for name, desc, _ in items:
            descriptions.setdefault(name, desc)
        for name, desc in descriptions.items():
            rows, errors = _failing_rows(gx_results[table], name)
            if errors:  # an expectation crashed: report it rather than pass silently
                desc = f"{desc}; great-expectations error: {'; '.join(errors)}"
            ordered = sorted(rows)
            sub = df.iloc[ordered]
            all_img = list(dict.fromkeys(sub["image_id"]))
            all_ann = list(dict.fromkeys(sub["annotation_id"])) if table == "annotations" else []
            details = _details(name, sub.head(MAX_DETAILS))
            checks.append(CheckResult(
                name=name, table=table, success=not rows and not errors, failing_count=len(rows),
                image_ids=_plain(all_img[:MAX_LISTED]), annotation_ids=_plain(all_ann[:MAX_LISTED]),
                description=desc, rows=ordered,
                more_image_ids=len(all_img) > MAX_LISTED, more_annotation_ids=len(all_ann) > MAX_LISTED,
                details=details,
            ))
    return ValidationOutcome(
        success=all(c.success for c in checks),
        checks=checks,
        root=str(coco.root),
        gx_results=gx_results,
        annotations_table=tables["annotations"],
        images_table=tables["images"],
        settings={"allowed_channels": allowed, "bbox_tolerance": tol, "max_image_pixels": max_image_pixels,
                  "intensity_mode": intensity.mode, "min_levels": int(min_levels)},
        warnings=image_warnings(tables["images"], int(min_levels), intensity.mode),
    )


def _details(name: str, rows: pd.DataFrame) -> list[str]:
    """What is wrong with the first failing rows of check ``name``, one message per row."""
    out: list[str] = []
    for _, r in rows.iterrows():
        if name in (PATH_INSIDE, FILE_EXISTS, IMAGE_NOT_TOO_LARGE, FILE_READABLE):
            if r["error"]:
                out.append(f"image id {_plain(r['image_id'])}: {r['error']}")
        elif name == DECLARED_SIZE:
            msg = (f"image id {_plain(r['image_id'])} ({r['file_name']}): declared {r['width']:g} x "
                   f"{r['height']:g}, the file is {r['actual_width']:g} x {r['actual_height']:g}")
            if r["exif_rotated"] and (r["width"], r["height"]) == (r["actual_height"], r["actual_width"]):
                msg += (" after its EXIF orientation is applied (the declared size is the stored, unturned "
                        "one). The pipeline applies EXIF orientation, as annotation tools display images: "
                        "if the boxes were drawn on the unturned pixels, remove the tag (e.g. "
                        "`exiftool -Orientation= FILE`) or re-export the annotations on the turned image")
            out.append(msg)
        elif name == ALLOWED_CHANNELS:
            out.append(f"image id {_plain(r['image_id'])} ({r['file_name']}): {r['channels']:g} channel(s)")
        elif name in (BOX_INSIDE, BOX_POSITIVE, BOX_FINITE):
            box = ", ".join(f"{r[k]:g}" for k in ("x", "y", "w", "h"))
            size = (f" in a {r['image_width']:g} x {r['image_height']:g} image"
                    if name == BOX_INSIDE and r["image_known"] else "")
            out.append(f"annotation id {_plain(r['annotation_id'])} (image id {_plain(r['image_id'])}): "
                       f"bbox [{box}]{size}")
        elif name == KNOWN_CATEGORY:
            out.append(f"annotation id {_plain(r['annotation_id'])}: category_id {_plain(r['category_id'])}")
        elif name == ANNOTATION_IMAGE_EXISTS:
            out.append(f"annotation id {_plain(r['annotation_id'])}: image_id {_plain(r['image_id'])}")
        elif name == ISCROWD_VALID:
            out.append(f"annotation id {_plain(r['annotation_id'])} (image id {_plain(r['image_id'])}): "
                       f"iscrowd {r['iscrowd']}; must be the number 0 or 1")
    return out


# ------------------------------------------------------------------------------ policy
def apply_policy(coco: CocoDataset, outcome: ValidationOutcome, policy: str) -> tuple[CocoDataset, dict[str, Any]]:
    """``fail``: raise :class:`DataValidationError` with the summary when a check failed.
    ``drop``: remove offending annotations and images (with their annotations); returns the
    cleaned dataset and ``{"dropped_images": [...], "dropped_annotations": [...]}``."""
    if policy not in POLICIES:
        raise ConfigError(f"validation.policy must be one of {list(POLICIES)}, got {policy!r}")
    if outcome.success:
        return coco, {}
    if policy == "fail":
        raise DataValidationError(outcome.summary())

    ann_df, img_df = outcome.annotations_table, outcome.images_table
    if (
        ann_df is None or img_df is None
        or list(img_df["image_id"]) != [img["id"] for img in coco.images]
        or list(ann_df["annotation_id"]) != [a["id"] for a in coco.annotations]
    ):
        raise ConfigError("apply_policy: the validation outcome was computed on a different dataset")

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

    dropped_image_ids = {img_df["image_id"].iloc[r] for r in image_reasons}
    for r, image_id in enumerate(ann_df["image_id"]):
        if image_id in dropped_image_ids:
            ann_reasons.setdefault(r, []).append(f"its image {image_id} was dropped")

    images = [img for r, img in enumerate(coco.images) if r not in image_reasons and img["id"] not in dropped_image_ids]
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
    cleaned = CocoDataset(
        root=coco.root,
        images=images,
        annotations=annotations,
        categories=coco.categories,
        splits={k: [i for i in v if i in keep_ids] for k, v in coco.splits.items()},
        info=coco.info,
    )
    report = {
        "dropped_images": [
            {"id": _plain(coco.images[r]["id"]), "file_name": coco.images[r]["file_name"], "reasons": reasons,
             **({"error": img_df["error"].iloc[r]} if img_df["error"].iloc[r] else {})}
            for r, reasons in sorted(image_reasons.items())
        ],
        "dropped_annotations": [
            {"id": _plain(coco.annotations[r]["id"]), "image_id": _plain(coco.annotations[r]["image_id"]),
             "reasons": reasons}
            for r, reasons in sorted(ann_reasons.items())
        ],
    }
    return cleaned, report
