"""Data validation of a COCO directory: great-expectations (1.x API) for the questions about
the values in a table column, plain Python for the questions about files.

Two pandas tables are built from a :class:`CocoDataset`:

- annotations: one row per annotation (ids, box, the raw ``iscrowd``, the image's declared size,
  ``x_max``/``y_max`` and how far the box overflows its image);
- images: one row per image (declared size, whether ``file_name`` stays inside the dataset
  directory, exists, its header size against ``max_image_pixels``, decodes, and the decoded size
  and channel count). The header is read first: an image over the pixel limit is refused
  without being decoded, so a huge file cannot exhaust the memory.

Each named check says what computes it (``computed_by`` in the report):

``great_expectations``: one or more GX expectations on the tables, tagged with
``meta={"check": name}``; a row fails a check when it fails any of its expectations.

- box inside its image: ``ExpectColumnValuesToBeBetween`` on ``x`` and ``y`` (>= -tolerance)
  and on the right / bottom overflow (``x + w - width``, ``y + h - height``, <= tolerance);
- positive box width and height: ``ExpectColumnValuesToBeBetween`` on ``w`` and ``h`` (> 0);
- finite box values: ``ExpectColumnValuesToNotBeNull`` (NaN) and ``ExpectColumnValuesToBeBetween``
  (the finite float range: infinity) on ``x``, ``y``, ``w``, ``h``;
- known category id: ``ExpectColumnValuesToBeInSet`` on ``category_id`` (the categories' ids);
- unique annotation ids / unique image ids: ``ExpectColumnValuesToBeUnique``;
- annotation image_id refers to an existing image: ``ExpectColumnValuesToBeInSet`` on the
  annotations' ``image_id`` (the images' ids); for integer ids, said compactly (GX's cost grows
  with the set): ``ExpectColumnValuesToBeBetween`` the smallest and the largest image id and
  ``ExpectColumnValuesToNotBeInSet`` the ids missing in between;
- iscrowd is 0 or 1: ``ExpectColumnValuesToNotBeNull``, ``ExpectColumnValuesToBeInTypeList``
  (``int``, ``bool``: the string ``"0"`` would be truthy) and ``ExpectColumnValuesToBeInSet``
  (0, 1) on the raw value (absent means 0);
- image is within validation.max_image_pixels: ``ExpectColumnValuesToBeBetween`` on the pixel
  count read from the header;
- image has the declared width and height: ``ExpectColumnPairValuesToBeEqual`` (declared
  against decoded width, and height);
- image has an allowed channel count: ``ExpectColumnValuesToBeInSet`` on the decoded channels.

``python``: file-system facts found while the images table is built (``safe_join``,
``Path.is_file``, the decoder); an expectation would only restate the boolean the code computed:
file_name stays inside the dataset directory, image file exists, image file is readable.

:func:`apply_policy` then stops the run (``fail``) or removes the offending annotations and
images and reports them (``drop``).

A dataset without images, categories or any object (an annotation that is not a crowd
region) is refused by :func:`validate_dataset` itself (:class:`DataValidationError`): no
policy can make it usable.

Warnings (``ValidationOutcome.warnings``, logged and saved, never fatal): images that would
keep fewer than ``min_levels`` grey levels under the intensity mode (e.g. a 12-bit image under
``fixed``), and images whose EXIF orientation rotates them (applied, as annotation tools do).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import ConfigError, DatasetError
from .coco import (
    ANNOTATIONS_FILE,
    DEFAULT_MAX_IMAGE_PIXELS,
    CocoDataset,
    exif_orientation,
    image_header,
    read_header,
    read_raw,
    safe_join,
)
from .intensity import Intensity, bit_depth, check_settings, grey_levels

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

ANNOTATION_CHECKS = (
    BOX_INSIDE,
    BOX_POSITIVE,
    BOX_FINITE,
    KNOWN_CATEGORY,
    UNIQUE_ANNOTATION_ID,
    ANNOTATION_IMAGE_EXISTS,
    ISCROWD_VALID,
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
LARGEST_FLOAT = float(np.finfo(np.float64).max)


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
            "image_ids": _plain(self.image_ids),
            "annotation_ids": _plain(self.annotation_ids),
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
        return _plain(
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


def _annotation_row(ann: dict[str, Any], img: dict[str, Any] | None) -> dict[str, Any]:
    x, y, w, h = (_num(v) for v in ann["bbox"])
    iscrowd = ann.get("iscrowd", 0)
    return {
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
    df = pd.DataFrame(rows, columns=ANNOTATION_COLUMNS)
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
            f"image id {_plain(r['image_id'])} ({r['file_name']}): {r['bit_depth']} pixels keep "
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
        ids = ", ".join(str(_plain(i)) for i in rotated["image_id"].head(MAX_LISTED))
        out.append(
            f"{len(rotated)} image(s) carry an EXIF orientation that turns them by 90 degrees "
            f"(image ids {ids}{', ...' if len(rotated) > MAX_LISTED else ''}): the pipeline "
            "applies it, as annotation tools display the image; widths, heights and boxes must "
            "refer to the turned image"
        )
    return out


# ------------------------------------------------------------------------------ checks
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


def _gx() -> Any:
    """great_expectations, imported on first use: the import takes about 4 s, and this module
    is imported by every Kedro command that loads the pipelines."""
    import great_expectations

    return great_expectations


def _is_false(column: str) -> Callable[[pd.DataFrame], pd.Series]:
    """Rows where ``column`` is False (null: the question did not arise, e.g. no file)."""
    return lambda df: df[column] == False  # noqa: E712 - pandas column comparison


# the checks that are plain code: file-system facts of the images table
FILE_CHECKS = {
    PATH_INSIDE: Check(
        PATH_INSIDE,
        "images",
        "file_name is relative and does not leave the dataset directory",
        failing=_is_false("path_ok"),
    ),
    FILE_EXISTS: Check(
        FILE_EXISTS, "images", "file_name names an existing file", failing=_is_false("exists")
    ),
    FILE_READABLE: Check(
        FILE_READABLE,
        "images",
        "the file decodes as a PNG/JPEG/TIFF image",
        failing=_is_false("readable"),
    ),
}


def _tagged(name: str, table: str, description: str, *expectations: Any) -> Check:
    """A check made of GX ``expectations``, each tagged ``meta={"check": name}``."""
    for e in expectations:
        e.meta = {"check": name}
    return Check(name, table, description, tuple(expectations))


def annotation_checks(coco: CocoDataset, tol: float) -> list[Check]:
    """The checks of :func:`annotations_table` (of ``coco``), in report order."""
    E = _gx().expectations
    cats = sorted(coco.category_ids, key=str)
    return [
        *_box_checks(E, tol),
        _tagged(
            KNOWN_CATEGORY,
            "annotations",
            f"category_id in the categories list {cats}",
            E.ExpectColumnValuesToBeInSet(column="category_id", value_set=cats),
        ),
        _tagged(
            UNIQUE_ANNOTATION_ID,
            "annotations",
            "no two annotations share an id",
            E.ExpectColumnValuesToBeUnique(column="annotation_id"),
        ),
        _tagged(
            ANNOTATION_IMAGE_EXISTS,
            "annotations",
            "annotation image_id is the id of an image",
            *_image_id_expectations(
                E, [img["id"] for img in coco.images], [a["image_id"] for a in coco.annotations]
            ),
        ),
        _tagged(
            ISCROWD_VALID,
            "annotations",
            "iscrowd is the number 0 or 1 (absent means 0)",
            E.ExpectColumnValuesToNotBeNull(column="iscrowd_value"),
            E.ExpectColumnValuesToBeInTypeList(column="iscrowd_value", type_list=["int", "bool"]),
            E.ExpectColumnValuesToBeInSet(column="iscrowd_value", value_set=[0, 1]),
        ),
    ]


MAX_ID_GAPS = 1000  # missing ids listed by the compact form of the image_id check


def _image_id_expectations(
    E: Any, image_ids: Iterable[Any], annotation_image_ids: Iterable[Any]
) -> list[Any]:
    """Every annotation's ``image_id`` is one of ``image_ids``.

    ``ExpectColumnValuesToBeInSet`` costs GX about 0.1 ms per value of the set (it serialises
    its configuration, the set included, about 100 times per validation: 0.6 s for 5,000
    images) and copies the set into the report. Where the ids on both sides are integers, the
    same statement is made compactly: between the smallest and the largest image id, and not one
    of the at most ``MAX_ID_GAPS`` ids missing in between (usually none).
    """
    ids = set(image_ids)

    def integers(values: Iterable[Any]) -> bool:
        return all(type(v) is int for v in values)  # not bool, float or numpy

    if ids and integers(ids) and integers(annotation_image_ids):
        lo, hi = min(ids), max(ids)
        if hi - lo + 1 - len(ids) <= MAX_ID_GAPS:
            gaps = sorted(set(range(lo, hi + 1)) - ids)
            within = E.ExpectColumnValuesToBeBetween(column="image_id", min_value=lo, max_value=hi)
            if not gaps:
                return [within]
            return [within, E.ExpectColumnValuesToNotBeInSet(column="image_id", value_set=gaps)]
    return [E.ExpectColumnValuesToBeInSet(column="image_id", value_set=sorted(ids, key=str))]


def _box_checks(E: Any, tol: float) -> list[Check]:
    """Box inside its image (within ``tol`` pixels), positive width and height, finite values."""

    def between(column: str, **bounds: Any) -> Any:
        return E.ExpectColumnValuesToBeBetween(column=column, **bounds)

    box = ("x", "y", "w", "h")
    return [
        _tagged(
            BOX_INSIDE,
            "annotations",
            f"x >= -{tol}, y >= -{tol}, x + w <= width + {tol}, y + h <= height + {tol}",
            between("x", min_value=-tol),
            between("y", min_value=-tol),
            between("right_overflow", max_value=tol),
            between("bottom_overflow", max_value=tol),
        ),
        _tagged(
            BOX_POSITIVE,
            "annotations",
            "bbox width > 0 and height > 0",
            between("w", min_value=0, strict_min=True),
            between("h", min_value=0, strict_min=True),
        ),
        _tagged(
            BOX_FINITE,
            "annotations",
            "no NaN or infinite bbox value",
            *(E.ExpectColumnValuesToNotBeNull(column=c) for c in box),  # NaN
            *(between(c, min_value=-LARGEST_FLOAT, max_value=LARGEST_FLOAT) for c in box),  # inf
        ),
    ]


def image_checks(allowed_channels: Sequence[int], max_pixels: int | None) -> list[Check]:
    """The checks of :func:`images_table`, in report order."""
    E = _gx().expectations

    def same(a: str, b: str) -> Any:
        return E.ExpectColumnPairValuesToBeEqual(
            column_A=a, column_B=b, ignore_row_if="either_value_is_missing"
        )

    channels = [float(c) for c in allowed_channels]
    return [
        _tagged(
            UNIQUE_IMAGE_ID,
            "images",
            "no two images share an id",
            E.ExpectColumnValuesToBeUnique(column="image_id"),
        ),
        FILE_CHECKS[PATH_INSIDE],
        FILE_CHECKS[FILE_EXISTS],
        _pixel_limit_check(E, max_pixels),
        FILE_CHECKS[FILE_READABLE],
        _tagged(
            DECLARED_SIZE,
            "images",
            "decoded width/height equal the declared width/height",
            same("width", "actual_width"),
            same("height", "actual_height"),
        ),
        _tagged(
            ALLOWED_CHANNELS,
            "images",
            f"channel count in {list(allowed_channels)}",
            E.ExpectColumnValuesToBeInSet(column="channels", value_set=channels),
        ),
    ]


def _pixel_limit_check(E: Any, max_pixels: int | None) -> Check:
    if max_pixels is None:
        return _tagged(
            IMAGE_NOT_TOO_LARGE,
            "images",
            "no pixel limit set",
            E.ExpectColumnValuesToBeBetween(column="pixels", min_value=0),
        )
    return _tagged(
        IMAGE_NOT_TOO_LARGE,
        "images",
        f"width x height from the header <= {max_pixels} pixels; larger images are not decoded",
        E.ExpectColumnValuesToBeBetween(column="pixels", max_value=max_pixels),
    )


def run_expectations(tables: dict[str, pd.DataFrame], checks: list[Check]) -> dict[str, Any]:
    """Validate each table against the GX expectations of its checks (one suite per table, an
    ephemeral context); returns table -> GX validation result."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    source = context.data_sources.add_pandas("coco")
    results = {}
    for table, df in tables.items():
        batch_def = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        batch = batch_def.get_batch(batch_parameters={"dataframe": df})
        suite = gx.ExpectationSuite(name=f"coco_{table}")
        for c in checks:
            if c.table == table:
                for expectation in c.expectations:
                    suite.add_expectation(expectation)
        results[table] = batch.validate(
            suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": 20}
        )
    return results


