"""Champion/challenger model registry for scheduled retraining, as data (no files here).

The registry (``registry.json`` in the catalog) holds the current champion (its version, metrics
and the dataset fingerprint it was evaluated on), ``history`` (the champions in the order they
became champion, the current one last; a rollback removes the last) and every decision, of kind
``retrain`` (promoted or not) or ``rollback``. A challenger is promoted only when it beats the
champion on the configured metric by more than the margin, evaluated on the same test split; the
retrain pipeline then saves it as ``<models_dir>/champions/<version>/model.pt`` with its
``metrics.json`` (older champions stay, so a rollback just points the registry back at one).

Layouts read for older registries: ``<models_dir>/champion/model.pt/<version>/model.pt`` (Kedro's
versioned dataset, before ``champions/``) and a ``model_path`` entry (before versioning); a
registry without ``history`` starts its history at its current champion.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..constants import SUMMARY_METRIC_KEYS
from ..errors import ConfigError

logger = logging.getLogger(__name__)

CHAMPION_FILE = "model.pt"
CHAMPIONS_DIR = "champions"  # <models_dir>/champions/<version>/{model.pt, metrics.json}


class NoPreviousChampion(ConfigError):
    """A rollback was asked for but the registry has no earlier champion to restore."""


def empty_registry() -> dict[str, Any]:
    return {"champion": None, "history": [], "decisions": []}


def champion_history(registry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The champions in the order they became champion, the current one last (a copy). A registry
    written before ``history`` existed starts it at its current champion."""
    registry = registry or {}
    if "history" in registry:
        return copy.deepcopy(list(registry["history"]))
    champion = registry.get("champion")
    return [copy.deepcopy(champion)] if champion else []


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_registry(path: str | Path) -> dict[str, Any]:
    """The registry saved at ``path`` (an empty one when there is no file yet)."""
    path = Path(path)
    if not path.is_file():
        return empty_registry()
    return json.loads(path.read_text(encoding="utf-8"))


def champion_file(registry: dict[str, Any], champion_dir: str | Path, where: str) -> Path:
    """The champion's model file. ``champion_dir`` is ``<models_dir>/champion``: the file is
    ``<models_dir>/champions/<version>/model.pt``, or, for a champion promoted before
    ``champions/`` existed, ``<champion_dir>/model.pt/<version>/model.pt`` (Kedro's versioned
    layout), or the ``model_path`` of a registry written before versioning. ``where`` names the
    registry in the messages."""
    champion = registry.get("champion")
    if not champion:
        raise ConfigError(f"{where} names no champion yet: run `make retrain` first")
    if champion.get("version"):
        version = str(champion["version"])
        current = Path(champion_dir).parent / CHAMPIONS_DIR / version / CHAMPION_FILE
        legacy = Path(champion_dir) / CHAMPION_FILE / version / CHAMPION_FILE
        return legacy if legacy.is_file() and not current.is_file() else current
    return Path(champion["model_path"])


def decide(
    challenger: dict[str, float], champion: dict[str, float] | None, metric: str, margin: float
) -> tuple[bool, str]:
    """Promote when there is no champion, or the challenger beats it by strictly more than
    ``margin``."""
    new = float(challenger.get(metric, math.nan))
    if math.isnan(new):
        return False, f"challenger has no '{metric}'"
    if champion is None:
        return True, f"no champion yet; challenger {metric} = {new:.4f}"
    old = float(champion.get(metric, math.nan))
    if math.isnan(old) or new > old + margin:
        return True, f"challenger {metric} {new:.4f} > champion {old:.4f} + margin {margin:g}"
    return (
        False,
        f"challenger {metric} {new:.4f} does not beat champion {old:.4f} + margin {margin:g}",
    )


def record_decision(
    registry: dict[str, Any] | None,
    challenger_metrics: dict[str, Any],
    champion_metrics: dict[str, Any] | None,
    metric: str,
    margin: float,
    dataset_fingerprint: str,
    experiment: str,
    version: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decide and return ``(decision, updated registry)``: the decision appended and, when the
    challenger is promoted, the champion entry naming ``version`` (the version the caller saves
    the challenger under). ``registry`` itself is not changed."""
    registry = copy.deepcopy(registry) if registry else empty_registry()
    promote, reason = decide(challenger_metrics, champion_metrics, metric, margin)
    decision = {
        "kind": "retrain",
        "time": _now(),
        "experiment": experiment,
        "metric": metric,
        "margin": margin,
        "dataset_fingerprint": dataset_fingerprint,
        "challenger": {k: challenger_metrics.get(k) for k in SUMMARY_METRIC_KEYS},
        "champion": (
            {k: champion_metrics.get(k) for k in SUMMARY_METRIC_KEYS} if champion_metrics else None
        ),
        "promoted": promote,
        "version": version if promote else None,
        "reason": reason,
    }
    if promote:
        earlier = champion_history(registry)
        registry["champion"] = {
            "version": version,
            "experiment": experiment,
            "promoted_at": decision["time"],
            "dataset_fingerprint": dataset_fingerprint,
            "metric": metric,
            "metrics": decision["challenger"],
            "reason": reason,
        }
        registry["history"] = [*earlier, copy.deepcopy(registry["champion"])]
    registry.setdefault("decisions", []).append(decision)
    logger.info("Retrain decision: %s (%s)", "PROMOTED" if promote else "kept champion", reason)
    return decision, registry


def record_rollback(
    registry: dict[str, Any] | None, reason: str, where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore the champion before the current one: returns ``(decision, updated registry)``,
    the decision of kind ``rollback`` (from and to version, time, reason) appended, the current
    champion dropped from ``history``. ``registry`` itself is not changed. Raises
    :class:`NoPreviousChampion` (naming ``where``, the registry) when there is none."""
    registry = copy.deepcopy(registry) if registry else empty_registry()
    current = registry.get("champion")
    if not current:
        raise NoPreviousChampion(
            f"cannot roll back: {where} names no champion yet (run `make retrain` first)"
        )
    history = champion_history(registry)
    if len(history) < 2:
        raise NoPreviousChampion(
            f"cannot roll back: champion {current.get('version') or current.get('model_path')} "
            f"is the only one in the history of {where} (no earlier champion was promoted, or "
            f"the earlier ones were rolled back already); the champion is unchanged"
        )
    previous = history[-2]
    decision = {
        "kind": "rollback",
        "time": _now(),
        "from_version": current.get("version"),
        "to_version": previous.get("version"),
        "reason": reason,
    }
    registry["champion"] = {**copy.deepcopy(previous), "restored_at": decision["time"]}
    registry["history"] = history[:-1]
    registry.setdefault("decisions", []).append(decision)
    logger.warning(
        "Rolled back the champion from %s to %s (%s)",
        decision["from_version"],
        decision["to_version"],
        reason,
    )
    return decision, registry
