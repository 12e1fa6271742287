"""Thin Kedro nodes: each calls :mod:`smallobj_pipeline.detection.engine.experiment`."""

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
    checkpoint_dir = Path(paths["models_dir"]) / config["name"]
    model_file, history = train_experiment(model_input, config, checkpoint_dir)
    return model_file, pd.DataFrame(history)


def evaluate_model(
    model_file: dict[str, Any], model_input: CocoDataset, config: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return evaluate_experiment(model_file, model_input, config)
