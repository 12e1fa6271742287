"""Reading the declared experiment names, so the pipeline registry can build one namespace each."""

from __future__ import annotations

import os
from pathlib import Path

from kedro.config import OmegaConfigLoader

from smallobj_pipeline.detection.experiment import check_experiment_name

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def conf_source() -> Path:
    """The project's ``conf`` folder: the working directory's when it is a project, else this repo's."""
    cwd_conf = Path.cwd() / "conf"
    return cwd_conf if (Path.cwd() / "pyproject.toml").is_file() and cwd_conf.is_dir() else PROJECT_ROOT / "conf"


def experiment_names(env: str | None = None) -> list[str]:
    """Names under ``experiments:`` in the parameters of ``env`` (default: ``$KEDRO_ENV`` or local)."""
    from smallobj_pipeline.settings import CONFIG_LOADER_ARGS

    env = env or os.environ.get("KEDRO_ENV") or None
    loader = OmegaConfigLoader(conf_source=str(conf_source()), env=env, **CONFIG_LOADER_ARGS)
    experiments = loader["parameters"].get("experiments") or {}
    return [check_experiment_name(str(n)) for n in experiments]
