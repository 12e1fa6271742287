"""One Kedro run at a time per data folder: a lock on ``data/.run.lock`` held for the whole run.

``acquire`` takes an OS lock (``filelock``: ``flock`` on Linux and macOS) on
``<project>/data/.run.lock`` and writes who holds it (pid, host, start time, command line, run
id) to ``data/.run.lock.json``; ``release`` removes that file and drops the lock. The hooks in
:mod:`smallobj_pipeline.hooks` call them around every ``kedro run``.

A second run finds the lock taken and, by default, stops at once with :class:`DataFolderBusy`
naming the holder. ``SMALLOBJ_LOCK_WAIT=<seconds>`` makes it wait instead (0: stop at once, the
default; -1: wait without limit). The operating system drops the lock when the holding process
ends, however it ends (SIGKILL, crash, out of memory), so a dead run never blocks the next one;
the ``.run.lock.json`` it leaves is just overwritten.

Kedro calls ``on_pipeline_error`` for exceptions, not for ``KeyboardInterrupt``: the project's
session class (:mod:`smallobj_pipeline.session`) releases the lock then. A run through a plain
``KedroSession`` (tests) ended that way leaves the lock held by this process until it exits or
starts its next run from the same thread (or after the holding thread is gone), which takes it
over. A run in another live thread of this process is waited for like another process.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import shlex
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from filelock import FileLock, Timeout

from smallobj_pipeline.detection.io import pid_alive, write_json

logger = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
INFO_NAME = ".run.lock.json"
WAIT_ENV = "SMALLOBJ_LOCK_WAIT"
HOLDER_WRITE_GRACE_S = 1.0  # how long a refused run waits for a new holder to write its info file


class DataFolderBusy(click.ClickException):
    """Another run holds the data folder. Kedro's CLI prints ``Error: <message>`` without a
    traceback and exits with 75 (EX_TEMPFAIL: try again later)."""

    exit_code = 75


class LockSettingError(click.ClickException):
    """``SMALLOBJ_LOCK_WAIT`` is not a number of seconds."""


@dataclass
class _Hold:
    lock: FileLock
    run_id: str
    thread: threading.Thread
    info_path: Path


_HELD: dict[str, _Hold] = {}  # resolved lock path -> this process's hold
# run id prefix of a lock taken by a node (the retrain lock): released by the hooks on failure
NODE_CLAIM_PREFIX = "retrain-"
_HELD_GUARD = threading.Lock()


def lock_paths(data_dir: str | Path) -> tuple[Path, Path]:
    """The lock file and the holder-info file of ``data_dir``."""
    data_dir = Path(data_dir)
    return data_dir / LOCK_NAME, data_dir / INFO_NAME


def wait_seconds(environ: dict[str, str] | None = None) -> float:
    """``SMALLOBJ_LOCK_WAIT`` in seconds: 0 (unset, the default) stops at once, -1 (any negative
    value, or ``inf``) waits without limit."""
    raw = (os.environ if environ is None else environ).get(WAIT_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise LockSettingError(
            f"{WAIT_ENV}={raw!r} is not a number of seconds: 0 stops at once when another run "
            f"holds the data folder (the default), N waits up to N seconds, -1 waits without limit."
        )
    return -1.0 if value < 0 or math.isinf(value) else value


def read_holder(info_path: Path) -> dict[str, Any] | None:
    """The holder info of ``info_path``, or None if it is missing or unreadable."""
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _current_holder(info_path: Path, grace: float = HOLDER_WRITE_GRACE_S) -> dict[str, Any] | None:
    """The holder info, waiting up to ``grace`` seconds while it is missing or names a process of
    this host that is gone (a holder that just took the lock has not written its own yet)."""
    deadline = time.monotonic() + grace
    while True:
        info = read_holder(info_path)
        live = info is not None and (
            info.get("host") != socket.gethostname()
            or (isinstance(info.get("pid"), int) and pid_alive(info["pid"]))
        )
        if live or time.monotonic() >= deadline:
            return info if live else None
        time.sleep(0.05)


def describe_holder(info: dict[str, Any] | None, info_path: Path) -> str:
    if info is None:
        return f"a process that has not written {info_path.name} yet (it has just started)"
    pid = info.get("pid")
    who = f"pid {pid}" + (" (this process, another thread)" if pid == os.getpid() else "")
    return (
        f"{who} on host {info.get('host', '?')}, started {info.get('started', '?')}, "
        f"command: {info.get('command', '?')}"
    )


def _busy_message(data_dir: Path, holder: str, waited: float) -> str:
    waited_text = (
        f"This run waited {waited:g} s ({WAIT_ENV}) and stopped before running any node."
        if waited
        else "This run stopped before running any node."
    )
    return (
        f"Another Kedro run is using the data folder {data_dir}: {holder}. {waited_text} "
        f"To make a run wait for the folder instead, set {WAIT_ENV} to the seconds to wait "
        f"(-1: no limit), e.g. `{WAIT_ENV}=-1 kedro run ...`. A run that died does not leave "
        f"this lock behind: the operating system releases it when the holding process ends, "
        f"however it ends (even SIGKILL), so there is nothing to delete; just wait for the run "
        f"above, or stop it."
    )


def _holder_info(run_id: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv) if sys.argv and sys.argv[0] else "(python)",
        "run_id": run_id,
    }


def acquire(data_dir: str | Path, run_id: str, wait: float | None = None) -> None:
    """Hold ``data_dir``'s run lock for the run ``run_id`` (create the folder if needed).

    ``wait``: seconds to wait if another run holds it (default: ``SMALLOBJ_LOCK_WAIT``, else 0;
    negative: no limit). Raises :class:`DataFolderBusy` naming the holder if it is still held.
    """
    data_dir = Path(data_dir)
    wait = wait_seconds() if wait is None else wait
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_path, info_path = lock_paths(data_dir)
    key = str(lock_path.resolve())
    current = threading.current_thread()
    with _HELD_GUARD:
        hold = _HELD.get(key)
        if hold is not None and (hold.thread is current or not hold.thread.is_alive()):
            logger.info(
                "run lock %s: run %s of this process ended without releasing it "
                "(interrupted); run %s takes it over",
                lock_path,
                hold.run_id,
                run_id,
            )
            hold.run_id, hold.thread = run_id, current
            write_json(info_path, _holder_info(run_id))
            return

    lock = FileLock(lock_path, thread_local=False)
    take_lock(lock, data_dir, info_path, wait)
    try:
        write_json(info_path, _holder_info(run_id))
    except BaseException:
        lock.release(force=True)
        raise
    with _HELD_GUARD:
        _HELD[key] = _Hold(lock, run_id, current, info_path)


def take_lock(lock: FileLock, data_dir: Path, info_path: Path, wait: float) -> None:
    """Take ``lock`` at once, or wait up to ``wait`` seconds (negative: no limit) with a warning
    naming the holder; :class:`DataFolderBusy` when it is still held."""
    try:
        lock.acquire(blocking=False)
    except Timeout:
        holder = describe_holder(_current_holder(info_path), info_path)
        if wait == 0:
            raise DataFolderBusy(_busy_message(data_dir, holder, 0)) from None
        limit = "without limit" if wait < 0 else f"up to {wait:g} s"
        logger.warning(
            "Another Kedro run is using the data folder %s: %s. Waiting for it %s (%s).",
            data_dir,
            holder,
            limit,
            WAIT_ENV,
        )
        try:
            lock.acquire(timeout=wait, poll_interval=0.2)
        except Timeout:
            holder = describe_holder(_current_holder(info_path), info_path)
            raise DataFolderBusy(_busy_message(data_dir, holder, wait)) from None
        logger.info("The data folder %s is free: this run goes on.", data_dir)


def release(data_dir: str | Path, run_id: str) -> bool:
    """Release ``data_dir``'s run lock if this process holds it for ``run_id``. Returns whether
    it did. The holder-info file goes first, while the lock still keeps other runs out."""
    lock_path, _ = lock_paths(data_dir)
    key = str(Path(lock_path).resolve())
    with _HELD_GUARD:
        hold = _HELD.get(key)
        if hold is None or hold.run_id != run_id:
            return False
        del _HELD[key]
    _drop(hold)
    return True


def release_claims(prefix: str) -> list[str]:
    """Release every lock the current thread holds under a run id starting with ``prefix`` (a
    node's claim, such as the retrain lock, that a failed run never reached the node releasing);
    returns the lock paths released."""
    current = threading.current_thread()
    with _HELD_GUARD:
        keys = [k for k, h in _HELD.items() if h.thread is current and h.run_id.startswith(prefix)]
        holds = [_HELD.pop(k) for k in keys]
    for hold in holds:
        _drop(hold)
    return keys


def _drop(hold: _Hold) -> None:
    try:
        hold.info_path.unlink(missing_ok=True)
    finally:
        hold.lock.release(force=True)


def held_by_this_process() -> dict[str, str]:
    """Lock path -> run id of every run lock this process holds."""
    with _HELD_GUARD:
        return {key: hold.run_id for key, hold in _HELD.items()}


@atexit.register
def _release_all() -> None:
    """At interpreter exit (a run ended by Ctrl-C, say), remove the holder-info files too; the OS
    would drop the locks anyway."""
    with _HELD_GUARD:
        holds = list(_HELD.values())
        _HELD.clear()
    for hold in holds:
        try:
            _drop(hold)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
