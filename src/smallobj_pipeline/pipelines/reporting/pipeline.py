"""Wiring of the report (the functions are in :mod:`.nodes`, the files in the catalog)."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from .nodes import KINDS, build_report, collect_experiments, preview_augmentation

SAVED = [
    "experiment_metrics",
    "experiment_histories",
    "experiment_configs",
    "experiment_predictions",
]


def create_pipeline(experiment_names: list[str] | None = None, **kwargs) -> Pipeline:
    """With ``experiment_names`` (the train pipeline) their outputs are inputs of the report, so
    it runs after their evaluations; every other experiment saved earlier is read through the
    partitioned ``experiment_*`` datasets. Without (``kedro run --pipeline=report``) the report is
    rebuilt from what is saved."""
    names = tuple(experiment_names or ())
    collect = update_wrapper(partial(collect_experiments, names=names), collect_experiments)
    fresh = [f"{name}.{kind}" for name in names for kind in KINDS]
    return Pipeline(
        [
            node(
                preview_augmentation,
                ["model_input_coco", "params:experiment_defaults", "dataset_stats"],
                "augmentation_preview",
                name="preview_augmentation",
                tags=["augmentation", "report"],
            ),
            node(
                collect,
                ["params:reporting", *SAVED, *fresh],
                "experiment_runs",
                name="collect_experiments",
                tags=["report"],
            ),
            node(
                build_report,
                [
                    "experiment_runs", "params:reporting", "dataset_stats", "model_input_coco",
                    "dataset_stats_plot", "augmentation_preview", "pretrain_history_plot",
                ],
                ["experiments_table", "report_html", "report_plots"],
                name="build_report",
                tags=["report"],
            ),
        ]
    )  # fmt: skip
