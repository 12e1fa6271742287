"""DVC stages and kedro-viz on a temporary copy of the project with a tiny configuration.

`dvc repro` runs the whole chain, a second `dvc repro` does nothing, `dvc exp run -S` on one
experiment's parameter re-runs only that experiment (and the report), metrics and plots are
registered, `dvc push` works offline; `kedro viz build` exports the graph with one namespace per
experiment; the committed Airflow DAGs are what kedro-airflow generates now, and the study DAG runs
the data once, one task per experiment, then the report."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(project):
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(project / "src"),
            "KEDRO_DISABLE_TELEMETRY": "1",
            "DO_NOT_TRACK": "1",
            "DVC_NO_ANALYTICS": "1",
            "GX_ANALYTICS_ENABLED": "False",
            "MPLBACKEND": "Agg",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }
    )
    return env


def sh(project, *cmd, check=True):
    proc = subprocess.run(
        cmd, cwd=project, env=_env(project), capture_output=True, text=True, timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout + proc.stderr


def _tiny_copy(tmp_path):
    project = tmp_path / "proj"
    for item in ("src", "conf", "dvc.yaml", ".dvcignore", "pyproject.toml", ".gitignore"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(
            src,
            project / item if src.is_dir() else project,
            **({"ignore": shutil.ignore_patterns("__pycache__", "local")} if src.is_dir() else {}),
        )
    (project / "conf/local").mkdir(exist_ok=True)
    shutil.copytree(REPO / ".dvc", project / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    for d in ("01_raw", "05_model_input", "06_models", "07_model_output", "08_reporting"):
        (project / "data" / d).mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((project / "conf/base/parameters_data.yml").read_text())
    data["dataset"]["sample"].update(
        {"num_images": 8, "image_size": 96, "seed": 2, "min_objects": 3, "max_objects": 6}
    )
    data["split"]["ratios"] = {"train": 0.5, "val": 0.25, "test": 0.25}
    (project / "conf/base/parameters_data.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    exp = yaml.safe_load((project / "conf/base/parameters_experiments.yml").read_text())
    exp["experiment_defaults"]["training"].update({"epochs": 1, "batch_size": 2, "warmup_iters": 0})
    exp["experiment_defaults"]["model"].update(
        {"box_batch_size_per_image": 32, "rpn_post_nms_top_n_test": 100}
    )
    exp["experiments"] = {"tiny_a": {"description": "a"}, "tiny_b": {"training": {"lr": 0.005}}}
    (project / "conf/base/parameters_experiments.yml").write_text(
        yaml.safe_dump(exp, sort_keys=False)
    )
    sh(project, "git", "init", "-q")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "init")
    return project


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    project = _tiny_copy(tmp_path_factory.mktemp("dvc"))
    out = sh(project, "dvc", "repro")
    return project, out


def test_dvc_repro_runs_every_stage_then_nothing(dvc_project):
    project, first = dvc_project
    for stage in ("sample", "data", "train@tiny_a", "train@tiny_b", "report"):
        assert f"Running stage '{stage}'" in first, stage
    assert (project / "data/08_reporting/report.html").is_file()
    second = sh(project, "dvc", "repro")
    assert "Running stage" not in second and "up to date" in second


def test_dvc_metrics_and_plots_list_every_experiment(dvc_project):
    project, _ = dvc_project
    shown = json.loads(sh(project, "dvc", "metrics", "show", "--json"))
    files = json.dumps(shown)
    assert "tiny_a/metrics.json" in files and "tiny_b/metrics.json" in files
    assert "map_50" in files
    plots = sh(project, "dvc", "plots", "show", "--json")
    assert "tiny_a/history.csv" in plots and "tiny_b/history.csv" in plots


def test_dvc_exp_run_on_one_experiment_reruns_only_it(dvc_project):
    project, _ = dvc_project
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "lock")
    out = sh(
        project,
        "dvc",
        "exp",
        "run",
        "-S",
        "conf/base/parameters_experiments.yml:+experiments.tiny_b.training.epochs=2",
    )
    assert "Running stage 'train@tiny_b'" in out
    assert "Running stage 'train@tiny_a'" not in out and "Running stage 'data'" not in out
    metrics = json.loads((project / "data/08_reporting/tiny_b/metrics.json").read_text())
    assert metrics["epochs_run"] == 2


def test_dvc_push_to_the_default_local_remote(dvc_project):
    project, _ = dvc_project
    sh(project, "dvc", "push")
    stored = [p for p in (project / ".dvc-storage").rglob("*") if p.is_file()]
    assert len(stored) > 10


def test_kedro_viz_build_shows_each_experiment_as_a_namespace(tmp_path):
    project = _tiny_copy(tmp_path)
    sh(project, "kedro", "viz", "build")
    main = json.loads((project / "build/api/main").read_text())
    tasks = [n for n in main["nodes"] if n.get("type") == "task"]
    grouped = {(n["name"], tuple(n.get("modular_pipelines") or ())) for n in tasks}
    for name in ("tiny_a", "tiny_b"):  # each experiment is a collapsible group with its three steps
        assert {
            ("resolve_config", (name,)),
            ("train_model", (name,)),
            ("evaluate_model", (name,)),
        } <= grouped
        assert len(main["modular_pipelines"][name]["children"]) >= 3
    assert {("validate_dataset", ()), ("build_report", ())} <= grouped
    tags = {n["name"]: set(n["tags"]) for n in tasks}
    assert "validation" in tags["validate_dataset"] and "training" in tags["train_model"]


def test_committed_airflow_dag_matches_the_retrain_pipeline(tmp_path):
    """ops/airflow/ is what kedro-airflow generates for the current retrain pipeline (no Airflow
    needed)."""
    sh(
        REPO,
        "kedro",
        "airflow",
        "create",
        "--pipelines=retrain",
        "--group-by",
        "memory",
        "--target-dir",
        str(tmp_path),
    )
    generated = (tmp_path / "smallobj_pipeline_retrain_dag.py").read_text()
    committed = (REPO / "ops/airflow/smallobj_pipeline_retrain_dag.py").read_text()
    assert generated == committed, (
        "regenerate: kedro airflow create --pipelines=retrain --group-by memory "
        "--target-dir ops/airflow"
    )
    assert 'schedule="0 3 * * *"' in committed and "retrain-promote-if-better" in committed


# The study DAG, generated exactly as `make airflow` does (tests/test_dvc_viz.py keeps the two in
# step: the Makefile's airflow recipe must contain these arguments).
STUDY_DAG = "ops/airflow/smallobj_pipeline_study_dag.py"
STUDY_ARGS = (
    "--pipelines=study --group-by namespace --target-dir ops/airflow "
    "--jinja-file ops/airflow/dag_template.j2"
)


def _dag_graph(text):
    """(task ids, namespace each task runs, `>>` edges) parsed from a generated DAG file."""
    ids = re.findall(r'@task\(task_id="([^"]+)"\)', text)
    runs = re.findall(r"_run_kedro_node\((?:namespaces|node_names)=\[([^\]]*)\]\)", text)
    edges = set(re.findall(r'tasks\["([^"]+)"\] >> tasks\["([^"]+)"\]', text))
    return ids, dict(zip(ids, runs, strict=True)), edges


def test_committed_study_dag_matches_a_fresh_generation(tmp_path):
    """ops/airflow/smallobj_pipeline_study_dag.py is what `make airflow` generates now, with a
    dag_id of its own (Airflow keeps only one of two DAG files sharing a dag_id)."""
    args = STUDY_ARGS.replace("ops/airflow ", f"{tmp_path} ").split()
    sh(REPO, "kedro", "airflow", "create", *args)
    generated = (tmp_path / Path(STUDY_DAG).name).read_text()
    assert generated == (REPO / STUDY_DAG).read_text(), "regenerate the DAGs: make airflow"
    makefile = " ".join((REPO / "Makefile").read_text().replace("\\\n", " ").split())
    assert f"kedro airflow create {STUDY_ARGS}" in makefile
    assert "kedro airflow create --pipelines=retrain --group-by memory" in makefile
    dag_ids = [
        re.search(r'dag_id="([^"]+)"', p.read_text()).group(1)
        for p in sorted((REPO / "ops/airflow").glob("*.py"))
    ]
    assert len(dag_ids) == len(set(dag_ids)) == 2, dag_ids
    assert 'dag_id="smallobj-pipeline-study"' in generated and "schedule=None," in generated


def test_study_dag_runs_data_once_then_one_task_per_experiment_then_the_report():
    from smallobj_pipeline.experiments import experiment_names

    names = experiment_names()
    assert len(names) >= 2
    ids, runs, edges = _dag_graph((REPO / STUDY_DAG).read_text())
    experiments = {name.replace("_", "-"): name for name in names}
    assert sorted(ids) == sorted(["data", "report", *experiments])  # nothing else, each once
    assert runs["data"] == '"data"' and runs["report"] == '"report"'
    for task, name in experiments.items():  # one experiment (its whole namespace) per task
        assert runs[task] == f'"{name}"'
        assert ("data", task) in edges and (task, "report") in edges
    assert not any(a in experiments and b in experiments for a, b in edges)  # run side by side
    assert {b for a, b in edges if a == "report"} == set()
    assert {a for a, b in edges if b == "data"} == set()


def test_study_dag_tasks_share_no_in_memory_dataset(tmp_path):
    """Each Airflow task is its own process (often another machine): a dataset passed between
    two tasks must be a file. kedro-airflow's MemoryDataset grouping must not cross tasks."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro_airflow.grouping import group_memory_nodes
    from kedro_project import chdir, make_project

    project = make_project(tmp_path)
    with chdir(project):
        bootstrap_project(project)
        with KedroSession.create(project_path=project) as session:
            catalog = session.load_context().catalog
        study = pipelines["study"]
        groups = group_memory_nodes(catalog, study)
    namespace = {n.name: (n.namespace or n.name).split(".")[0] for n in study.nodes}
    assert {namespace[name] for name in namespace} >= {"data", "report"}
    for group in groups:
        assert len({namespace[name] for name in group.nodes}) == 1, group.nodes
