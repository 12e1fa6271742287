"""Run the real Kedro project in an isolated copy (conf + pyproject) under a temporary folder.

Relative data paths resolve inside that folder, so tests never touch the repo's data/.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

REPO = Path(__file__).resolve().parents[1]


def make_project(tmp_path: Path, local_params: dict[str, Any] | None = None) -> Path:
    project = tmp_path / "project"
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    (project / "src").mkdir()  # Kedro wants it; the package is imported from the repo (pythonpath)
    if local_params:
        (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(local_params))
    return project


def cli_params(*items: str) -> dict[str, Any]:
    """Runtime params exactly as ``kedro run --params="a.b=1,c=2"`` builds them (nested)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)))


@contextmanager
def chdir(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_pipeline(
    project: Path, pipeline: str, runtime_params: dict[str, Any] | None = None, **run_kwargs
):
    with chdir(project):
        bootstrap_project(project)
        with KedroSession.create(
            project_path=project, runtime_params=runtime_params or {}
        ) as session:
            return session.run(pipeline_names=[pipeline], **run_kwargs)
