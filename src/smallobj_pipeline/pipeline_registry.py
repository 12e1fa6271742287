"""Project pipelines.

- ``data``: load (the bundled sample is created when needed) -> validate -> split -> statistics.
- ``train``: ``data`` + augmentation preview + one namespace per declared experiment
  (resolve config -> train -> evaluate) + report. The main job.
- ``report``: rebuilds the report from saved outputs, without training.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from smallobj_pipeline.experiments import experiment_names
from smallobj_pipeline.pipelines import data_processing, reporting, training


def register_pipelines() -> dict[str, Pipeline]:
    names = experiment_names()
    data = data_processing.create_pipeline()
    experiments = training.create_pipeline(names)
    pipelines = {
        "data": data,
        "train": data + experiments + reporting.create_pipeline(names),
        "report": reporting.create_pipeline(),
    }
    pipelines["__default__"] = pipelines["train"]
    return pipelines
