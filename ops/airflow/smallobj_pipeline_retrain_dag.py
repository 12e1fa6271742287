from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, task

from kedro.framework.session import KedroSession
from kedro.framework.project import configure_project

# Kedro settings required to run your pipeline
env = "local"
pipeline_name = "retrain"
project_path = Path.cwd()
package_name = "smallobj_pipeline"
conf_source = "" or Path.cwd() / "conf"


def _run_kedro_node(node_names=None, namespaces=None):
    """Run a Kedro pipeline slice. Pass node_names for regular node groups or namespaces for namespace groups."""
    configure_project(package_name)
    with KedroSession.create(project_path=project_path, env=env, conf_source=conf_source) as session:
        if namespaces is not None:
            session.run(pipeline_names=[pipeline_name], namespaces=namespaces)
        else:
            session.run(pipeline_names=[pipeline_name], node_names=node_names)


@dag(
    dag_id="smallobj-pipeline",
    start_date=datetime(2026,1,1),
    max_active_runs=1,
    schedule="0 3 * * *",
    catchup=False,
    default_args=dict(
        owner="airflow",
        depends_on_past=False,
        email_on_failure=False,
        email_on_retry=False,
        retries=0,
        retry_delay=timedelta(minutes=5)
    ),
)
def smallobj_pipeline():

    @task(task_id="load-raw-dataset-validate-dataset-enforce-validation-split-dataset-tile-dataset")
    def load_raw_dataset_validate_dataset_enforce_validation_split_dataset_tile_dataset():
        _run_kedro_node(node_names=["load_raw_dataset", "validate_dataset", "enforce_validation", "split_dataset", "tile_dataset"])

    @task(task_id="retrain-claim-champions-retrain-train-challenger-retrain-promote-if-better-retrain-commit-registry-retrain-release-champions")
    def retrain_claim_champions_retrain_train_challenger_retrain_promote_if_better_retrain_commit_registry_retrain_release_champions():
        _run_kedro_node(node_names=["retrain.claim_champions", "retrain.train_challenger", "retrain.promote_if_better", "retrain.commit_registry", "retrain.release_champions"])

    @task(task_id="dataset-statistics")
    def dataset_statistics():
        _run_kedro_node(node_names=["dataset_statistics"])

    @task(task_id="retrain-resolve-challenger-config")
    def retrain_resolve_challenger_config():
        _run_kedro_node(node_names=["retrain.resolve_challenger_config"])

    tasks = {
        "load-raw-dataset-validate-dataset-enforce-validation-split-dataset-tile-dataset": load_raw_dataset_validate_dataset_enforce_validation_split_dataset_tile_dataset(),
        "retrain-claim-champions-retrain-train-challenger-retrain-promote-if-better-retrain-commit-registry-retrain-release-champions": retrain_claim_champions_retrain_train_challenger_retrain_promote_if_better_retrain_commit_registry_retrain_release_champions(),
        "dataset-statistics": dataset_statistics(),
        "retrain-resolve-challenger-config": retrain_resolve_challenger_config(),
    }
    tasks["load-raw-dataset-validate-dataset-enforce-validation-split-dataset-tile-dataset"] >> tasks["retrain-claim-champions-retrain-train-challenger-retrain-promote-if-better-retrain-commit-registry-retrain-release-champions"]
    tasks["retrain-resolve-challenger-config"] >> tasks["retrain-claim-champions-retrain-train-challenger-retrain-promote-if-better-retrain-commit-registry-retrain-release-champions"]
    tasks["load-raw-dataset-validate-dataset-enforce-validation-split-dataset-tile-dataset"] >> tasks["dataset-statistics"]
    tasks["dataset-statistics"] >> tasks["retrain-resolve-challenger-config"]


smallobj_pipeline()