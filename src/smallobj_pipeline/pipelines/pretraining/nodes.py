"""Thin Kedro nodes over :mod:`smallobj_pipeline.detection.pretraining`."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.intensity import choose_in_channels
from smallobj_pipeline.detection.pretraining.plots import plot_history
from smallobj_pipeline.detection.pretraining.run import train_backbone

logger = logging.getLogger(__name__)


def pretrain_backbone(
    model_input: CocoDataset, params: dict[str, Any], stats: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, dict[str, Any]]]:
    """Train the classifier; returns the history, the summary and ``{name: backbone}`` (the
    catalog's ``pretrained_backbones`` saves it as ``data/06_models/backbones/<name>.pt``; the
    name is ``pretrain.name``). The COCO dataset is used when ``source`` is ``crops``. Pixels are
    scaled as the detector's training scales them (the statistics' intensity spec);
    ``in_channels: auto`` follows the images."""
    info = stats.get("intensity") or {}
    params = dict(params)
    if params.pop("output_dir", None) is not None:
        logger.warning(
            "pretrain.output_dir is not used by the pipeline: the backbone is saved where the "
            "catalog's pretrained_backbones says (data/06_models/backbones unless changed)"
        )
    if str(params.get("in_channels", 1)).strip().lower() == "auto":
        params["in_channels"], reason = choose_in_channels(info.get("channels"))
        logger.info("pretrain.in_channels auto: %s", reason)
    history, summary, backbone = train_backbone(
        params, coco=model_input, intensity=info.get("spec")
    )
    return pd.DataFrame(history), summary, {summary["name"]: backbone}


def plot_pretrain_history(history: pd.DataFrame, params: dict[str, Any]) -> Figure:
    title = (
        f"Backbone pretraining: {params.get('name')} ({params.get('arch')}, {params.get('source')})"
    )
    return plot_history(history.to_dict("records"), title=title)
