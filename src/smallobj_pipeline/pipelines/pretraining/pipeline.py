"""Wiring of backbone pretraining (the functions are in :mod:`.nodes`, the files in the catalog)."""

from kedro.pipeline import Pipeline, node

from .nodes import plot_pretrain_history, pretrain_backbone


def create_pipeline(**kwargs) -> Pipeline:
    """``model_input_coco`` (the data pipeline's output) -> classifier training -> backbone file,
    history CSV, summary JSON and the history plot the report embeds."""
    return Pipeline(
        [
            node(
                pretrain_backbone,
                ["model_input_coco", "params:pretrain", "dataset_stats"],
                ["pretrain_history", "pretrain_summary", "pretrained_backbones"],
                name="pretrain_backbone",
                tags=["pretraining"],
            ),
            node(
                plot_pretrain_history,
                ["pretrain_history", "params:pretrain"],
                "pretrain_history_plot",
                name="plot_pretrain_history",
                tags=["pretraining", "report"],
            ),
        ]
    )
