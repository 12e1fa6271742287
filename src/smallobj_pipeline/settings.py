"""Project settings (Kedro 1.x): https://docs.kedro.org/en/stable/configure/configuration_basics/

Environments: ``conf/base`` (shared, committed), ``conf/local`` (machine-specific, git-ignored,
the default run env) and ``conf/study`` (the full study of seed 003: ``kedro run --env=study``;
set ``KEDRO_ENV=study`` too so the pipeline registry declares the study's experiments) and
``conf/pretrain_study`` (in-domain pretrained backbone vs from scratch on the sample:
``make pretrain-study``).

Config loader: :class:`~smallobj_pipeline.config_loader.ProjectConfigLoader`, Kedro's
``OmegaConfigLoader`` whose YAML errors name the file, line and column.

Hooks (:mod:`smallobj_pipeline.hooks`): ``ConfigCheckHooks`` parses the parameters files once
when the context is created, so a YAML error stops a run with that one message;
``RunLockHooks`` lets one run at a time use the data folder (``data/.run.lock``; a second run
stops at once naming the first, or waits with ``SMALLOBJ_LOCK_WAIT=<seconds>``, -1: no limit).
Session: :class:`~smallobj_pipeline.session.ProjectSession` also releases that lock when a run
ends with ``KeyboardInterrupt``, for which Kedro calls no hook.
"""

from smallobj_pipeline.config_loader import ProjectConfigLoader
from smallobj_pipeline.hooks import ConfigCheckHooks, RunLockHooks
from smallobj_pipeline.session import ProjectSession

CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}

HOOKS = (ConfigCheckHooks(), RunLockHooks())
SESSION_CLASS = ProjectSession
