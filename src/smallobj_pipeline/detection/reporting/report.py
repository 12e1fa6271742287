"""The cross-experiment report: comparison table, per-metric curves, PR curves, example
predictions, dataset statistics and the augmentation preview, in one self-contained HTML file.

Reads saved outputs only (``<reporting_dir>/<E>/history.csv``, ``metrics.json``,
``<models_dir>/<E>/config.json``, ``<predictions_dir>/<E>/predictions.json``), so it can be
rebuilt at any time from whatever subset of experiments is present.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.coco import CocoDataset
from ..errors import DatasetError

logger = logging.getLogger(__name__)

CURVE_METRICS = {
    "train_loss": "Training loss",
    "val_loss": "Validation loss",
    "iou_per_prediction": "IoU per prediction (validation)",
    "iou_per_gt": "IoU per ground truth (validation)",
    "map_50": "mAP@0.5 (validation)",
    "map": "mAP@[.5:.95] (validation)",
}


@dataclass
class ExperimentRun:
    name: str
    history: pd.DataFrame
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    predictions: list[dict[str, Any]] | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def collect_runs(
    reporting_dir: str | Path,
    models_dir: str | Path,
    predictions_dir: str | Path,
    experiments: list[str] | None = None,
) -> list[ExperimentRun]:
    """Every experiment with a ``metrics.json`` and a ``history.csv`` under ``reporting_dir``.

    ``experiments`` restricts (and orders) the names; an experiment named there whose outputs
    are missing is skipped with a warning naming the missing file. No experiment at all is an
    error that says which folder was searched.
    """
    reporting_dir, models_dir, predictions_dir = Path(reporting_dir), Path(models_dir), Path(predictions_dir)
    if experiments is None:
        experiments = sorted(p.parent.name for p in reporting_dir.glob("*/metrics.json"))
    runs = []
    for name in experiments:
        metrics_path = reporting_dir / name / "metrics.json"
        history_path = reporting_dir / name / "history.csv"
        missing = [str(p) for p in (metrics_path, history_path) if not p.is_file()]
        if missing:
            logger.warning("Report: experiment %r left out, missing %s (train it first)", name, ", ".join(missing))
            continue
        try:
            history = pd.read_csv(history_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{history_path}: not a readable CSV ({exc})") from None
        config_path = models_dir / name / "config.json"
        pred_path = predictions_dir / name / "predictions.json"
        runs.append(
            ExperimentRun(
                name=name,
                history=history,
                metrics=_read_json(metrics_path),
                config=_read_json(config_path) if config_path.is_file() else {},
                predictions=_read_json(pred_path) if pred_path.is_file() else None,
            )
        )
    if not runs:
        raise DatasetError(
            f"no experiment outputs found under {reporting_dir} (expected <experiment>/metrics.json and "
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
                "test_map": m.get("map"),
                "test_map_50": m.get("map_50"),
                "test_map_75": m.get("map_75"),
                "test_map_small": m.get("map_small"),
                "test_iou_per_prediction": m.get("iou_per_prediction"),
                "test_iou_per_gt": m.get("iou_per_gt"),
                "test_precision": m.get("precision"),
                "test_recall": m.get("recall"),
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
        present = [r for r in runs if column in r.history.columns and r.history[column].notna().any()]
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
        ax.legend(fontsize=8, title=f"not recorded: {', '.join(absent)}" if absent else None, title_fontsize=7)
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
        ax.plot(recall, precision, label=f"{run.name} (AP50 {run.metrics.get('map_50', float('nan')):.3f})")
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
    coco: CocoDataset, runs: list[ExperimentRun], num_images: int = 4, score_threshold: float = 0.5,
    intensity: Any = None,
) -> Figure | None:
    """Test images (rows) x experiments (columns): ground truth in green, predictions with
    score >= threshold in red. 1-channel images are shown in gray, with their intensities
    scaled as the models saw them (``intensity``, the dataset statistics' spec)."""
    from ..data.intensity import to_display

    runs = [r for r in runs if r.predictions is not None]
    test_ids = list(coco.splits.get("test", []))[:num_images]
    if not runs or not test_ids:
        return None
    fig = Figure(figsize=(3.2 * len(runs), 3.2 * len(test_ids)))
    axes = fig.subplots(len(test_ids), len(runs), squeeze=False)
    for r, image_id in enumerate(test_ids):
        image = to_display(coco.read_image(image_id, intensity))
        gts = coco.annotations_by_image.get(image_id, [])
        for c, run in enumerate(runs):
            ax = axes[r][c]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            for a in gts:
                x, y, w, h = a["bbox"]
                ax.add_patch(_rect(x, y, w, h, "lime"))
            preds = [p for p in run.predictions if p["image_id"] == image_id and p["score"] >= score_threshold]
            for p in preds:
                x, y, w, h = p["bbox"]
                ax.add_patch(_rect(x, y, w, h, "red"))
            ax.set_title(f"{run.name}\nimage {image_id}: {len(gts)} gt, {len(preds)} pred", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig


def _rect(x: float, y: float, w: float, h: float, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=0.8)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def check_png(data: bytes, source: str) -> bytes:
    """Verify PNG bytes decode; a broken file gives a message naming it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"{source}: not a valid PNG image ({type(exc).__name__}: {exc})") from None
    return data


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


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


def render_html(
    table: pd.DataFrame,
    figures: dict[str, bytes],
    stats: dict[str, Any] | None = None,
    title: str = "smallobj_pipeline report",
    notes: list[str] | None = None,
) -> str:
    """A single self-contained HTML page (images embedded as base64 PNG)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return html.escape(str(v)) if v is not None else ""

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in table.itertuples(index=False))
    sections = [f"<h1>{html.escape(title)}</h1>"]
    for note in notes or []:
        sections.append(f"<p class='note'>{html.escape(note)}</p>")
    sections.append(f"<h2 id='comparison'>Comparison</h2><div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
    curve_keys = [k for k in CURVE_METRICS if f"curve_{k}" in figures]
    if curve_keys:
        sections.append("<h2 id='curves'>Training curves</h2><div class='grid'>")
        sections += [_img_tag(figures[f"curve_{k}"], CURVE_METRICS[k]) for k in curve_keys]
        sections.append("</div>")
    if "pr_curves" in figures:
        sections.append("<h2 id='pr'>Precision-recall</h2>" + _img_tag(figures["pr_curves"], "precision-recall"))
    if "predictions" in figures:
        sections.append(
            "<h2 id='predictions'>Example predictions (test split)</h2>"
            "<p>Ground truth in green, predictions above the score threshold in red.</p>"
            + _img_tag(figures["predictions"], "example predictions")
        )
    if stats is not None or "dataset_stats" in figures:
        sections.append("<h2 id='dataset'>Dataset statistics</h2>")
        if stats:
            overall = stats.get("overall", {})
            keys = {k: v for k, v in overall.items() if not isinstance(v, dict | list)}
            keys.update(_intensity_rows(stats.get("intensity")))
            sections.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{fmt(v)}</td></tr>" for k, v in keys.items()) + "</table>")
        if "dataset_stats" in figures:
            sections.append(_img_tag(figures["dataset_stats"], "dataset statistics"))
    if "pretrain_history" in figures:
        sections.append(
            "<h2 id='pretraining'>Backbone pretraining</h2>"
            "<p>The backbone trained as a classifier (pretrain_backbone pipeline) before the detector is "
            "fine-tuned from it: loss and accuracy per epoch on its training and validation crops.</p>"
            + _img_tag(figures["pretrain_history"], "backbone pretraining history")
        )
    if "augmentation_preview" in figures:
        sections.append("<h2 id='augmentation'>Augmentation preview</h2>" + _img_tag(figures["augmentation_preview"], "augmentation preview"))
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}"
        ".scroll{overflow-x:auto}.grid img{width:48%;min-width:420px}img{max-width:100%}.note{color:#a60}"
    )
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(sections)}</body></html>"
