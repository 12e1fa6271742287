"""Several training processes launched from the training node itself (torch's elastic launcher,
gloo on CPU): they train as one process would on the whole batch, rank 0 alone writes the files,
a failing worker stops the run with its rank and its message, and two "machines" (two launcher
groups on this one) meet at a rendezvous endpoint and train as the two processes of one machine.

What is compared, and why it is exact: every run makes one optimizer step of plain SGD (constant
learning rate, no clipping, GroupNorm) from the same seeded weights. Two processes of batch 1
average their gradients, so their step is the mean of the steps that one process makes on each
image alone: the DDP weights are the mean of two single-image runs' weights, up to rounding,
whatever image each rank drew. The two single-image runs differ from each other by far more.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import elastic_run as R
import pytest
import torch

from smallobj_pipeline.detection.engine.config import TrainConfig
from smallobj_pipeline.detection.engine.elastic import RESULT_FILE, WorkerFailed, launch_config
from smallobj_pipeline.detection.engine.experiment import train_experiment
from smallobj_pipeline.detection.engine.runtime import place_training

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("elastic")
    return root, R.make_dataset(root)


@pytest.fixture(scope="module")
def single_image_weights(data):
    """The weights after one step of one process on each training image alone."""
    root, coco = data
    weights = []
    for image_id in coco.splits["train"]:
        one = copy.deepcopy(coco)
        one.splits = {**coco.splits, "train": [image_id]}
        model_file, _ = train_experiment(one, R.experiment(), root / f"single_{image_id}")
        weights.append(model_file["model"])
    return weights


def _distance(a: dict, b: dict) -> float:
    keys = [k for k in a if a[k].is_floating_point()]
    return float(torch.sqrt(sum(((a[k] - b[k]).double() ** 2).sum() for k in keys)))


def _mean(a: dict, b: dict) -> dict:
    return {k: (a[k] + b[k]) / 2 if a[k].is_floating_point() else a[k] for k in a}


def _assert_like_one_process(weights: dict, single: list[dict]) -> None:
    spread = _distance(single[0], single[1])
    assert spread > 1e-3, "the two images should give different updates"
    assert _distance(weights, _mean(*single)) < 1e-3 * spread


def test_two_gloo_processes_step_like_one_process_and_only_rank_0_writes(
    data, single_image_weights, tmp_path, monkeypatch
):
    root, coco = data
    audit = tmp_path / "audit"
    audit.mkdir()
    monkeypatch.setenv(R.AUDIT_ENV, str(audit))
    checkpoints = tmp_path / "checkpoints"
    cfg = R.experiment(devices=2)
    placement = place_training(TrainConfig.from_dict(cfg["training"]))
    assert placement.launch and placement.processes == 2
    from smallobj_pipeline.detection.engine.elastic import launch_training

    start = time.perf_counter()
    model_file, history = launch_training(
        coco, cfg, checkpoints, placement, worker=R.audited_worker
    )
    print(f"2 gloo processes: {time.perf_counter() - start:.1f} s")
    _assert_like_one_process(model_file["model"], single_image_weights)
    assert [row["epoch"] for row in history] == [1] and "map_50" in history[0]
    assert model_file["epochs_run"] == 1
    written = {r: json.loads((audit / f"rank{r}.json").read_text()) for r in (0, 1)}
    mine = [w for w in written[1] if str(checkpoints) in w or RESULT_FILE in w]
    assert mine == [], f"rank 1 wrote {mine}"
    names = {Path(w).name for w in written[0] if not Path(w).name.startswith(".")}
    assert {"last.pt", "best.pt", RESULT_FILE} <= names
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt"]


def test_a_failing_worker_stops_the_run_with_its_rank_and_message(data, tmp_path):
    root, coco = data
    cfg = R.experiment(devices=2)
    placement = place_training(TrainConfig.from_dict(cfg["training"]))
    from smallobj_pipeline.detection.engine.elastic import launch_training

    start = time.perf_counter()
    with pytest.raises(WorkerFailed) as info:
        launch_training(coco, cfg, tmp_path, placement, worker=R.failing_worker)
    assert time.perf_counter() - start < 60, "rank 0 should be stopped, not left waiting"
    text = str(info.value)
    assert info.value.rank == 1
    assert "[ddp] training process rank 1 (of 2) failed" in text
    assert "ValueError: rank one refuses to train (on purpose)" in text
    assert "Traceback" not in text and len(text.splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_machines_meet_at_the_endpoint_and_train_as_one(data, single_image_weights, tmp_path):
    """Two launcher groups of one process each (``nnodes: 2``) on a static rendezvous on
    localhost, "machine" 1 in a subprocess, "machine" 0 in this one (the training node's call),
    sharing the checkpoint folder as machines share the output folder: both return rank 0's
    result, the same step as two processes of one machine."""
    root, coco = data
    endpoint = f"localhost:{_free_port()}"
    shared = tmp_path / "shared"
    cfg = {n: R.experiment(nnodes=2, node_rank=n, rdzv_endpoint=endpoint) for n in (0, 1)}
    (tmp_path / "node1.json").write_text(json.dumps(cfg[1]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    cmd = [sys.executable, str(TESTS / "elastic_run.py"), str(root / "coco"),
           str(tmp_path / "node1.json"), str(shared), str(tmp_path / "weights1.pt")]  # fmt: skip
    node1 = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        model_file, history = train_experiment(coco, cfg[0], shared)
    finally:
        log = node1.communicate(timeout=300)[1]
    assert node1.returncode == 0, log[-3000:]
    assert _distance(model_file["model"], torch.load(tmp_path / "weights1.pt")) == 0.0
    _assert_like_one_process(model_file["model"], single_image_weights)
    assert "training on 1 process(es) here (CPU, gloo), node 1 of 2 (2 in all)" in log
    assert "epoch 1/1 done" not in log  # rank 1 logs warnings only


def test_the_launcher_settings_of_one_and_of_several_machines():
    one = place_training(TrainConfig.from_dict({"device": "cpu", "devices": 3}))
    config = launch_config(one, run_id="E")
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (1, 1, 3)
    assert (config.rdzv_backend, config.rdzv_endpoint) == ("c10d", "localhost:0")
    assert (config.max_restarts, config.start_method, config.run_id) == (0, "spawn", "E")
    several = TrainConfig.from_dict(
        {"device": "cpu", "nnodes": 4, "node_rank": 2, "rdzv_endpoint": "node0:29500"}
    )
    placement = place_training(several)
    assert placement.launch and placement.processes == 1
    config = launch_config(placement, run_id="E")
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (4, 4, 1)
    assert (config.rdzv_backend, config.rdzv_endpoint) == ("static", "node0:29500")
    assert config.rdzv_configs["rank"] == 2 and config.max_restarts == 0


def test_each_worker_sees_the_gpus_its_run_claimed(monkeypatch):
    """Worker i trains on ``cuda:i`` of what it sees: the launcher shows the workers the claimed
    GPUs only, in terms of what this process sees, and keeps its own view."""
    from smallobj_pipeline.detection.engine.elastic import _visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    with _visible_gpus((1, 3)):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with _visible_gpus((0, 2)):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
