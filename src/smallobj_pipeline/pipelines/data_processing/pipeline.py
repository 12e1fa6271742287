"""Wiring of the data pipeline (the functions are in :mod:`.nodes`, the files in the catalog)."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    dataset_statistics,
    enforce_validation,
    load_raw_dataset,
    split_coco,
    tile_coco,
    validate_coco,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                load_raw_dataset, "params:dataset", "raw_coco",
                name="load_raw_dataset", tags=["data"],
            ),
            node(
                validate_coco,
                ["raw_coco", "params:validation", "params:intensity"],
                ["validation_report", "validation_verdict"],
                name="validate_dataset",
                tags=["data", "validation"],
            ),
            node(
                enforce_validation, "validation_verdict", "validated_coco",
                name="enforce_validation", tags=["data", "validation"],
            ),
            node(
                split_coco, ["validated_coco", "params:split"], "split_coco",
                name="split_dataset", tags=["data"],
            ),
            node(
                tile_coco, ["split_coco", "params:tiling"], ["model_input_coco", "tiling_plan"],
                name="tile_dataset", tags=["data"],
            ),
            node(
                dataset_statistics,
                ["model_input_coco", "params:intensity"],
                ["dataset_stats", "dataset_stats_plot"],
                name="dataset_statistics",
                tags=["data", "report"],
            ),
        ]
    )  # fmt: skip
