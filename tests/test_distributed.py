"""The trainer under torchrun: two CPU processes (gloo) train one experiment with
DistributedDataParallel; rank 0 alone writes the model and the history."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from smallobj_pipeline.detection.checkpoint import load_checkpoint
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset
from smallobj_pipeline.detection.data.split import assign_splits

SRC = Path(__file__).resolve().parents[1] / "src"


def test_torchrun_two_processes_train_one_experiment(tmp_path):
    raw = tmp_path / "raw"
    generate_sample_dataset(raw, num_images=8, image_size=96, seed=3, min_objects=3, max_objects=6)
    assign_splits(
        CocoDataset.from_dir(raw), {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0
    ).to_dir(tmp_path / "coco")
    cfg = {
        "name": "ddp",
        "model": {
            "backbone": "resnet18",
            "pretrained": "none",
            "norm": "gn",
            "anchor_sizes": [8, 16, 32, 64, 128],
            "min_size": 96,
            "max_size": 96,
            "box_batch_size_per_image": 32,
        },
        "training": {"epochs": 1, "batch_size": 2, "warmup_iters": 0, "seed": 1, "log_every": 1},
        "augmentation": {"enabled": False},
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
        "smallobj_pipeline.detection.engine.launch",
        "--config",
        str(tmp_path / "config.json"),
        "--data",
        str(tmp_path / "coco"),
        "--model-out",
        str(tmp_path / "out/model.pt"),
        "--history-out",
        str(tmp_path / "out/history.csv"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    model_file = load_checkpoint(tmp_path / "out/model.pt")
    assert model_file["epochs_run"] == 1
    history = pd.read_csv(tmp_path / "out/history.csv")
    assert list(history["epoch"]) == [1] and "map_50" in history
    # each rank saw half of the 4 training images: 1 step of batch 2 per rank
    assert "step 1/1" in proc.stderr + proc.stdout
