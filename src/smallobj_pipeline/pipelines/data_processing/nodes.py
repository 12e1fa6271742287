"""Thin Kedro nodes over :mod:`smallobj_pipeline.detection` (no data logic lives here). Each takes
and returns data; every file they stand for is a catalog entry (``conf/base/catalog.yml``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from smallobj_pipeline.detection.data.coco import DEFAULT_MAX_IMAGE_PIXELS, CocoDataset
from smallobj_pipeline.detection.data.sample import dataset_exists, generate_sample_dataset
from smallobj_pipeline.detection.data.split import assign_splits
from smallobj_pipeline.detection.data.stats import compute_stats, plot_stats
from smallobj_pipeline.detection.data.tiling import tile_dataset
from smallobj_pipeline.detection.data.validation import apply_policy, validate_dataset
from smallobj_pipeline.detection.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)


def load_raw_dataset(dataset: dict[str, Any]) -> CocoDataset:
    """Read the COCO directory at ``dataset.root``; create the bundled sample there first when
    ``dataset.root`` is the sample's location and it does not exist yet (or was generated with
    other settings).

    ``dataset.root`` is a parameter, not a catalog entry, because users point it at their data at
    run time (``--params="dataset.root=..."``)."""
    root = Path(dataset["root"])
    sample = dataset.get("sample") or {}
    gen = {k: v for k, v in sample.items() if k != "root"}
    is_sample = bool(sample) and root.resolve() == Path(sample["root"]).resolve()
    if is_sample and not dataset_exists(root, gen):
        logger.info("Generating the bundled sample dataset in %s (%s)", root, gen)
        generate_sample_dataset(root, **gen)
    coco = CocoDataset.from_dir(root)
    logger.info(
        "Loaded %s: %d images, %d annotations, %d categories%s",
        root, len(coco.images), len(coco.annotations), len(coco.categories),
        f", split files {sorted(coco.splits)}" if coco.splits else "",
    )  # fmt: skip
    return coco


def validate_coco(
    coco: CocoDataset, validation: dict[str, Any], intensity: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """great-expectations checks, then the policy (``drop`` removes the offending images and
    annotations and lists them under ``dropped``). Returns ``(report, verdict)``: the report is
    the ``validation_report`` dataset, saved before :func:`enforce_validation` runs, so it is on
    disk even when the run then stops (policy ``fail``); ``verdict`` is ``{"dataset": clean}``
    or ``{"error": the exception to raise}``. Warnings (grey levels lost under
    ``intensity.mode``, EXIF-turned images) are logged."""
    intensity = intensity or {}
    outcome = validate_dataset(
        coco,
        allowed_channels=tuple(validation.get("allowed_channels", (1, 3))),
        bbox_tolerance=float(validation.get("bbox_tolerance", 0.5)),
        max_image_pixels=validation.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS),
        intensity=intensity,
        min_levels=int(intensity.get("min_levels", 32)),
    )
    for warning in outcome.warnings:
        logger.warning("Validation: %s", warning)
    report = {**outcome.to_dict(), "policy": validation.get("policy", "fail")}
    if outcome.success:
        logger.info("Validation passed: %d checks", len(outcome.checks))
    else:
        logger.warning("Validation found problems:\n%s", outcome.summary())
    try:
        clean, dropped = apply_policy(coco, outcome, report["policy"])
    except (DatasetError, ConfigError) as exc:
        return report, {"error": exc}
    if dropped:
        report["dropped"] = dropped
        logger.warning(
            "Policy 'drop': dropped %d images and %d annotations (listed under 'dropped' in "
            "the validation report)",
            len(dropped.get("dropped_images", [])), len(dropped.get("dropped_annotations", [])),
        )  # fmt: skip
    return report, {"dataset": clean}


def enforce_validation(verdict: dict[str, Any]) -> CocoDataset:
    """The validated dataset, or the validation's error raised (the report is saved by then)."""
    if "error" in verdict:
        raise verdict["error"]
    return verdict["dataset"]


def split_coco(coco: CocoDataset, split: dict[str, Any]) -> CocoDataset:
    result = assign_splits(
        coco,
        ratios=dict(split.get("ratios", {"train": 0.7, "val": 0.15, "test": 0.15})),
        seed=int(split.get("seed", 42)),
        use_existing=bool(split.get("use_existing", True)),
    )
    logger.info("Split: %s", {k: len(v) for k, v in result.splits.items()})
    return result


def tile_coco(
    coco: CocoDataset, tiling: dict[str, Any] | None
) -> tuple[CocoDataset, dict[str, Any]]:
    """The split dataset with its training images cut into tiles when ``tiling`` says so
    (validation and test images stay whole), and the tiling plan with its reason."""
    return tile_dataset(coco, tiling)


def dataset_statistics(
    coco: CocoDataset, intensity: dict[str, Any]
) -> tuple[dict[str, Any], Figure]:
    """Box and image statistics, and the intensity range of the training images (``intensity``
    settings) that training, evaluation, prediction and the report then apply."""
    stats = compute_stats(coco, intensity)
    info = stats["intensity"]
    logger.info(
        "Pixels: %s (%d training images sampled); range found %s; scaling %s; channels %s",
        info["bit_depth"], info["images_sampled"], info["range_found"], info["scaling"],
        info["channels"],
    )  # fmt: skip
    return stats, plot_stats(stats)
