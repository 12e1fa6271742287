"""Project pipelines.

- ``sample``: (re)generate the bundled sample dataset (the first DVC stage).
- ``data``: load (the bundled sample is created when needed) -> validate -> split -> statistics.
- ``train``: ``data`` + augmentation preview + one namespace per declared experiment
  (resolve config -> train -> evaluate) + report. The main job.
- ``report``: rebuilds the report from saved outputs, without training.
- ``retrain``: ``data`` + train the production experiment as a challenger + promote it over the
  champion only if it is better on the same test split (``data/06_models/registry.json``).
- ``rollback``: restore the previous champion (a ``rollback`` decision in the registry).
- ``predict``: a trained model (experiment or champion) on a folder of images, sliced when large.
- ``pretrain_backbone``: ``data`` + a ResNet pretrained as a classifier (in-domain crops or an
  image folder), saved to ``data/06_models/backbones/NAME.pt`` for ``pretrained: backbone``.
- ``study``: ``train`` with the data stage in namespace ``data`` and the report in ``report``
  (dataset names unchanged), for schedulers that make one task per namespace: kedro-airflow
  ``--group-by namespace`` gives data -> one task per experiment -> report (``make airflow``).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from smallobj_pipeline.experiments import experiment_names
from smallobj_pipeline.pipelines import (
    data_processing,
    prediction,
    pretraining,
    reporting,
    retraining,
    sample,
    training,
)


def register_pipelines() -> dict[str, Pipeline]:
    names = experiment_names()
    data = data_processing.create_pipeline()
    experiments = training.create_pipeline(names)
    pipelines = {
        "sample": sample.create_pipeline(),
        "data": data,
        "train": data + experiments + reporting.create_pipeline(names),
        "report": reporting.create_pipeline(),
        "predict": prediction.create_pipeline(),
        "retrain": data + retraining.create_pipeline(),
        "rollback": retraining.create_rollback_pipeline(),
        "pretrain_backbone": data + pretraining.create_pipeline(),
        "study": Pipeline(data, namespace="data", prefix_datasets_with_namespace=False)
        + experiments
        + Pipeline(
            reporting.create_pipeline(names),
            namespace="report",
            prefix_datasets_with_namespace=False,
        ),
    }
    pipelines["__default__"] = pipelines["train"]
    return pipelines
