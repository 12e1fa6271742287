from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from .nodes import evaluate_model, resolve_config, train_model


def _named(func, **bound):
    wrapped = partial(func, **bound)
    update_wrapper(wrapped, func)
    return wrapped


def experiment_template(name: str) -> Pipeline:
    """The nodes of one experiment, before namespacing."""
    return Pipeline(
        [
            node(
                _named(resolve_config, name=name),
                ["params:experiment_defaults", "params:experiment", "dataset_stats"],
                "config",
                name="resolve_config",
                tags=["training"],
            ),
            node(
                train_model,
                ["model_input_coco", "config", "params:paths"],
                ["model", "history"],
                name="train_model",
                tags=["training"],
            ),
            node(
                evaluate_model,
                ["model", "model_input_coco", "config"],
                ["metrics", "predictions"],
                name="evaluate_model",
                tags=["evaluation"],
            ),
        ]
    )


def create_pipeline(experiment_names: list[str] | None = None, **kwargs) -> Pipeline:
    """One namespace per experiment (``--namespaces=NAME`` runs one)."""
    pipe = Pipeline([])
    for name in experiment_names or []:
        pipe += Pipeline(
            experiment_template(name),
            namespace=name,
            inputs={"model_input_coco", "dataset_stats"},
            parameters={
                "params:experiment_defaults": "params:experiment_defaults",
                "params:paths": "params:paths",
                "params:experiment": f"params:experiments.{name}",
            },
        )
    return pipe
