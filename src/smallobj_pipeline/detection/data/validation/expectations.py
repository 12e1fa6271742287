"""The checks, as great-expectations (1.x API) suites, and running them on the tables.

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
``Path.is_file``, the decoder); an expectation would only restate the boolean the code computed,
so these are plain code (:data:`FILE_CHECKS`, a mask of failing rows), labelled as such:
file_name stays inside the dataset directory, image file exists, image file is readable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..coco import CocoDataset
from .results import (
    ALLOWED_CHANNELS,
    ANNOTATION_IMAGE_EXISTS,
    BOX_FINITE,
    BOX_INSIDE,
    BOX_POSITIVE,
    DECLARED_SIZE,
    FILE_EXISTS,
    FILE_READABLE,
    IMAGE_NOT_TOO_LARGE,
    ISCROWD_VALID,
    KNOWN_CATEGORY,
    PATH_INSIDE,
    SEG_FORMAT,
    SEG_IN_BOX,
    SEG_INSIDE,
    SEG_NOT_EMPTY,
    SEG_POINTS,
    SEG_RLE_SIZE,
    UNIQUE_ANNOTATION_ID,
    UNIQUE_IMAGE_ID,
    Check,
)

LARGEST_FLOAT = float(np.finfo(np.float64).max)


def _gx() -> Any:
    """great_expectations, imported on first use: the import takes about 4 s, and this module
    is imported by every Kedro command that loads the pipelines."""
    import great_expectations  # lazy: about 4 s to import (see above)

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
        *_segmentation_checks(E, tol),
    ]


def _segmentation_checks(E: Any, tol: float) -> list[Check]:
    """The checks of an annotation's ``segmentation`` (instance masks; the measures are
    :func:`..masks.mask_facts`'s; a row without segmentation has nulls, which pass). A mask
    rasterises to whole pixels, so it may reach one pixel past a tight float box."""

    def between(column: str, **bounds: Any) -> Any:
        return E.ExpectColumnValuesToBeBetween(column=column, **bounds)

    def same(a: str, b: str) -> Any:
        return E.ExpectColumnPairValuesToBeEqual(
            column_A=a, column_B=b, ignore_row_if="either_value_is_missing"
        )

    ann = "annotations"
    return [
        _tagged(SEG_FORMAT, ann, "polygons: lists of an even count of finite numbers; RLE: "
                "size [height, width] and counts",
                E.ExpectColumnValuesToBeNull(column="seg_error")),
        _tagged(SEG_POINTS, ann, "every polygon part has 3 points or more",
                between("seg_min_points", min_value=3)),
        _tagged(SEG_INSIDE, ann, f"polygon points within {tol} px of the image",
                between("seg_outside_px", max_value=tol)),
        _tagged(SEG_RLE_SIZE, ann, "RLE size equals the image's [height, width]",
                same("seg_rle_height", "image_height"), same("seg_rle_width", "image_width")),
        _tagged(SEG_NOT_EMPTY, ann, "the mask covers at least one pixel",
                between("mask_area", min_value=1)),
        _tagged(SEG_IN_BOX, ann, f"no mask pixel more than {tol} + 1 px outside the bbox",
                between("mask_box_excess", max_value=tol + 1.0)),
    ]  # fmt: skip


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
    # lazy, like _gx: great_expectations is imported on first use only
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


def failing_rows(check: Check, df: pd.DataFrame, gx_result: Any) -> tuple[set[int], list[str]]:
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
