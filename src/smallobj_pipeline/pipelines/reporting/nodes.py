"""Thin nodes over :mod:`smallobj_pipeline.detection.reporting.report`: they take the experiments'
outputs, the dataset and the plots as catalog inputs and return the table, the page and the plots.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from smallobj_pipeline.detection.data.augment import build_transform
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.reporting import report as rep
from smallobj_pipeline.detection.reporting.preview import render_augmentation_grid

logger = logging.getLogger(__name__)

KINDS = ("metrics", "history", "config", "predictions")  # an experiment's outputs, in this order


def preview_augmentation(
    model_input: CocoDataset, defaults: dict[str, Any], stats: dict[str, Any]
) -> Figure:
    """A grid of augmented training samples with their boxes (the defaults' augmentation), with
    intensities scaled as in training (the statistics' intensity spec)."""
    transform = build_transform(defaults.get("augmentation"), train=True)
    intensity = (stats.get("intensity") or {}).get("spec")
    return render_augmentation_grid(
        model_input.split("train"), transform, num_samples=8, seed=0, intensity=intensity
    )


def collect_experiments(
    reporting: dict[str, Any],
    metrics: dict[str, Any],
    histories: dict[str, Any],
    configs: dict[str, Any],
    predictions: dict[str, Any],
    *fresh: Any,
    names: tuple[str, ...] = (),
) -> list[rep.ExperimentRun]:
    """The experiments to report: every one saved so far (the four partitioned inputs, lazy),
    with ``fresh``, the outputs of this run's experiments ``names`` (``KINDS`` per name, in
    order), in place of their saved copies. ``reporting.experiments`` restricts and orders."""
    parts = [dict(metrics), dict(histories), dict(configs), dict(predictions)]
    for i, name in enumerate(names):
        for part, value in zip(parts, fresh[i * len(KINDS) : (i + 1) * len(KINDS)], strict=True):
            part[name] = value
    return rep.collect_runs(*parts, experiments=reporting.get("experiments") or None)


def build_report(
    runs: list[rep.ExperimentRun],
    reporting: dict[str, Any],
    stats: dict[str, Any],
    coco: CocoDataset,
    dataset_stats: bytes,
    augmentation_preview: bytes,
    pretrain_history: bytes | None,
) -> tuple[pd.DataFrame, str, dict[str, bytes]]:
    """The comparison table, the HTML page and the report's own plots (curves, PR curves,
    example predictions). The last three are PNGs other nodes saved, embedded as they are; the
    pretraining curve is ``None`` until ``pretrain_backbone`` has run: its section is left out."""
    plots = {
        "dataset_stats": dataset_stats,
        "augmentation_preview": augmentation_preview,
        "pretrain_history": pretrain_history,
    }
    figures = {f"curve_{k}": fig for k, fig in rep.metric_curves(runs).items()}
    figures["pr_curves"] = rep.pr_curves(runs)
    figures["predictions"] = rep.prediction_grid(
        coco, runs,
        num_images=int(reporting.get("example_images", 4)),
        score_threshold=float(reporting.get("score_threshold", 0.5)),
        intensity=(stats.get("intensity") or {}).get("spec"),
    )  # fmt: skip
    own = {name: rep.figure_png(fig) for name, fig in figures.items() if fig is not None}
    for name in (name for name, png in plots.items() if png is None):
        logger.info("Report: plot '%s' not saved yet, its section left out", name)
    embedded = {**own, **{name: png for name, png in plots.items() if png is not None}}
    title = reporting.get("title", "smallobj_pipeline report")
    table = rep.comparison_table(runs)
    html_text = rep.render_html(table, embedded, stats, title=title)
    logger.info("Report: %d experiment(s): %s", len(runs), ", ".join(r.name for r in runs))
    return table, html_text, own
