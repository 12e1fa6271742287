"""A tiny, seeded training run for the interruption tests (tests/test_interruptions.py).

Imported by the tests (the uninterrupted and the resumed runs happen in-process) and run as a
script in a subprocess (the run that gets killed or interrupted)::

    python tests/interrupt_run.py DATA_DIR CHECKPOINT_DIR [--resume] [--pause-at-item N]

It logs every step to stderr (``[interrupt] epoch E/N step S/M ...``) and prints the final
history as JSON on stdout. With ``--pause-at-item N`` the N-th training image read (3 per
epoch) first prints ``PAUSED`` to stderr and sleeps a few seconds: N = 5 is the second step of
epoch 2, so a signal sent on ``PAUSED`` reaches the run in the middle of epoch 2.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import torch

MODEL = {
    "variant": "v1",
    "backbone": "resnet18",
    "pretrained": "none",
    "in_channels": 1,
    "norm": "bn",
    "anchor_sizes": [8, 16, 32, 64, 128],
    "min_size": 64,
    "max_size": 64,
    # few proposals and sampled RoIs: a CPU step takes a fraction of a second
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 64,
}
TRAIN = {
    "epochs": 3,
    "batch_size": 1,
    "lr": 0.01,
    "warmup_iters": 2,
    "schedule": "cosine",
    "seed": 11,
    "log_every": 1,
    "val_loss": False,
    "early_stopping_patience": 5,
}
METRICS = (
    "train_loss",
    "train_loss_classifier",
    "train_loss_box_reg",
    "train_loss_objectness",
    "train_loss_rpn_box_reg",
    "lr",
    "map",
    "map_50",
    "iou_per_prediction",
    "iou_per_gt",
)


THREADS = 1  # the killed run (subprocess) and the in-process runs must compute identically;
# one thread is also much faster than two on a shared 2-core machine for these tiny tensors


def set_threads() -> int:
    """Set the thread count used by every run of these tests; returns the previous one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    return previous


def make_dataset(root: Path) -> Path:
    from smallobj_pipeline.detection.data.sample import generate_sample_dataset

    return generate_sample_dataset(
        root,
        num_images=4,
        image_size=64,
        seed=4,
        min_objects=2,
        max_objects=4,
        min_side=6,
        max_side=12,
    )


def on_training_losses(model, change):
    """Wrap ``model.forward`` so that in training (with targets) ``change(losses, step)``, step
    counted from 1, returns the losses to use (or acts, e.g. sends a signal, and returns them).
    Returns the list of training steps seen so far."""
    forward = model.forward
    steps: list[int] = []

    def wrapped(images, targets=None):
        out = forward(images, targets)
        if model.training and targets is not None:
            steps.append(len(steps) + 1)
            out = change(out, steps[-1])
        return out

    model.forward = wrapped
    return steps


PAUSE_SECONDS = 3.0


def make_trainer(data: Path, checkpoint_dir: Path, pause_at_item: int | None = None, **overrides):
    from smallobj_pipeline.detection.data.coco import CocoDataset
    from smallobj_pipeline.detection.data.dataset import DetectionDataset
    from smallobj_pipeline.detection.engine.trainer import TrainConfig, Trainer
    from smallobj_pipeline.detection.modeling.factory import build_model

    class PausingDataset(DetectionDataset):
        calls = 0

        def __getitem__(self, index):
            PausingDataset.calls += 1
            if PausingDataset.calls == pause_at_item:
                print("PAUSED", file=sys.stderr, flush=True)
                time.sleep(PAUSE_SECONDS)
            return super().__getitem__(index)

    coco = CocoDataset.from_dir(data)
    ids = [img["id"] for img in coco.images]
    cfg = TrainConfig.from_dict({**TRAIN, **overrides})
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=coco.num_classes)
    train = PausingDataset(coco, ids[:3], in_channels=1)  # 3 steps per epoch
    val = DetectionDataset(coco, ids[3:], in_channels=1)
    return Trainer(model, train, val, cfg, checkpoint_dir=checkpoint_dir, name="interrupt")


def main(argv: list[str]) -> int:
    set_threads()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    data, ckpt = Path(argv[0]), Path(argv[1])
    pause = int(argv[argv.index("--pause-at-item") + 1]) if "--pause-at-item" in argv else None
    result = make_trainer(data, ckpt, pause_at_item=pause, resume="--resume" in argv).fit()
    print(json.dumps([{k: row.get(k) for k in ("epoch", *METRICS)} for row in result.history]))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    raise SystemExit(main(sys.argv[1:]))
