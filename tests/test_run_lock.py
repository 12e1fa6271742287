"""One Kedro run at a time per data folder (smallobj_pipeline.run_lock, .hooks, .session).

The first run is a small subprocess that takes the lock through the same hook as ``kedro run``
and holds it until told to release (or is killed); the second run is the hook called in-process.
Two tests run the real project through a Kedro session (a failing run, a run ended by
KeyboardInterrupt) and one runs the real ``kedro run`` CLI against a held lock.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from kedro_project import chdir, make_project

from smallobj_pipeline import run_lock
from smallobj_pipeline.hooks import RunLockHooks
from smallobj_pipeline.run_lock import WAIT_ENV, DataFolderBusy, LockSettingError

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120

HOLDER = textwrap.dedent("""
    import sys
    from smallobj_pipeline.hooks import RunLockHooks

    params = {"project_path": sys.argv[1], "run_id": "first-run"}
    hooks = RunLockHooks()
    hooks.before_pipeline_run(run_params=params)
    print("HELD", flush=True)
    sys.stdin.readline()  # hold the lock until told to release it (or killed)
    hooks.after_pipeline_run(run_params=params)
    print("RELEASED", flush=True)
""")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != WAIT_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.update({"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "MPLBACKEND": "Agg"})
    return env


@contextmanager
def first_run(project: Path):
    """A process holding ``project``'s run lock: write a line to its stdin to release it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(project)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()
        assert line.strip() == "HELD", line + proc.stderr.read()
        yield proc
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


def _params(project: Path, run_id: str = "second-run") -> dict[str, str]:
    return {"project_path": project.as_posix(), "run_id": run_id}


def _holder(project: Path) -> dict | None:
    return run_lock.read_holder(project / "data" / run_lock.INFO_NAME)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv(WAIT_ENV, raising=False)
    yield tmp_path
    assert run_lock.held_by_this_process() == {}  # every test leaves the lock released


def test_a_second_run_stops_at_once_naming_the_running_one(project):
    hooks = RunLockHooks()
    with first_run(project) as proc:
        start = time.monotonic()
        with pytest.raises(DataFolderBusy) as excinfo:
            hooks.before_pipeline_run(run_params=_params(project))
        assert time.monotonic() - start < 2
        message = str(excinfo.value)
        assert message.startswith(
            f"Another Kedro run is using the data folder {project / 'data'}: "
            f"pid {proc.pid} on host {socket.gethostname()}, started 20"
        )
        assert f"command: -c {project}" in message  # the holder's sys.argv
        assert "This run stopped before running any node" in message
        assert f"{WAIT_ENV}=-1 kedro run" in message and "(even SIGKILL)" in message
        assert "\n" not in message  # one paragraph
        assert isinstance(excinfo.value, click.ClickException) and excinfo.value.exit_code == 75
        assert _holder(project)["pid"] == proc.pid  # the refused run left the holder's file alone

        @click.command()
        def run():  # how Kedro's CLI (click) shows it: one line, no traceback, exit code 75
            hooks.before_pipeline_run(run_params=_params(project))

        result = CliRunner().invoke(run)
        assert result.exit_code == 75
        assert result.output.startswith("Error: Another Kedro run is using the data folder")
        assert "Traceback" not in result.output and result.output.count("\n") == 1

        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "RELEASED"
    assert not (project / "data" / run_lock.INFO_NAME).exists()  # removed on release
    hooks.before_pipeline_run(run_params=_params(project))  # free again
    hooks.after_pipeline_run(run_params=_params(project))


def test_with_the_wait_setting_a_second_run_waits_then_goes_on(project, monkeypatch, caplog):
    monkeypatch.setenv(WAIT_ENV, "-1")
    hooks = RunLockHooks()
    with first_run(project) as proc:

        def finish_first_run():
            proc.stdin.write("\n")
            proc.stdin.flush()

        timer = threading.Timer(1.0, finish_first_run)
        timer.start()
        start = time.monotonic()
        with caplog.at_level("INFO", logger="smallobj_pipeline.run_lock"):
            hooks.before_pipeline_run(run_params=_params(project))
        timer.cancel()
        assert time.monotonic() - start >= 0.9  # it waited for the first run
        assert proc.stdout.readline().strip() == "RELEASED"
        assert f"pid {proc.pid} on host" in caplog.text
        assert "Waiting for it without limit" in caplog.text
        holder = _holder(project)
        assert holder["pid"] == os.getpid() and holder["run_id"] == "second-run"
        assert holder["command"] == shlex.join(sys.argv)
    hooks.after_pipeline_run(run_params=_params(project))
    assert _holder(project) is None


