from kedro.pipeline import Pipeline, node

from .nodes import predict_images


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                predict_images,
                "params:predict",
                "predict_output",
                name="predict_images",
                tags=["predict"],
            )
        ]
    )
