"""Thin Kedro nodes: each calls :mod:`smallobj_pipeline.detection.engine.experiment`. They take
and return data; the files (``{name}.config``, ``.model``, ``.history``, ``.metrics``,
``.predictions``) are the catalog's dataset factories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.engine.experiment import (
    evaluate_experiment,
    resolve_experiment,
    train_experiment,
)


def resolve_config(
    defaults: dict[str, Any], overrides: dict[str, Any] | None, stats: dict[str, Any], name: str
) -> dict[str, Any]:
    return resolve_experiment(name, defaults, overrides, stats)


def train_model(
    model_input: CocoDataset, config: dict[str, Any], paths: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The model file and the per-epoch history (saved by the catalog).

    Trains on every visible GPU (``training.devices``; several machines with
    ``training.nnodes``): the DDP workers are launched from here and rank 0's result is
    returned, so that evaluation and the report continue in this process.

    ``paths.models_dir`` is the one path a node is given: the trainer writes its resumable
    checkpoints (``<models_dir>/<experiment>/last.pt`` every epoch, ``best.pt``) *while* it
    trains, so that ``training.resume: true`` continues an interrupted run; a node output is
    saved only when the node returns, too late for that."""
    checkpoint_dir = Path(paths["models_dir"]) / config["name"]
    model_file, history = train_experiment(model_input, config, checkpoint_dir)
    return model_file, pd.DataFrame(history)


def evaluate_model(
    model_file: dict[str, Any], model_input: CocoDataset, config: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return evaluate_experiment(model_file, model_input, config)
