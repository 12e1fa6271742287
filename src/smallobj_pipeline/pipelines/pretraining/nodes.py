"""Thin Kedro nodes over :mod:`smallobj_pipeline.detection.pretrain`."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from smallobj_pipeline.detection.coco import CocoDataset
from smallobj_pipeline.detection.pretrain import plot_history, run_pretraining


def pretrain_backbone(model_input: CocoDataset, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train the classifier and save its backbone (``<output_dir>/<name>.pt``); the COCO
    dataset is used when ``source`` is ``crops``."""
    history, summary = run_pretraining(params, coco=model_input)
    return pd.DataFrame(history), summary


def plot_pretrain_history(history: pd.DataFrame, params: dict[str, Any]) -> Figure:
    title = f"Backbone pretraining: {params.get('name')} ({params.get('arch')}, {params.get('source')})"
    return plot_history(history.to_dict("records"), title=title)
