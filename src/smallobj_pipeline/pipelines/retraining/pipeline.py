"""Wiring of scheduled retraining and of rollback (the functions are in :mod:`.nodes`, the files
in the catalog)."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    claim_champions,
    commit_registry,
    promote_if_better,
    release_champions,
    resolve_challenger_config,
    rollback_champion,
    train_challenger,
)

# the rollback pipeline's datasets are the retrain pipeline's
SHARED = {name: f"retrain.{name}" for name in ("registry", "champions", "legacy_champions")}


def create_pipeline(**kwargs) -> Pipeline:
    """Runs after the data pipeline (validation first: a failure stops before any training).
    ``champions`` and ``registry`` are read; ``promoted_model``/``promoted_record`` (the same
    folder as ``champions``) and then ``updated_registry`` (the same file as ``registry``) are
    written: a Kedro node cannot read and write one dataset. ``claim`` is held from before
    training until the registry is saved."""
    return Pipeline(
        [
            node(
                resolve_challenger_config,
                [
                    "params:experiment_defaults", "params:experiments", "params:retrain",
                    "dataset_stats",
                ],
                "retrain_config",
                name="resolve_challenger_config",
                tags=["retrain"],
            ),
            node(claim_champions, "params:retrain", "claim", name="claim_champions",
                 tags=["retrain"]),
            node(
                train_challenger,
                ["model_input_coco", "retrain_config", "params:retrain", "claim"],
                "challenger_model",
                name="train_challenger",
                tags=["retrain", "training"],
            ),
            node(
                promote_if_better,
                [
                    "challenger_model", "champions", "legacy_champions", "registry",
                    "model_input_coco", "retrain_config", "params:retrain", "claim",
                ],
                ["retrain_decision", "pending_registry", "promoted_model", "promoted_record"],
                name="promote_if_better",
                tags=["retrain", "evaluation"],
            ),
            node(
                commit_registry,
                ["pending_registry", "promoted_model", "promoted_record"],
                "updated_registry",
                name="commit_registry",
                tags=["retrain"],
            ),
            node(release_champions, ["claim", "updated_registry"], None,
                 name="release_champions", tags=["retrain"]),
        ],
        namespace="retrain",
        inputs={"model_input_coco", "dataset_stats"},
        parameters={"params:experiment_defaults", "params:experiments", "params:retrain"},
    )  # fmt: skip


def create_rollback_pipeline(**kwargs) -> Pipeline:
    """``kedro run --pipeline=rollback``: claim, restore the previous champion in the registry
    (a ``rollback`` decision appended), release. No model file is written or removed."""
    return Pipeline(
        [
            node(claim_champions, "params:retrain", "claim", name="claim_champions",
                 tags=["rollback"]),
            node(
                rollback_champion,
                ["registry", "champions", "legacy_champions", "params:retrain", "claim"],
                "updated_registry",
                name="rollback_champion",
                tags=["rollback"],
            ),
            node(release_champions, ["claim", "updated_registry"], None,
                 name="release_champions", tags=["rollback"]),
        ],
        namespace="rollback",
        inputs=SHARED,
        outputs={"updated_registry": "retrain.updated_registry"},
        parameters={"params:retrain"},
    )  # fmt: skip
