"""Champion/challenger model registry for scheduled retraining.

``registry.json`` holds the current champion (model path, its metrics, the dataset fingerprint
it was evaluated on) and the list of every decision. The champion's model file is replaced only
by an atomic copy of a challenger that beats it on the configured metric by more than the margin,
evaluated on the same test split.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..io import atomic_write, write_json

logger = logging.getLogger(__name__)


def load_registry(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        return {"champion": None, "decisions": []}
    return json.loads(path.read_text(encoding="utf-8"))


def decide(
    challenger: dict[str, float], champion: dict[str, float] | None, metric: str, margin: float
) -> tuple[bool, str]:
    """Promote when there is no champion, or the challenger beats it by strictly more than ``margin``."""
    new = float(challenger.get(metric, math.nan))
    if math.isnan(new):
        return False, f"challenger has no '{metric}'"
    if champion is None:
        return True, f"no champion yet; challenger {metric} = {new:.4f}"
    old = float(champion.get(metric, math.nan))
    if math.isnan(old) or new > old + margin:
        return True, f"challenger {metric} {new:.4f} > champion {old:.4f} + margin {margin:g}"
    return False, f"challenger {metric} {new:.4f} does not beat champion {old:.4f} + margin {margin:g}"


def record_decision(
    registry_path: str | Path,
    champion_path: str | Path,
    challenger_path: str | Path,
    challenger_metrics: dict[str, Any],
    champion_metrics: dict[str, Any] | None,
    metric: str,
    margin: float,
    dataset_fingerprint: str,
    experiment: str,
) -> dict[str, Any]:
    """Decide, copy the challenger over the champion if promoted (atomically), append the
    decision to the registry and return it."""
    registry = load_registry(registry_path)
    promote, reason = decide(challenger_metrics, champion_metrics, metric, margin)
    keys = ("map", "map_50", "map_75", "map_small", "iou_per_prediction", "iou_per_gt", "precision", "recall")
    decision = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "experiment": experiment,
        "metric": metric,
        "margin": margin,
        "dataset_fingerprint": dataset_fingerprint,
        "challenger": {k: challenger_metrics.get(k) for k in keys},
        "champion": {k: champion_metrics.get(k) for k in keys} if champion_metrics else None,
        "promoted": promote,
        "reason": reason,
    }
    if promote:
        champion_path = Path(champion_path)
        atomic_write(champion_path, lambda tmp: shutil.copyfile(challenger_path, tmp))
        registry["champion"] = {
            "model_path": str(champion_path),
            "experiment": experiment,
            "promoted_at": decision["time"],
            "dataset_fingerprint": dataset_fingerprint,
            "metrics": decision["challenger"],
        }
    registry.setdefault("decisions", []).append(decision)
    write_json(registry_path, registry)
    logger.info("Retrain decision: %s (%s)", "PROMOTED" if promote else "kept champion", reason)
    return decision
