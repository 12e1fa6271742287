"""Helpers of tests/test_elastic.py: a 4-image dataset, the experiment config of its tiny runs,
the worker wrappers its launches use (module-level, so that a spawned worker can unpickle them),
and, run as a script, one "machine" of a two-node run::

    python tests/elastic_run.py DATA_DIR CONFIG_JSON CHECKPOINT_DIR WEIGHTS_OUT

which trains the experiment (``training.nnodes`` / ``node_rank`` in the config) and saves the
weights that :func:`train_experiment` returned to ``WEIGHTS_OUT``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

AUDIT_ENV = "SMALLOBJ_TEST_AUDIT_DIR"
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def make_dataset(root: Path):
    """4 images of 64 px: 2 to train on, 1 to validate, 1 to test (saved in ``root``)."""
    from smallobj_pipeline.detection.data.coco import CocoDataset
    from smallobj_pipeline.detection.data.sample import generate_sample_dataset

    generate_sample_dataset(
        root / "raw", num_images=4, image_size=64, seed=3, min_objects=3, max_objects=6
    )
    coco = CocoDataset.from_dir(root / "raw")
    ids = sorted(coco.images_by_id)
    coco.splits = {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}
    coco.to_dir(root / "coco")
    return CocoDataset.from_dir(root / "coco")


def experiment(**training: Any) -> dict[str, Any]:
    """One optimizer step of plain SGD per image pair: batch 1 per process, constant learning
    rate, no clipping (so that an update is linear in the gradient), GroupNorm (no batch
    statistics), no augmentation."""
    return {
        "name": "ddp",
        "model": {
            "backbone": "resnet18",
            "pretrained": "none",
            "norm": "gn",
            "anchor_sizes": [8, 16, 32, 64, 128],
            "min_size": 64,
            "max_size": 64,
            "box_batch_size_per_image": 32,
        },
        "training": {
            "epochs": 1,
            "batch_size": 1,
            "lr": 0.02,
            "warmup_iters": 0,
            "schedule": "none",
            "grad_clip_norm": None,
            "val_loss": False,
            "seed": 1,
            "log_every": 1,
            "device": "cpu",
            **training,
        },
        "augmentation": {"enabled": False},
    }


def audited_worker(coco, cfg, checkpoint_dir, result_path) -> None:
    """The project's worker, recording every file this rank creates or renames into place
    (Python's audit hooks: ``open`` for writing, ``os.rename``/``os.replace``) to
    ``$SMALLOBJ_TEST_AUDIT_DIR/rank<R>.json``."""
    from smallobj_pipeline.detection.engine.elastic import train_worker

    written: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event == "open" and len(args) >= 3 and args[0] is not None:
            mode, flags = args[1] or "", args[2] or 0
            if any(c in str(mode) for c in "wax+") or flags & WRITE_FLAGS:
                written.append(os.fspath(args[0]))
        elif event == "os.rename":
            written.append(os.fspath(args[1]))

    sys.addaudithook(hook)
    try:
        train_worker(coco, cfg, checkpoint_dir, result_path)
    finally:
        rank = os.environ["RANK"]
        out = Path(os.environ[AUDIT_ENV]) / f"rank{rank}.json"
        out.write_text(json.dumps([w for w in written if not w.startswith(str(out.parent))]))


def failing_worker(coco, cfg, checkpoint_dir, result_path) -> None:
    """Rank 1 fails before it trains; rank 0 trains (and waits for rank 1 in vain)."""
    from smallobj_pipeline.detection.engine.elastic import train_worker

    if os.environ["RANK"] == "1":
        raise ValueError("rank one refuses to train (on purpose)")
    train_worker(coco, cfg, checkpoint_dir, result_path)


def main(argv: list[str]) -> int:
    import torch

    from smallobj_pipeline.detection.data.coco import CocoDataset
    from smallobj_pipeline.detection.engine.experiment import train_experiment

    data, config, checkpoint_dir, out = argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_file, _ = train_experiment(
        CocoDataset.from_dir(data), json.loads(Path(config).read_text()), checkpoint_dir
    )
    torch.save(model_file["model"], out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
