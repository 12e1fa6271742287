"""Thin node over :mod:`smallobj_pipeline.detection.reporting.report`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from smallobj_pipeline.detection.data.augment import build_transform, render_augmentation_grid
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.errors import DatasetError
from smallobj_pipeline.detection.reporting import report as rep

logger = logging.getLogger(__name__)


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


def build_report(reporting: dict[str, Any], *after: Any) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """Collect every experiment present, write the table, the plots and the HTML report.

    ``after`` (the augmentation preview, the experiments' metrics) only orders this node after
    them; the files are read back from ``reporting.embed_plots``.
    """
    runs = rep.collect_runs(
        reporting["reporting_dir"], reporting["models_dir"], reporting["predictions_dir"],
        experiments=reporting.get("experiments") or None,
    )
    table = rep.comparison_table(runs)
    figures = {f"curve_{k}": fig for k, fig in rep.metric_curves(runs).items()}
    pr = rep.pr_curves(runs)
    if pr is not None:
        figures["pr_curves"] = pr
    stats = None
    stats_path = Path(reporting.get("dataset_stats", ""))
    if stats_path.is_file():
        try:
            stats = json.loads(stats_path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{stats_path}: invalid JSON ({exc.msg})") from None
    dataset_dir = Path(reporting["dataset_dir"])
    if (dataset_dir / "annotations.json").is_file():
        grid = rep.prediction_grid(
            CocoDataset.from_dir(dataset_dir), runs,
            num_images=int(reporting.get("example_images", 4)),
            score_threshold=float(reporting.get("score_threshold", 0.5)),
            intensity=((stats or {}).get("intensity") or {}).get("spec"),
        )
        if grid is not None:
            figures["predictions"] = grid
    pngs = {name: rep.figure_png(fig) for name, fig in figures.items()}
    for name, path in (reporting.get("embed_plots") or {}).items():
        path = Path(path)
        if path.is_file():
            pngs[name] = rep.check_png(path.read_bytes(), str(path))
        else:
            logger.info("Report: %s not found, section '%s' left out", path, name)
    html_text = rep.render_html(table, pngs, stats, title=reporting.get("title", "smallobj_pipeline report"))
    logger.info("Report: %d experiment(s): %s", len(runs), ", ".join(r.name for r in runs))
    return table, html_text, {name: png for name, png in pngs.items() if name not in (reporting.get("embed_plots") or {})}
