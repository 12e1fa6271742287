"""Data validation of a COCO directory: great-expectations (1.x API) for the questions about
the values in a table column, plain Python for the questions about files.

:func:`validate_dataset` builds two pandas tables from a :class:`CocoDataset` (``tables``: one
row per annotation, one per image, with what each image file says), runs every named check on
them (``expectations``: which checks are GX expectations and which are plain Python, labelled
``computed_by`` in the report) and returns a :class:`ValidationOutcome` (``results``: the check
names, the report's JSON and the summary). :func:`apply_policy` (``policy``) then stops the run
(``fail``) or removes the offending annotations and images and reports them (``drop``).

Modules: ``results`` (names, check and result types, messages), ``tables`` (the tables and the
non-fatal warnings), ``expectations`` (the GX suites and the plain-code file checks, and running
them), ``validate`` (the orchestration), ``policy`` (fail / drop). Import from this package; the
names below are its public API.
"""

from .expectations import (
    FILE_CHECKS,
    LARGEST_FLOAT,
    MAX_ID_GAPS,
    annotation_checks,
    failing_rows,
    image_checks,
    run_expectations,
)
from .policy import POLICIES, apply_policy
from .results import (
    ALLOWED_CHANNELS,
    ANNOTATION_CHECKS,
    ANNOTATION_IMAGE_EXISTS,
    BOX_FINITE,
    BOX_INSIDE,
    BOX_POSITIVE,
    DECLARED_SIZE,
    DETAIL_MESSAGES,
    FILE_EXISTS,
    FILE_READABLE,
    GX,
    IMAGE_CHECKS,
    IMAGE_NOT_TOO_LARGE,
    ISCROWD_VALID,
    KNOWN_CATEGORY,
    MAX_DETAILS,
    MAX_LISTED,
    PATH_INSIDE,
    PYTHON,
    UNIQUE_ANNOTATION_ID,
    UNIQUE_IMAGE_ID,
    Check,
    CheckResult,
    DataValidationError,
    ValidationOutcome,
    check_result,
    plain,
)
from .tables import (
    ANNOTATION_COLUMNS,
    IMAGE_COLUMNS,
    LEVEL_SAMPLE,
    annotations_table,
    image_warnings,
    images_table,
    is_crowd,
)
from .validate import check_not_empty, validate_dataset

__all__ = [
    "ALLOWED_CHANNELS",
    "ANNOTATION_CHECKS",
    "ANNOTATION_COLUMNS",
    "ANNOTATION_IMAGE_EXISTS",
    "BOX_FINITE",
    "BOX_INSIDE",
    "BOX_POSITIVE",
    "DECLARED_SIZE",
    "DETAIL_MESSAGES",
    "FILE_CHECKS",
    "FILE_EXISTS",
    "FILE_READABLE",
    "GX",
    "IMAGE_CHECKS",
    "IMAGE_COLUMNS",
    "IMAGE_NOT_TOO_LARGE",
    "ISCROWD_VALID",
    "KNOWN_CATEGORY",
    "LARGEST_FLOAT",
    "LEVEL_SAMPLE",
    "MAX_DETAILS",
    "MAX_ID_GAPS",
    "MAX_LISTED",
    "PATH_INSIDE",
    "POLICIES",
    "PYTHON",
    "UNIQUE_ANNOTATION_ID",
    "UNIQUE_IMAGE_ID",
    "Check",
    "CheckResult",
    "DataValidationError",
    "ValidationOutcome",
    "annotation_checks",
    "annotations_table",
    "apply_policy",
    "check_not_empty",
    "check_result",
    "failing_rows",
    "image_checks",
    "image_warnings",
    "images_table",
    "is_crowd",
    "plain",
    "run_expectations",
    "validate_dataset",
]
