"""GPUs claimed per training run through lock files: concurrent claimants (threads, processes)
get distinct GPUs, a claim is released when its process exits or is killed, a run that finds
every GPU taken trains on the CPU with a warning, and without a GPU the run trains on the CPU.
The GPUs are made-up identifiers (the claim is given them), so no GPU is needed."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from smallobj_pipeline.detection.engine.config import TrainConfig
from smallobj_pipeline.detection.engine.gpu_claim import LOCK_DIR_ENV, GpuClaim, lock_dir
from smallobj_pipeline.detection.engine.runtime import place_training
from smallobj_pipeline.detection.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src"
GPUS = ["GPU-aaaa", "GPU-bbbb", "GPU-cccc", "GPU-dddd"]
HOLDER = """
import sys, time
from smallobj_pipeline.detection.engine.gpu_claim import GpuClaim
claim = GpuClaim(sys.argv[1].split(","), sys.argv[2])  # held while it lives
print(",".join(map(str, claim.claim(int(sys.argv[3])))), flush=True)
if sys.argv[4] == "hold":
    time.sleep(120)
"""


def _holder(directory: Path, count: int, hold: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = [",".join(GPUS), str(directory), str(count), "hold" if hold else "exit"]
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, *args], env=env, stdout=subprocess.PIPE, text=True
    )


def test_concurrent_claimants_get_distinct_gpus_and_the_last_gets_none(tmp_path):
    claims = [GpuClaim(GPUS, tmp_path) for _ in range(6)]
    got: list[list[int]] = [[] for _ in claims]
    barrier = threading.Barrier(len(claims))

    def claim(i: int) -> None:
        barrier.wait()
        got[i] = claims[i].claim(1)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claims))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = sorted(g[0] for g in got if g)
    assert taken == [0, 1, 2, 3] and sum(not g for g in got) == 2
    # a claimant keeps what it holds and adds free GPUs up to the count asked
    holder = next(c for c in claims if c.held)
    held = holder.held
    holder.release()
    assert claims[[bool(g) for g in got].index(False)].claim(2) == held


def test_a_claim_is_released_when_its_process_exits_or_is_killed(tmp_path):
    killed = _holder(tmp_path, 1, hold=True)
    assert killed.stdout.readline().strip() == "0"
    exited = _holder(tmp_path, 2, hold=False)
    assert exited.communicate(timeout=60)[0].strip() == "1,2"
    mine = GpuClaim(GPUS, tmp_path)
    assert mine.claim(4) == [1, 2, 3]  # 0 held by the running process, 1 and 2 freed by exit
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    assert mine.claim(4) == [0, 1, 2, 3]  # the killed process's GPU is free again


def test_device_auto_claims_gpus_and_falls_back_to_the_cpu_when_all_are_taken(tmp_path, caplog):
    cfg = TrainConfig.from_dict({"device": "auto", "devices": 1})
    runs = [GpuClaim(GPUS[:2], tmp_path) for _ in range(3)]  # three runs, two GPUs
    first, second = place_training(cfg, runs[0]), place_training(cfg, runs[1])
    assert (first.training.device, second.training.device) == ("cuda:0", "cuda:1")
    assert not first.launch and first.gpus == (0,)
    with caplog.at_level(logging.WARNING):
        third = place_training(cfg, runs[2])
    assert third.training.device == "cpu" and third.processes == 1
    assert "all 2 GPU(s) are claimed by other training runs" in caplog.text
    assert str(tmp_path) in caplog.text


def test_devices_auto_takes_every_free_gpu(tmp_path, caplog):
    other = GpuClaim(GPUS, tmp_path)
    assert other.claim(1) == [0]  # another run holds GPU 0
    with caplog.at_level(logging.WARNING):
        placement = place_training(TrainConfig.from_dict({}), GpuClaim(GPUS, tmp_path))
    assert placement.gpus == (1, 2, 3) and placement.processes == 3 and placement.launch
    assert placement.training.device == "cuda"
    assert "1 of the 4 GPU(s) wanted are claimed by other training runs" in caplog.text


def test_without_a_gpu_training_runs_on_the_cpu(tmp_path):
    placement = place_training(TrainConfig.from_dict({}), GpuClaim([], tmp_path))
    assert placement.training.device == "cpu" and placement.processes == 1
    assert not placement.launch and not list(tmp_path.iterdir())  # nothing claimed
    two = place_training(TrainConfig.from_dict({"devices": 2}), GpuClaim([], tmp_path))
    assert two.processes == 2 and two.launch  # N gloo processes on the CPU (tests, debugging)


def test_more_devices_than_gpus_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"training.devices is 8 but 4 GPU\(s\) are visible"):
        place_training(TrainConfig.from_dict({"devices": 8}), GpuClaim(GPUS, tmp_path))


def test_the_lock_folder_is_shared_by_the_machine_and_can_be_moved(monkeypatch, tmp_path):
    monkeypatch.delenv(LOCK_DIR_ENV, raising=False)
    assert lock_dir().name == "smallobj-gpu-locks"
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    claim = GpuClaim(GPUS)
    assert claim.claim(1) == [0]
    assert [p.name for p in (tmp_path / "locks").iterdir()] == ["GPU-aaaa.lock"]
