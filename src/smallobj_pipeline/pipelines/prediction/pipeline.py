from kedro.pipeline import Pipeline, node

from .nodes import predict_images


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                predict_images,
                "params:predict",
                ["predict_results", "predict_images_index", "predict_drawings"],
                name="predict_images",
                tags=["predict"],
            )
        ]
    )