def _failing_rows(check: Check, df: pd.DataFrame, gx_result: Any) -> tuple[set[int], list[str]]:
    """Row positions failing ``check``, and the errors of expectations that crashed."""
    if check.failing is not None:
        return {int(i) for i in np.flatnonzero(check.failing(df).to_numpy(dtype=bool))}, []
    rows: set[int] = set()
    errors = []
    for r in gx_result.results:
        if (r.expectation_config.meta or {}).get("check") != check.name:
            continue
        info = r.exception_info or {}
        if info.get("raised_exception"):
            errors.append(str(info.get("exception_message")))
            continue
        if not r.success:
            rows.update(int(i) for i in (r.result or {}).get("unexpected_index_list") or [])
    return rows, errors


def _check_result(check: Check, df: pd.DataFrame, rows: set[int], errors: list[str]) -> CheckResult:
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
        image_ids=_plain(all_img[:MAX_LISTED]),
        annotation_ids=_plain(all_ann[:MAX_LISTED]),
        description=desc,
        rows=ordered,
        more_image_ids=len(all_img) > MAX_LISTED,
        more_annotation_ids=len(all_ann) > MAX_LISTED,
        details=_details(check.name, sub.head(MAX_DETAILS)),
        computed_by=check.computed_by,
    )


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
        _check_result(c, tables[c.table], *_failing_rows(c, tables[c.table], gx_results[c.table]))
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


