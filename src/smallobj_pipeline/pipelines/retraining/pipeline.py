"""Wiring of scheduled retraining (the functions are in :mod:`.nodes`, the files in the catalog)."""

from kedro.pipeline import Pipeline, node

from .nodes import promote_if_better, resolve_challenger_config, train_challenger


def create_pipeline(**kwargs) -> Pipeline:
    """Runs after the data pipeline (validation first: a failure stops before any training).
    ``champion_model`` and ``registry`` are read, ``promoted_model`` and ``updated_registry``
    written: the same files under two names, as a Kedro node cannot read and write one dataset."""
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
            node(
                train_challenger,
                ["model_input_coco", "retrain_config", "params:retrain"],
                "challenger_model",
                name="train_challenger",
                tags=["retrain", "training"],
            ),
            node(
                promote_if_better,
                [
                    "challenger_model", "champion_model", "registry", "model_input_coco",
                    "retrain_config", "params:retrain",
                ],
                ["retrain_decision", "updated_registry", "promoted_model"],
                name="promote_if_better",
                tags=["retrain", "evaluation"],
            ),
        ],
        namespace="retrain",
        inputs={"model_input_coco", "dataset_stats"},
        parameters={"params:experiment_defaults", "params:experiments", "params:retrain"},
    )  # fmt: skip
