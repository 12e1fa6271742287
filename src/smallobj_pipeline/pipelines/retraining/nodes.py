"""Thin nodes over :mod:`smallobj_pipeline.detection.engine.experiment` and ``.registry``: the
champions (by version, loaded lazily) and the registry come in from the catalog; the decision,
the promoted model with its record (``champions/<version>/{model.pt,metrics.json}``) and then the
updated registry go out to it. The registry is written last, by its own node that takes the
saved champion files as input, so it never names a champion whose files are not saved; every
file is written atomically, so a run killed at any point leaves the previous registry and
champion as they were. :mod:`.lock` keeps a second retrain or rollback out meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedro.io.core import generate_timestamp

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.engine.experiment import (
    evaluate_experiment,
    resolve_experiment,
    train_experiment,
)
from smallobj_pipeline.detection.engine.registry import (
    CHAMPIONS_DIR,
    record_decision,
    record_rollback,
)
from smallobj_pipeline.detection.errors import ConfigError

from . import lock

Loaders = dict[str, Callable[[], Any]]
REGISTRY = "the retrain registry (catalog entry retrain.registry)"


def claim_champions(retrain: dict[str, Any]) -> dict[str, str]:
    """First node of retrain and rollback: claim ``retrain.lock_dir`` (see :mod:`.lock`); a
    second run is refused here, before it trains or changes anything."""
    if not retrain.get("lock_dir"):
        raise ConfigError(
            "retrain.lock_dir is not set: conf/base/parameters_retrain.yml declares it (the "
            "models folder); an environment that overrides `retrain` must keep it"
        )
    return lock.claim(retrain["lock_dir"])


def release_champions(claim: dict[str, str], registry: dict[str, Any]) -> None:
    """Last node: release the claim once ``registry`` (the updated one) is saved."""
    lock.release(claim)


def champion_loader(
    registry: dict[str, Any] | None, champions: Loaders, legacy_champions: Loaders
) -> Callable[[], Any] | None:
    """The loader of the champion the registry names (``None`` before the first promotion):
    ``champions/<version>/model.pt``, else the pre-``champions/`` versioned file."""
    champion = (registry or {}).get("champion")
    if not champion:
        return None
    version = champion.get("version")
    if not version:
        raise ConfigError(
            f"{REGISTRY} names its champion by model_path ({champion.get('model_path')}), as "
            f"written before versioned champions: copy that file to <models_dir>/"
            f"{CHAMPIONS_DIR}/<version>/model.pt (a version such as 2024-01-01T00.00.00.000Z) "
            f"and replace model_path by that version in registry.json"
        )
    loader = champions.get(version) or legacy_champions.get(version)
    if loader is None:
        raise ConfigError(
            f"{REGISTRY} names champion version {version}, but there is no "
            f"{CHAMPIONS_DIR}/{version}/model.pt in the models folder (`dvc pull` restores "
            f"pushed champions); known versions: {sorted(champions) or 'none'}"
        )
    return loader


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
    model_input: CocoDataset, config: dict[str, Any], retrain: dict[str, Any], claim: dict
) -> dict[str, Any]:
    """The challenger's model file (saved by the catalog as ``retrain.challenger_model``).
    ``claim`` (unused) orders it after :func:`claim_champions`.

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
    champions: Loaders,
    legacy_champions: Loaders,
    registry: dict[str, Any] | None,
    model_input: CocoDataset,
    config: dict[str, Any],
    retrain: dict[str, Any],
    claim: dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Evaluate challenger and champion (none before the first promotion) on the current test
    split and decide (``claim``, unused, keeps it in the claim's Airflow task). Returns the
    decision, the registry with it appended (saved by :func:`commit_registry`), and the model and
    record to save under ``champions/<version>/``: ``{version: ...}`` when promoted, else ``{}``
    (nothing written, the champion stays)."""
    challenger_metrics, _ = evaluate_experiment(challenger, model_input, config)
    champion_metrics = None
    load_champion = champion_loader(registry, champions, legacy_champions)
    if load_champion is not None:
        champion_metrics, _ = evaluate_experiment(load_champion(), model_input, config)
    version = generate_timestamp()  # Kedro's version format: sortable, safe as a folder name
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
    if not decision["promoted"]:
        return decision, updated, {}, {}
    return decision, updated, {version: challenger}, {version: updated["champion"]}


def commit_registry(
    registry: dict[str, Any], saved_models: Loaders, saved_records: Loaders
) -> dict[str, Any]:
    """The registry to save, once the promoted champion's files are saved (``saved_models`` and
    ``saved_records`` are ``champions/`` read back): a registry naming a champion whose files
    are missing is never written."""
    decision = registry["decisions"][-1]
    version = decision.get("version")
    if decision.get("promoted") and (version not in saved_models or version not in saved_records):
        raise RuntimeError(
            f"champion {version} was promoted but {CHAMPIONS_DIR}/{version}/model.pt or "
            f"metrics.json is not saved: {REGISTRY} is left unchanged"
        )
    return registry


def rollback_champion(
    registry: dict[str, Any] | None,
    champions: Loaders,
    legacy_champions: Loaders,
    retrain: dict[str, Any],
    claim: dict[str, str],
) -> dict[str, Any]:
    """The registry with the champion before the current one restored and a ``rollback``
    decision appended (``retrain.rollback_reason``). The restored model is loaded first, so a
    missing or unreadable file stops the rollback with the registry unchanged; without an
    earlier champion it stops with :class:`~..registry.NoPreviousChampion`."""
    _, updated = record_rollback(
        registry, str(retrain.get("rollback_reason") or "manual rollback"), REGISTRY
    )
    champion_loader(updated, champions, legacy_champions)()  # the restored file must load
    return updated
