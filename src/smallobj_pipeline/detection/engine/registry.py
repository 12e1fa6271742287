"""Champion/challenger model registry for scheduled retraining, as data (no files here).

The registry (``registry.json`` in the catalog) holds the current champion (the version of the
champion model file, its metrics, the dataset fingerprint it was evaluated on) and the list of
every decision. A challenger is promoted only when it beats the champion on the configured metric
by more than the margin, evaluated on the same test split; the retrain pipeline then saves it as a
new version of the champion model (the older versions stay loadable).
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


def empty_registry() -> dict[str, Any]:
    return {"champion": None, "decisions": []}


def load_registry(path: str | Path) -> dict[str, Any]:
    """The registry saved at ``path`` (an empty one when there is no file yet)."""
    path = Path(path)
    if not path.is_file():
        return empty_registry()
    return json.loads(path.read_text(encoding="utf-8"))


def champion_file(registry: dict[str, Any], champion_dir: str | Path, where: str) -> Path:
    """The champion's model file: ``<champion_dir>/model.pt/<version>/model.pt`` (Kedro's
    versioned layout), or the ``model_path`` of a registry written before versioning. ``where``
    names the registry in the messages."""
    champion = registry.get("champion")
    if not champion:
        raise ConfigError(f"{where} names no champion yet: run `make retrain` first")
    if champion.get("version"):
        return Path(champion_dir) / CHAMPION_FILE / str(champion["version"]) / CHAMPION_FILE
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
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "experiment": experiment,
        "metric": metric,
        "margin": margin,
        "dataset_fingerprint": dataset_fingerprint,
        "challenger": {k: challenger_metrics.get(k) for k in SUMMARY_METRIC_KEYS},
        "champion": (
            {k: champion_metrics.get(k) for k in SUMMARY_METRIC_KEYS} if champion_metrics else None
        ),
        "promoted": promote,
        "reason": reason,
    }
    if promote:
        registry["champion"] = {
            "version": version,
            "experiment": experiment,
            "promoted_at": decision["time"],
            "dataset_fingerprint": dataset_fingerprint,
            "metrics": decision["challenger"],
        }
    registry.setdefault("decisions", []).append(decision)
    logger.info("Retrain decision: %s (%s)", "PROMOTED" if promote else "kept champion", reason)
    return decision, registry
