"""The training loop on a handful of tiny images: learns, checkpoints, resumes, is deterministic,
and stops with a clear message on a non-finite loss."""

import interrupt_run as R
import pytest
import torch

from smallobj_pipeline.detection.checkpoint import load_checkpoint
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.dataset import DetectionDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset
from smallobj_pipeline.detection.engine.trainer import TrainConfig, Trainer, TrainingError
from smallobj_pipeline.detection.modeling.factory import build_model

MODEL = {
    "variant": "v1",
    "backbone": "resnet18",
    "pretrained": "none",
    "in_channels": 1,
    "norm": "bn",
    "anchor_sizes": [8, 16, 32, 64, 128],
    "min_size": 96,
    "max_size": 96,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    generate_sample_dataset(root, num_images=6, image_size=96, seed=1, min_objects=4, max_objects=8)
    coco = CocoDataset.from_dir(root)
    ids = [img["id"] for img in coco.images]
    coco.splits = {"train": ids[:4], "val": ids[4:]}
    return coco


def _fit(coco, ckpt_dir=None, model=None, **overrides):
    cfg = TrainConfig.from_dict(
        {
            "epochs": 2,
            "batch_size": 2,
            "lr": 0.01,
            "warmup_iters": 0,
            "schedule": "none",
            "seed": 7,
            "log_every": 1,
            "val_loss": True,
            **overrides,
        }
    )
    torch.manual_seed(0)
    model = model or build_model(MODEL, num_classes=coco.num_classes)
    train = DetectionDataset(coco, coco.splits["train"], in_channels=1)
    val = DetectionDataset(coco, coco.splits["val"], in_channels=1)
    return Trainer(model, train, val, cfg, checkpoint_dir=ckpt_dir, name="t").fit()


def test_two_epochs_lower_the_loss_and_write_checkpoints(tiny, tmp_path):
    result = _fit(tiny, tmp_path)
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 2 and losses[1] < losses[0]
    for key in ("map_50", "map", "iou_per_prediction", "iou_per_gt", "val_loss", "lr"):
        assert key in result.history[-1]
    last = load_checkpoint(tmp_path / "last.pt")  # weights_only=True loading
    assert last["epoch"] == 1 and {"model", "optimizer", "scheduler", "history"} <= set(last)
    assert (tmp_path / "best.pt").is_file()
    assert result.epochs_run == 2 and result.seconds_per_epoch > 0


def test_same_seed_same_metrics(tiny):
    a = _fit(tiny)
    b = _fit(tiny)
    for ra, rb in zip(a.history, b.history, strict=True):
        for key in ("train_loss", "val_loss", "map_50", "iou_per_gt"):
            assert ra[key] == rb[key], key


def test_resume_continues_to_the_same_result(tiny, tmp_path):
    full = _fit(tiny, tmp_path / "full")
    _fit(tiny, tmp_path / "cut", epochs=1)  # as if interrupted after epoch 1
    resumed = _fit(tiny, tmp_path / "cut", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[-1]["train_loss"] == pytest.approx(
        full.history[-1]["train_loss"], rel=1e-5
    )
    assert resumed.history[-1]["map_50"] == pytest.approx(full.history[-1]["map_50"], abs=1e-6)


def test_speed_settings_do_not_change_what_is_learned(tiny):
    """channels-last and the fused optimizer step (on by default) only change the speed: the fused
    step gives the same weights as torch's for-each one (to float rounding), and channels-last the
    same losses up to
    the order of float sums (which can flip a sampled proposal, hence the tolerance)."""
    fast = _fit(tiny, epochs=1, val_loss=False)
    unfused = _fit(tiny, epochs=1, val_loss=False, fused_optimizer=False)
    plain = _fit(tiny, epochs=1, val_loss=False, channels_last=False, fused_optimizer=False)
    assert fast.history[0]["train_loss"] == unfused.history[0]["train_loss"]
    for name, tensor in fast.best_state.items():
        assert torch.allclose(tensor, unfused.best_state[name], rtol=1e-5, atol=1e-7), name
    assert fast.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"], rel=5e-3)


def _nan_losses(model):
    """Make the detector's training losses NaN (as a too-high learning rate would)."""
    R.on_training_losses(model, lambda out, step: {k: v * float("nan") for k, v in out.items()})
    return model


def test_nan_loss_stops_with_epoch_step_and_keeps_last_checkpoint(tiny, tmp_path):
    _fit(tiny, tmp_path, epochs=1)
    model = _nan_losses(build_model(MODEL, num_classes=tiny.num_classes))
    with pytest.raises(
        TrainingError,
        match=r"non-finite loss .* epoch 2, step 1 .*learning rate.*last good checkpoint",
    ):
        _fit(
            tiny, tmp_path, model=model, resume=True
        )  # resumes at epoch 2, whose first step is NaN
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 0  # not overwritten by a bad state


def test_unknown_training_setting_is_refused():
    with pytest.raises(Exception, match="unknown training setting.*'epochz'"):
        TrainConfig.from_dict({"epochz": 3})