def test_a_wait_that_runs_out_stops_naming_the_running_one(project, monkeypatch):
    monkeypatch.setenv(WAIT_ENV, "0.5")
    with first_run(project) as proc:
        start = time.monotonic()
        with pytest.raises(DataFolderBusy, match=rf"pid {proc.pid} .* This run waited 0\.5 s"):
            RunLockHooks().before_pipeline_run(run_params=_params(project))
        assert time.monotonic() - start >= 0.5


@pytest.mark.parametrize(
    ("value", "seconds"), [("", 0), ("0", 0), (" 2.5 ", 2.5), ("-1", -1), ("-7", -1), ("inf", -1)]
)
def test_the_wait_setting(value, seconds):
    assert run_lock.wait_seconds({WAIT_ENV: value}) == seconds


@pytest.mark.parametrize("value", ["soon", "nan", "1s"])
def test_a_wait_setting_that_is_not_seconds_is_refused(value):
    with pytest.raises(LockSettingError, match=rf"{WAIT_ENV}='{value}' is not a number of seconds"):
        run_lock.wait_seconds({WAIT_ENV: value})


def test_a_sigkilled_run_does_not_block_the_next_one(project):
    with first_run(project) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    assert _holder(project)["pid"] == proc.pid  # the killed run's file is left behind...
    hooks = RunLockHooks()
    start = time.monotonic()
    hooks.before_pipeline_run(run_params=_params(project))  # ...but the OS dropped its lock
    assert time.monotonic() - start < 2
    assert _holder(project)["pid"] == os.getpid()
    hooks.after_pipeline_run(run_params=_params(project))


# ---------------------------------------------------------------- real Kedro sessions, in-process
def _run_sample(project: Path, session_class):
    from kedro.framework.startup import bootstrap_project

    with chdir(project):
        bootstrap_project(project)
        with session_class.create(project_path=project) as session:
            return session.run(pipeline_names=["sample"])


def _assert_free(project: Path) -> None:
    """Another process can take the lock (and the holder file is gone)."""
    assert run_lock.held_by_this_process() == {}
    assert _holder(project) is None
    with first_run(project):
        pass


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_run_that_fails_or_is_interrupted_releases_the_lock(tmp_path, monkeypatch, error):
    from kedro.framework.session import KedroSession

    from smallobj_pipeline.pipelines.sample import pipeline as sample
    from smallobj_pipeline.session import ProjectSession
    from smallobj_pipeline.settings import HOOKS, SESSION_CLASS

    assert SESSION_CLASS is ProjectSession and any(isinstance(h, RunLockHooks) for h in HOOKS)
    monkeypatch.delenv(WAIT_ENV, raising=False)
    project = make_project(tmp_path)
    held = []

    def failing(*args, **kwargs):
        held.append(run_lock.held_by_this_process())
        raise error

    monkeypatch.setattr(sample, "generate_sample_dataset", failing)
    with pytest.raises(type(error)):
        _run_sample(project, ProjectSession)  # what `kedro run` and notebooks use
    assert list(held[0]) == [str((project / "data" / ".run.lock").resolve())]  # held while running
    _assert_free(project)

    # A plain KedroSession calls no hook on KeyboardInterrupt: the lock stays with this process
    # until the next run from this thread takes it over (an exception is released as above).
    with pytest.raises(type(error)):
        _run_sample(project, KedroSession)
    if isinstance(error, KeyboardInterrupt):
        assert list(run_lock.held_by_this_process())
        monkeypatch.setattr(sample, "generate_sample_dataset", lambda *a, **k: None)
        _run_sample(project, KedroSession)
    _assert_free(project)


def test_kedro_run_cli_against_a_held_lock_prints_one_message_and_exits_75(tmp_path):
    project = make_project(tmp_path)
    kedro = Path(sys.executable).parent / "kedro"
    with first_run(project) as proc:
        result = subprocess.run(
            [str(kedro), "run", "--pipelines=sample"],
            cwd=project,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert result.returncode == 75, result.stdout + result.stderr
    assert "Error: Another Kedro run is using the data folder" in result.stderr
    assert f"pid {proc.pid}" in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stdout + result.stderr
    assert not (project / "data" / "01_raw" / "sample").exists()  # no node ran
