"""One retrain or rollback at a time per models folder (the folder of ``registry.json`` and
``champions/``).

:mod:`smallobj_pipeline.run_lock` already lets one ``kedro run`` at a time use a checkout's
``data/`` folder, which covers two retrains started in one checkout. It does not cover two
checkouts, environments or machines whose ``models_dir`` (``conf/<env>/globals.yml``) points at
the same shared folder: each holds its own ``data/.run.lock``, and the later registry write would
silently drop the earlier run's decision. So the retrain and rollback pipelines also claim
``<retrain.lock_dir>/.run.lock`` (the models folder by default) with the same machinery (an OS
lock via ``filelock``, released however the process ends; the holder written next to it), in
their first node, before any training, and release it in their last node, after the registry is
written. A refused run stops with :class:`ChampionsBusy` naming the holder.

A run that fails between the two nodes has the claim released by the project's
``on_pipeline_error`` hook (:mod:`smallobj_pipeline.hooks`), or, at the latest, when its process
ends. ``SMALLOBJ_LOCK_WAIT`` makes a refused run wait.
On network file systems the OS lock is only as good as the file system's ``flock``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import click

from smallobj_pipeline import run_lock


class ChampionsBusy(click.ClickException):
    """Another retrain or rollback holds the models folder. ``kedro run`` prints
    ``Error: <message>`` and exits with 75 (EX_TEMPFAIL: try again later)."""

    exit_code = 75


def claim(lock_dir: str | Path, wait: float | None = None) -> dict[str, str]:
    """Claim ``lock_dir`` for one retrain or rollback; returns the claim :func:`release` needs.
    ``wait``: seconds to wait for a holder (default ``SMALLOBJ_LOCK_WAIT``, else 0)."""
    lock_dir = Path(lock_dir)
    claim_id = f"{run_lock.NODE_CLAIM_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        run_lock.acquire(lock_dir, claim_id, wait)
    except run_lock.DataFolderBusy:
        _, info_path = run_lock.lock_paths(lock_dir)
        holder = run_lock.describe_holder(run_lock.read_holder(info_path), info_path)
        raise ChampionsBusy(
            f"Another retrain or rollback is changing the champions in {lock_dir}: {holder}. "
            f"Two retraining runs at once are refused (the later one would overwrite the "
            f"earlier one's registry entry); this run stopped before training or changing "
            f"anything. Wait for that run to end, or set {run_lock.WAIT_ENV}=<seconds> (-1: no "
            f"limit) to wait for it. A dead run leaves no lock behind (the OS drops it)."
        ) from None
    return {"claim_id": claim_id, "lock_dir": str(lock_dir)}


def release(claim_: dict[str, Any]) -> bool:
    """Release a claim of :func:`claim`; whether this process still held it."""
    return run_lock.release(claim_["lock_dir"], claim_["claim_id"])
