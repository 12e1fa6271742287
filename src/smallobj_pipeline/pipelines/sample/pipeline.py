from typing import Any

from kedro.pipeline import Pipeline, node

from smallobj_pipeline.detection.data.sample import generate_sample_dataset


def create_sample_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    sample = dict(dataset["sample"])
    root = sample.pop("root")
    generate_sample_dataset(root, **sample)
    return {"root": root, **sample}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                create_sample_dataset,
                "params:dataset",
                "sample_dataset_info",
                name="create_sample_dataset",
                tags=["data"],
            )
        ]
    )
