"""Reading the declared experiment names, so the pipeline registry can build one namespace each."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from smallobj_pipeline.config_loader import ProjectConfigLoader
from smallobj_pipeline.detection.engine.experiment import check_experiment_name, missing_weights
from smallobj_pipeline.settings import CONFIG_LOADER_ARGS

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def conf_source() -> Path:
    """The project's ``conf`` folder: the working directory's when it is a project, else this
    repo's."""
    cwd_conf = Path.cwd() / "conf"
    return (
        cwd_conf
        if (Path.cwd() / "pyproject.toml").is_file() and cwd_conf.is_dir()
        else PROJECT_ROOT / "conf"
    )


def experiment_names(env: str | None = None) -> list[str]:
    """Names under ``experiments:`` in the parameters of ``env`` (default: ``$KEDRO_ENV`` or local).

    An experiment whose pretrained weight file is missing is left out, with a WARNING naming
    the experiment, the file and the folder, when it may be skipped: every ``pretrained: full``
    experiment (torchvision's COCO files cannot be made offline) and any experiment that sets
    ``skip_if_weights_missing: true`` (see
    :func:`~smallobj_pipeline.detection.engine.experiment.missing_weights`).
    """
    env = env or os.environ.get("KEDRO_ENV") or None
    loader = ProjectConfigLoader(conf_source=str(conf_source()), env=env, **CONFIG_LOADER_ARGS)
    params = loader["parameters"]
    experiments = params.get("experiments") or {}
    defaults = params.get("experiment_defaults") or {}
    names = []
    for raw_name, overrides in experiments.items():
        name = check_experiment_name(str(raw_name))
        reason = missing_weights(name, defaults, overrides if isinstance(overrides, dict) else {})
        if reason:
            logger.warning(
                "experiment %r skipped (no namespace, not trained, not in the report): %s",
                name,
                reason,
            )
            continue
        names.append(name)
    return names
