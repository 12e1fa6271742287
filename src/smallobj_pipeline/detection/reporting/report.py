"""The cross-experiment report: comparison table, per-metric curves, PR curves, example
predictions, dataset statistics and the augmentation preview, in one self-contained HTML file
rendered from the Jinja2 template ``templates/report.html.j2`` (package data).

Works on data, not files: each experiment's history, metrics, config and predictions come in as
mappings name -> value (or -> a lazy loader, as Kedro's ``PartitionedDataset`` gives them), so the
report can be rebuilt at any time from whatever subset of experiments is present.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib.figure import Figure
from PIL import Image

from ..data.coco import CocoDataset
from ..errors import DatasetError
from .draw import item_masks, show_boxes

logger = logging.getLogger(__name__)

CURVE_METRICS = {
    "train_loss": "Training loss",
    "val_loss": "Validation loss",
    "iou_per_prediction": "IoU per prediction (validation)",
    "iou_per_gt": "IoU per ground truth (validation)",
    "map_50": "mAP@0.5 (validation)",
    "map": "mAP@[.5:.95] (validation)",
    "segm_map_50": "Mask mAP@0.5 (validation)",
}


@dataclass
class ExperimentRun:
    name: str
    history: pd.DataFrame
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    predictions: list[dict[str, Any]] | None = None


def _value(item: Any) -> Any:
    """A loaded value, or what a lazy loader (a PartitionedDataset partition) returns."""
    return item() if callable(item) else item


def _load(name: str, kind: str, item: Any) -> Any:
    try:
        return _value(item)
    except Exception as exc:  # noqa: BLE001 - the dataset's message names the file
        raise DatasetError(f"experiment {name!r}: its {kind} could not be read: {exc}") from None


def collect_runs(
    metrics: Mapping[str, Any],
    histories: Mapping[str, Any],
    configs: Mapping[str, Any] | None = None,
    predictions: Mapping[str, Any] | None = None,
    experiments: list[str] | None = None,
) -> list[ExperimentRun]:
    """The runs of every experiment with both a metrics dict and a history table.

    Each mapping is experiment name -> value, or -> a loader returning it (as a
    ``PartitionedDataset`` loads: ``<experiment>/metrics.json`` gives ``"<experiment>"``).
    ``experiments`` restricts (and orders) the names; one named there whose outputs are missing
    is skipped with a warning naming the missing file. No experiment at all is an error. A file
    that cannot be read is an error naming the experiment and the dataset's message (the file).
    """
    configs, predictions = configs or {}, predictions or {}
    if experiments is None:
        experiments = sorted(name for name in metrics if "/" not in name)
    runs = []
    for name in experiments:
        missing = [
            f"{name}/{f}"
            for f, parts in (("metrics.json", metrics), ("history.csv", histories))
            if name not in parts
        ]
        if missing:
            logger.warning(
                "Report: experiment %r left out, missing %s (train it first)",
                name, ", ".join(missing),
            )  # fmt: skip
            continue
        config = _load(name, "config.json", configs[name]) if name in configs else None
        preds = predictions.get(name)
        runs.append(
            ExperimentRun(
                name=name,
                history=_load(name, "history.csv", histories[name]),
                metrics=_load(name, "metrics.json", metrics[name]),
                config=config or {},
                predictions=None if preds is None else _load(name, "predictions.json", preds),
            )
        )
    if not runs:
        raise DatasetError(
            "no experiment outputs found under the experiments' output folders (catalog: "
            "experiment_metrics and experiment_histories, <experiment>/metrics.json and "
            "history.csv): run `kedro run --pipeline=train` first"
        )
    return runs


def comparison_table(runs: list[ExperimentRun]) -> pd.DataFrame:
    """One row per experiment: its key settings and the numbers the study compares."""
    rows = []
    for run in runs:
        model = run.config.get("model", {})
        hist = run.history
        best_val, best_epoch = math.nan, math.nan
        if "map_50" in hist and hist["map_50"].notna().any():
            idx = hist["map_50"].idxmax()
            best_val, best_epoch = float(hist.loc[idx, "map_50"]), int(hist.loc[idx, "epoch"])
        m = run.metrics
        rows.append(
            {
                "experiment": run.name,
                "task": model.get("task", "detection"),
                "variant": model.get("variant"),
                "backbone": model.get("backbone"),
                "pretrained": model.get("pretrained"),
                "trainable_layers": model.get("trainable_layers"),
                "norm": model.get("norm"),
                "in_channels": model.get("in_channels"),
                "params_total_M": round(m.get("params_total", math.nan) / 1e6, 2),
                "params_trainable_M": round(m.get("params_trainable", math.nan) / 1e6, 2),
                "best_val_map_50": best_val,
                "best_val_epoch": best_epoch,
                "epochs_run": m.get("epochs_run"),
                "stopped_by": m.get("stopped_by"),
                "evaluated_on": m.get("evaluated_on", "whole images, one pass"),
                "test_map": m.get("map"),
                "test_map_50": m.get("map_50"),
                "test_map_75": m.get("map_75"),
                "test_map_small": m.get("map_small"),
                "test_iou_per_prediction": m.get("iou_per_prediction"),
                "test_iou_per_gt": m.get("iou_per_gt"),
                "test_precision": m.get("precision"),
                "test_recall": m.get("recall"),
                "test_segm_map": m.get("segm_map"),
                "test_segm_map_50": m.get("segm_map_50"),
                "test_segm_map_small": m.get("segm_map_small"),
                "test_segm_iou_per_prediction": m.get("segm_iou_per_prediction"),
                "test_segm_iou_per_gt": m.get("segm_iou_per_gt"),
                "seconds_per_epoch": m.get("seconds_per_epoch"),
                "train_seconds": m.get("train_seconds"),
                "infer_ms_per_image": m.get("infer_ms_per_image"),
            }
        )
    return pd.DataFrame(rows)


def metric_curves(runs: list[ExperimentRun]) -> dict[str, Figure]:
    """One figure per metric, every experiment's curve over epochs (as in the study's figures).
    A metric no experiment recorded is left out; an experiment lacking a column is skipped in
    that figure and noted in its legend title."""
    figures = {}
    for column, title in CURVE_METRICS.items():
        present = [
            r for r in runs if column in r.history.columns and r.history[column].notna().any()
        ]
        if not present:
            continue
        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.add_subplot()
        for run in present:
            h = run.history.dropna(subset=[column])
            ax.plot(h["epoch"], h[column], marker="o", markersize=3, label=run.name)
        absent = [r.name for r in runs if r not in present]
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(column)
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=8,
            title=f"not recorded: {', '.join(absent)}" if absent else None,
            title_fontsize=7,
        )
        fig.tight_layout()
        figures[column] = fig
    return figures


def pr_curves(runs: list[ExperimentRun]) -> Figure | None:
    """Precision-recall at IoU 0.5 on the test split (from COCOeval's accumulated arrays)."""
    present = [r for r in runs if r.metrics.get("pr_curve")]
    if not present:
        return None
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for run in present:
        pr = run.metrics["pr_curve"]
        recall = np.asarray(pr["recall"], dtype=float)
        precision = np.asarray([np.nan if p is None else p for p in pr["precision"]], dtype=float)
        ax.plot(
            recall,
            precision,
            label=f"{run.name} (AP50 {run.metrics.get('map_50', float('nan')):.3f})",
        )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall at IoU 0.5 (test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def prediction_grid(
    coco: CocoDataset,
    runs: list[ExperimentRun],
    num_images: int = 4,
    score_threshold: float = 0.5,
    intensity: Any = None,
) -> Figure | None:
    """Test images (rows) x experiments (columns): ground truth in green, predictions with
    score >= threshold in red, their masks filled (instance segmentation). 1-channel images are
    shown in gray, with their intensities scaled as the models saw them (``intensity``, the
    dataset statistics' spec)."""
    runs = [r for r in runs if r.predictions is not None]
    test_ids = list(coco.splits.get("test", []))[:num_images]
    if not runs or not test_ids:
        return None
    fig = Figure(figsize=(3.2 * len(runs), 3.2 * len(test_ids)))
    axes = fig.subplots(len(test_ids), len(runs), squeeze=False)
    for r, image_id in enumerate(test_ids):
        image = coco.read_image(image_id, intensity)
        gts = list(coco.annotations_by_image.get(image_id, []))
        for c, run in enumerate(runs):
            preds = [p for p in run.predictions
                     if p["image_id"] == image_id and p["score"] >= score_threshold]  # fmt: skip
            boxes = _xyxy([item["bbox"] for item in gts + preds])
            colors = ["lime"] * len(gts) + ["red"] * len(preds)
            masks = item_masks(gts + preds, *image.shape[:2]) if _has_masks(run) else None
            title = f"{run.name}\nimage {image_id}: {len(gts)} gt, {len(preds)} pred"
            show_boxes(axes[r][c], image, boxes, title=title, colors=colors, masks=masks)
    fig.tight_layout()
    return fig


def _has_masks(run: ExperimentRun) -> bool:
    return run.config.get("model", {}).get("task") == "instance_segmentation"


def _xyxy(xywh: list[list[float]]) -> np.ndarray:
    boxes = np.asarray(xywh, dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def check_png(data: bytes, source: str) -> bytes:
    """Verify PNG bytes decode; a broken file gives a message naming it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means a broken file
        raise DatasetError(
            f"{source}: not a valid PNG image ({type(exc).__name__}: {exc})"
        ) from None
    return data


def _intensity_rows(info: dict[str, Any] | None) -> dict[str, Any]:
    """The dataset statistics' pixel-format lines: bit depth, range found, range used."""
    if not info:
        return {}
    found, used = info.get("range_found"), info.get("range_used")
    return {
        "bit depth": info.get("bit_depth"),
        "pixel range found": f"{found[0]:g} .. {found[1]:g}" if found else "",
        "intensity scaling": info.get("scaling"),
        "range used": f"{used[0]:g} .. {used[1]:g}" if used else "",
    }


def _cell(value: Any) -> str:
    """A table cell: floats to 4 significant digits, NaN and None empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def _stats_rows(stats: dict[str, Any] | None) -> list[tuple[str, str]] | None:
    if stats is None:
        return None
    overall = {k: v for k, v in stats.get("overall", {}).items() if not isinstance(v, dict | list)}
    overall.update(_intensity_rows(stats.get("intensity")))
    return [(k, _cell(v)) for k, v in overall.items()] if stats else []


def _png_src(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


_TEMPLATES = Environment(
    loader=PackageLoader("smallobj_pipeline.detection.reporting", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["png_src"] = _png_src


def render_html(
    table: pd.DataFrame,
    figures: dict[str, bytes],
    stats: dict[str, Any] | None = None,
    title: str = "smallobj_pipeline report",
    notes: list[str] | None = None,
) -> str:
    """A single self-contained HTML page (images embedded as base64 PNG), from
    ``templates/report.html.j2``; every text is escaped by Jinja2's autoescape."""
    curves = [
        (f"curve_{k}", label) for k, label in CURVE_METRICS.items() if f"curve_{k}" in figures
    ]
    return _TEMPLATES.get_template("report.html.j2").render(
        title=title,
        notes=notes or [],
        columns=[str(c) for c in table.columns],
        rows=[[_cell(v) for v in row] for row in table.itertuples(index=False)],
        figures=figures,
        curves=curves,
        stats_rows=_stats_rows(stats),
    )
