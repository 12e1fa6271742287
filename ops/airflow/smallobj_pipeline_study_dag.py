from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, task

from kedro.framework.session import KedroSession
from kedro.framework.project import configure_project

# Kedro settings required to run your pipeline
env = "local"
pipeline_name = "study"
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
    dag_id="smallobj-pipeline-study",
    start_date=datetime(2026,1,1),
    max_active_runs=1,
    schedule=None,
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
def smallobj_pipeline_study():

    @task(task_id="data")
    def data():
        _run_kedro_node(namespaces=["data"])

    @task(task_id="r18-masks")
    def r18_masks():
        _run_kedro_node(namespaces=["r18_masks"])

    @task(task_id="r18-small-object")
    def r18_small_object():
        _run_kedro_node(namespaces=["r18_small_object"])

    @task(task_id="r18-torchvision-anchors")
    def r18_torchvision_anchors():
        _run_kedro_node(namespaces=["r18_torchvision_anchors"])

    @task(task_id="report")
    def report():
        _run_kedro_node(namespaces=["report"])

    tasks = {
        "data": data(),
        "r18-masks": r18_masks(),
        "r18-small-object": r18_small_object(),
        "r18-torchvision-anchors": r18_torchvision_anchors(),
        "report": report(),
    }
    tasks["data"] >> tasks["r18-masks"]
    tasks["data"] >> tasks["r18-small-object"]
    tasks["data"] >> tasks["r18-torchvision-anchors"]
    tasks["data"] >> tasks["report"]
    tasks["r18-masks"] >> tasks["report"]
    tasks["r18-small-object"] >> tasks["report"]
    tasks["r18-torchvision-anchors"] >> tasks["report"]


smallobj_pipeline_study()