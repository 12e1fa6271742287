"""Interruptions: a run killed with SIGKILL mid-epoch resumes to the same result as an
uninterrupted run; SIGINT stops cleanly with a valid last.pt and says how to resume; a writer
killed mid-write leaves the previous file intact.

The killed/interrupted runs are subprocesses (tests/interrupt_run.py, a 3-image, 3-epoch
ResNet18 run on 64 px images, one thread); the reference and the resumed runs run in-process
with the same seed and thread count.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import interrupt_run as R
import pytest
import torch

from smallobj_pipeline.detection.checkpoint import load_checkpoint, save_checkpoint
from smallobj_pipeline.detection.io import atomic_write, write_bytes, write_json

SCRIPT = Path(R.__file__).resolve()
REPO = SCRIPT.parents[1]
TIMEOUT = 300


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.update({"MPLBACKEND": "Agg", "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture(scope="module")
def reference(run_data, tmp_path_factory, one_thread):
    """The uninterrupted run: history and final weights."""
    ckpt = tmp_path_factory.mktemp("reference")
    result = R.make_trainer(run_data, ckpt).fit()
    return result.history, load_checkpoint(ckpt / "last.pt")["model"]


def _run_and_signal(data: Path, ckpt: Path, sig: int) -> tuple[int, str]:
    """Start a training run, send ``sig`` while it is paused between steps 1 and 2 of epoch 2,
    and return its exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(data), str(ckpt), "--pause-at-item", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.strip() == "PAUSED":
                assert "epoch 2/3 step 1/3" in "".join(
                    lines
                ) and "epoch 2/3 step 2/3" not in "".join(lines)
                proc.send_signal(sig)
                break
        _, rest = proc.communicate(timeout=TIMEOUT)
        lines.append(rest)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(lines)


def _assert_same_run(history, weights, ref_history, ref_weights):
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for row, ref in zip(history, ref_history, strict=True):
        for key in R.METRICS:
            assert row[key] == pytest.approx(ref[key], abs=1e-6, rel=0), (row["epoch"], key)
    assert weights.keys() == ref_weights.keys()
    for key, value in weights.items():
        assert torch.allclose(value.float(), ref_weights[key].float(), rtol=0, atol=1e-6), key


def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(
    run_data, reference, tmp_path, one_thread
):
    ckpt = tmp_path / "ckpt"
    code, log = _run_and_signal(run_data, ckpt, signal.SIGKILL)
    assert code == -signal.SIGKILL, log
    assert "epoch 1/3 done" in log and "epoch 2/3 done" not in log
    assert load_checkpoint(ckpt / "last.pt")["epoch"] == 0  # epoch 1, intact
    assert not list(ckpt.glob(".*.tmp"))  # the kill did not hit a checkpoint write

    result = R.make_trainer(run_data, ckpt, resume=True).fit()
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    _assert_same_run(result.history, load_checkpoint(ckpt / "last.pt")["model"], *reference)


def test_sigint_stops_cleanly_says_how_to_resume_and_resumes(
    run_data, reference, tmp_path, one_thread
):
    ckpt = tmp_path / "ckpt"
    code, log = _run_and_signal(run_data, ckpt, signal.SIGINT)
    assert code != 0, log
    assert "Traceback" in log and "TrainingInterrupted" in log  # a KeyboardInterrupt subclass
    message = re.search(r"training interrupted by SIGINT (.*)", log)
    assert message, log
    assert re.search(
        r"during epoch 2/3, after step 2/3: \S*last\.pt holds epoch 1/3, the last completed one; "
        r"run again with training\.resume: true to continue from epoch 2",
        message.group(1),
    ), message.group(1)
    assert "SIGINT received: stopping at the next safe point" in log
    assert "epoch 2/3 step 3/3" not in log and "epoch 2/3 done" not in log
    state = load_checkpoint(ckpt / "last.pt")  # valid and loadable
    assert state["epoch"] == 0 and len(state["history"]) == 1
    assert not list(ckpt.glob(".*.tmp"))

    result = R.make_trainer(run_data, ckpt, resume=True).fit()
    _assert_same_run(result.history, load_checkpoint(ckpt / "last.pt")["model"], *reference)


def test_sigint_in_process_raises_training_interrupted_and_restores_the_handler(
    run_data, tmp_path, one_thread
):
    from smallobj_pipeline.detection.engine.trainer import TrainingInterrupted

    trainer = R.make_trainer(run_data, tmp_path / "ckpt", epochs=1)

    def ctrl_c_on_first_step(out, step):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the first step
        return out

    calls = R.on_training_losses(trainer.model, ctrl_c_on_first_step)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(
        TrainingInterrupted, match=r"during epoch 1/1, after step 1/3: no epoch was completed"
    ):
        trainer.fit()
    assert len(calls) == 1  # stopped at the next step boundary
    assert signal.getsignal(signal.SIGINT) is before
    assert not (tmp_path / "ckpt" / "last.pt").exists()


# ------------------------------------------------------------------------------ killed writers
KILLED_WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from smallobj_pipeline.detection.io import atomic_write

    def writer(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half of the new cont")
            fh.flush()
            os._exit(9)  # killed mid-write: no cleanup, no rename

    atomic_write(Path(sys.argv[1]), writer)
""")

KILLED_CHECKPOINT = textwrap.dedent("""
    import os, sys
    import torch
    from smallobj_pipeline.detection import io
    from smallobj_pipeline.detection.checkpoint import save_checkpoint

    io.os.replace = lambda *a: os._exit(9)  # killed after torch.save, before the rename
    save_checkpoint({"epoch": 5, "model": {"w": torch.full((1000,), 5.0)}}, sys.argv[1])
""")


def _run_python(code: str, *args: str) -> int:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=_env(),
        cwd=REPO,
        timeout=TIMEOUT,
        capture_output=True,
    ).returncode


def test_a_writer_killed_mid_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    write_json(target, {"map": 0.5})
    assert _run_python(KILLED_WRITER, str(target)) == 9
    assert json.loads(target.read_text()) == {"map": 0.5}  # the previous file, intact
    stale = list(target.parent.glob(".metrics.json.*.tmp"))
    assert len(stale) == 1 and stale[0].read_bytes() == b"half of the new cont"
    write_json(target, {"map": 0.6})  # the next write removes the dead writer's leftover
    assert json.loads(target.read_text()) == {"map": 0.6}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_checkpoint_write_killed_before_the_rename_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 4, "model": {"w": torch.full((1000,), 4.0)}}, path)
    assert _run_python(KILLED_CHECKPOINT, str(path)) == 9
    state = load_checkpoint(path)
    assert state["epoch"] == 4 and torch.equal(state["model"]["w"], torch.full((1000,), 4.0))
    save_checkpoint({"epoch": 5, "model": {"w": torch.zeros(1)}}, path)
    assert load_checkpoint(path)["epoch"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_writer_that_fails_leaves_the_previous_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "model.pt"
    write_bytes(target, b"previous")

    def failing(tmp):
        tmp.write_bytes(b"partial")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, failing)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