# ------------------------------------------------------------------------------ details
def _file_error(r: pd.Series) -> str | None:
    return f"image id {_plain(r['image_id'])}: {r['error']}" if r["error"] else None


def _declared_size(r: pd.Series) -> str:
    msg = (
        f"image id {_plain(r['image_id'])} ({r['file_name']}): declared {r['width']:g} x "
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
    return f"image id {_plain(r['image_id'])} ({r['file_name']}): {r['channels']:g} channel(s)"


def _box(r: pd.Series, with_size: bool) -> str:
    box = ", ".join(f"{r[k]:g}" for k in ("x", "y", "w", "h"))
    size = (
        f" in a {r['image_width']:g} x {r['image_height']:g} image"
        if with_size and r["image_known"]
        else ""
    )
    return (
        f"annotation id {_plain(r['annotation_id'])} (image id {_plain(r['image_id'])}): "
        f"bbox [{box}]{size}"
    )


def _ann_field(column: str) -> Callable[[pd.Series], str]:
    return lambda r: f"annotation id {_plain(r['annotation_id'])}: {column} {_plain(r[column])}"


def _iscrowd(r: pd.Series) -> str:
    return (
        f"annotation id {_plain(r['annotation_id'])} (image id {_plain(r['image_id'])}): "
        f"iscrowd {r['iscrowd']}; must be the number 0 or 1"
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
}


def _details(name: str, rows: pd.DataFrame) -> list[str]:
    """What is wrong with the first failing rows of check ``name``, one message per row."""
    message = DETAIL_MESSAGES.get(name)
    if message is None:
        return []
    return [m for m in (message(r) for _, r in rows.iterrows()) if m is not None]


# ------------------------------------------------------------------------------ policy
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
        entry = {"id": _plain(img["id"]), "file_name": img["file_name"], "reasons": reasons}
        return {**entry, **({"error": error} if error else {})}

    def ann_entry(r: int, reasons: list[str]) -> dict[str, Any]:
        ann = coco.annotations[r]
        return {"id": _plain(ann["id"]), "image_id": _plain(ann["image_id"]), "reasons": reasons}

    return {
        "dropped_images": [image_entry(r, v) for r, v in sorted(image_reasons.items())],
        "dropped_annotations": [ann_entry(r, v) for r, v in sorted(ann_reasons.items())],
    }
