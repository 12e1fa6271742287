from kedro.pipeline import Pipeline, node

from .nodes import build_report, preview_augmentation


def create_pipeline(experiment_names: list[str] | None = None, **kwargs) -> Pipeline:
    """With ``experiment_names`` the report waits for their evaluations (train pipeline);
    without, it rebuilds from whatever is on disk (``kedro run --pipeline=report``)."""
    after = ["augmentation_preview", *(f"{name}.metrics" for name in experiment_names or [])]
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
                build_report,
                ["params:reporting", *after],
                ["experiments_table", "report_html", "report_plots"],
                name="build_report",
                tags=["report"],
            )
        ]
    )
