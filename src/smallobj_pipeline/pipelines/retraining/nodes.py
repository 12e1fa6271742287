"""Thin nodes over :mod:`smallobj_pipeline.detection.engine.experiment` and ``.registry``: the
current champion and the registry come in from the catalog, the decision, the updated registry
and the promoted model go out to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io.core import generate_timestamp

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.engine.experiment import (
    evaluate_experiment,
    resolve_experiment,
    train_experiment,
)
from smallobj_pipeline.detection.engine.registry import record_decision
from smallobj_pipeline.detection.errors import ConfigError


def resolve_challenger_config(
    defaults: dict[str, Any],
    experiments: dict[str, Any],
    retrain: dict[str, Any],
    stats: dict[str, Any],
) -> dict[str, Any]:
    name = retrain["experiment"]
    if name not in (experiments or {}):
        raise ConfigError(
            f"retrain.experiment {name!r} is not a declared experiment "
            f"({sorted(experiments or {})})"
        )
    cfg = resolve_experiment(name, defaults, experiments[name], stats)
    cfg["training"]["resume"] = False
    return cfg


def train_challenger(
    model_input: CocoDataset, config: dict[str, Any], retrain: dict[str, Any]
) -> dict[str, Any]:
    """The challenger's model file (saved by the catalog as ``retrain.challenger_model``).

    ``retrain.challenger_dir`` is the one path a node is given: the trainer writes its
    checkpoints (``checkpoints/last.pt`` every epoch, ``best.pt``) there *while* it trains, so
    that an interrupted run loses at most an epoch; a node output is saved only when the node
    returns, too late for that."""
    model_file, _ = train_experiment(
        model_input, config, Path(retrain["challenger_dir"]) / "checkpoints"
    )
    return model_file


def promote_if_better(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    registry: dict[str, Any] | None,
    model_input: CocoDataset,
    config: dict[str, Any],
    retrain: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """Evaluate challenger and champion (``None`` before the first promotion) on the current
    test split and decide. Returns the decision, the registry with it appended, and the models
    to save as new versions of the champion: ``{version: challenger}`` when promoted, else
    ``{}`` (nothing written, the champion stays as it is)."""
    challenger_metrics, _ = evaluate_experiment(challenger, model_input, config)
    champion_metrics = None
    if champion is not None:
        champion_metrics, _ = evaluate_experiment(champion, model_input, config)
    version = generate_timestamp()  # Kedro's version format: --load-versions accepts it
    decision, updated = record_decision(
        registry,
        challenger_metrics=challenger_metrics,
        champion_metrics=champion_metrics,
        metric=retrain.get("metric", "map_50"),
        margin=float(retrain.get("margin", 0.0)),
        dataset_fingerprint=model_input.fingerprint(),
        experiment=config["name"],
        version=version,
    )
    return decision, updated, ({version: challenger} if decision["promoted"] else {})
