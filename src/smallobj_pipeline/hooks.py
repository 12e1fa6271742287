"""Kedro hooks of the project (registered in ``settings.py``).

- :class:`ConfigCheckHooks`: when a context is created, read the parameters once through the
  project's config loader, so that a YAML error in a parameters file stops the run with one
  message naming the file, line and column
  (:class:`~smallobj_pipeline.config_loader.ConfigFileError`) before anything else reads them.
- :class:`RunLockHooks`: one run at a time per data folder. The lock ``data/.run.lock`` (under
  the project path) is taken in ``before_pipeline_run`` and released in ``after_pipeline_run``
  and ``on_pipeline_error``; see :mod:`smallobj_pipeline.run_lock` (the holder file, the
  ``SMALLOBJ_LOCK_WAIT`` setting, runs interrupted with ``KeyboardInterrupt``). A failed run
  also drops the retrain lock its first node took (:mod:`.pipelines.retraining.lock`).

Errors raised here are ``click.ClickException`` subclasses: ``kedro run`` prints
``Error: <message>`` and exits non-zero, without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from smallobj_pipeline import run_lock
from smallobj_pipeline.config_loader import ConfigFileError


class ConfigCheckHooks:
    @hook_impl
    def after_context_created(self, context: Any) -> None:
        try:
            context.config_loader["parameters"]
        except ConfigFileError:
            raise
        except Exception:  # noqa: BLE001 - anything else is reported where Kedro reads them
            pass


def data_dir(run_params: dict[str, Any]) -> Path:
    """The data folder of a run: ``data/`` under its project path."""
    return Path(run_params["project_path"]) / "data"


class RunLockHooks:
    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        run_lock.acquire(data_dir(run_params), str(run_params["run_id"]))

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        run_lock.release(data_dir(run_params), str(run_params["run_id"]))

    @hook_impl
    def on_pipeline_error(self, run_params: dict[str, Any]) -> None:
        run_lock.release(data_dir(run_params), str(run_params["run_id"]))
        # a retrain/rollback that failed between its claim and its release node
        run_lock.release_claims(run_lock.NODE_CLAIM_PREFIX)
