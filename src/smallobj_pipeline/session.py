"""The project's Kedro session (``SESSION_CLASS`` in ``settings.py``, used by ``kedro run`` and
the IPython/Jupyter extension).

Kedro 1.7 calls ``on_pipeline_error`` only for an ``Exception``: a run ended by
``KeyboardInterrupt`` (Ctrl-C, or ``TrainingInterrupted``) or ``SystemExit`` skips every hook, so
the data folder's run lock (:mod:`smallobj_pipeline.run_lock`) would stay held by a notebook
kernel until its next run. :class:`ProjectSession` releases it on any way out of ``run``.
"""

from __future__ import annotations

from typing import Any

from kedro.framework.session import KedroSession

from smallobj_pipeline import run_lock


class ProjectSession(KedroSession):
    def run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().run(*args, **kwargs)
        except BaseException:
            # a no-op unless this run still holds the lock (Kedro's hooks release it otherwise)
            run_lock.release(self._project_path / "data", str(self.session_id))
            raise
