"""Thin nodes over :mod:`smallobj_pipeline.detection.engine.experiment` and ``.registry``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smallobj_pipeline.detection.checkpoint import load_checkpoint
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.engine.experiment import (
    evaluate_experiment,
    resolve_experiment,
    train_experiment,
)
from smallobj_pipeline.detection.engine.registry import load_registry, record_decision
from smallobj_pipeline.detection.errors import ConfigError


def resolve_challenger_config(
    defaults: dict[str, Any], experiments: dict[str, Any], retrain: dict[str, Any], stats: dict[str, Any]
) -> dict[str, Any]:
    name = retrain["experiment"]
    if name not in (experiments or {}):
        raise ConfigError(f"retrain.experiment {name!r} is not a declared experiment ({sorted(experiments or {})})")
    cfg = resolve_experiment(name, defaults, experiments[name], stats)
    cfg["training"]["resume"] = False
    return cfg


def train_challenger(model_input: CocoDataset, config: dict[str, Any], retrain: dict[str, Any]) -> dict[str, Any]:
    model_file, _ = train_experiment(model_input, config, Path(retrain["challenger_dir"]) / "checkpoints")
    return model_file


def promote_if_better(
    challenger: dict[str, Any], model_input: CocoDataset, config: dict[str, Any], retrain: dict[str, Any]
) -> dict[str, Any]:
    """Evaluate challenger and champion on the current test split, then record the decision."""
    challenger_metrics, _ = evaluate_experiment(challenger, model_input, config)
    registry = load_registry(retrain["registry"])
    champion_metrics = None
    if registry.get("champion"):
        champion_file = load_checkpoint(registry["champion"]["model_path"])
        champion_metrics, _ = evaluate_experiment(champion_file, model_input, config)
    return record_decision(
        registry_path=retrain["registry"],
        champion_path=Path(retrain["champion_dir"]) / "model.pt",
        challenger_path=Path(retrain["challenger_dir"]) / "model.pt",
        challenger_metrics=challenger_metrics,
        champion_metrics=champion_metrics,
        metric=retrain.get("metric", "map_50"),
        margin=float(retrain.get("margin", 0.0)),
        dataset_fingerprint=model_input.fingerprint(),
        experiment=config["name"],
    )
