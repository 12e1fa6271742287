"""The training loop on a handful of tiny images: learns, checkpoints, resumes, is deterministic,
and stops with a clear message on a non-finite loss."""

import itertools
import time
from functools import partial

import interrupt_run as R
import pytest
import torch

from smallobj_pipeline.detection.checkpoint import load_checkpoint
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.dataset import DetectionDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset
from smallobj_pipeline.detection.engine import hooks as H
from smallobj_pipeline.detection.engine.loop import HookBase, TrainerBase, TrainingInterrupted
from smallobj_pipeline.detection.engine.schedule import (
    UNPLANNED_ITERS,
    build_lr_scheduler,
    stretch_decay,
)
from smallobj_pipeline.detection.engine.trainer import TrainConfig, Trainer, TrainingError
from smallobj_pipeline.detection.errors import ConfigError
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


def _fit(coco, ckpt_dir=None, model=None, extra_hooks=(), **overrides):
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
    trainer = Trainer(model, train, val, cfg, checkpoint_dir=ckpt_dir, name="t")
    if extra_hooks:  # after the trainer's own hooks
        hooks = trainer._hooks
        trainer._hooks = lambda: [*hooks(), *extra_hooks]
    return trainer.fit()


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


class _Cut(HookBase):
    """Interrupts training after the first epoch's checkpoint (as a kill would)."""

    def after_epoch(self):
        raise TrainingInterrupted("cut after epoch 1")


class _StepClock(HookBase):
    """Records every step's duration and the learning rate after it."""

    def __init__(self):
        self.seconds, self.lrs = [], []

    def before_step(self):
        self.start = time.perf_counter()

    def after_step(self):
        self.seconds.append(time.perf_counter() - self.start)
        self.lrs.append(self.trainer.lr)


BUDGET = {"schedule": "cosine", "epochs": 1, "val_loss": False, "log_every": 100}


class _Toy(TrainerBase):
    """A trainer whose steps and validations take known times (sleeps), on the real loop, hooks
    and schedulers: what the time budget does is then measurable to a few milliseconds."""

    name = "toy"

    def __init__(self, budget, steps=10, step_seconds=0.05, val_seconds=0.2):
        super().__init__()
        self.model = self.train_model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.n, self.dt, self.val_dt, self.lrs = steps, step_seconds, val_seconds, []
        sched = build_lr_scheduler(
            self.optimizer,
            schedule="cosine",
            total_iters=UNPLANNED_ITERS,
            iters_per_epoch=steps,
            warmup_iters=0,
            warmup_factor=1.0,
        )
        self.budget = H.TimeBudget(budget, set_total=partial(stretch_decay, sched))
        self.register_hooks([H.LRStep(sched), self.budget, H.Validation()])

    def epoch_data(self, epoch):
        return range(self.n)

    def run_step(self):
        self.lrs.append(self.lr)
        time.sleep(self.dt)
        self.optimizer_stepped = True

    def epoch_row(self):
        return {"train_loss": 0.0}

    def validation_due(self):
        return True

    def validate_epoch(self):
        time.sleep(self.val_dt)
        self.row["val_seconds"] = self.val_dt
        return 0.0

    def validation_estimate(self, step_seconds):
        return self.val_dt


def test_time_budget_ends_within_one_step_with_the_schedule_spread_over_it():
    """``max_epochs`` 1 is overridden: epochs of 10 steps of 50 ms and a 200 ms validation run
    for 3 s; training ends at the budget, and the cosine decay spans it."""
    toy = _Toy(budget=3.0)
    toy.train()
    assert toy.budget.stopped and "time budget reached" in toy.stop_reason
    assert len(toy.history) >= 4 and all("val_seconds" in r for r in toy.history)
    # never past the budget by more than a step; short of it by less than what did not fit
    # (a step, and at an epoch's end a validation); 30 ms for the sleeps' jitter
    assert 3.0 - 0.25 - 0.03 <= toy.train_seconds <= 3.0 + 0.05 + 0.03
    assert toy.lrs[0] == pytest.approx(0.1)
    half = toy.lrs[len(toy.lrs) // 2]  # the cosine is about half-way at half of the steps
    assert 0.035 < half < 0.065
    assert toy.lrs[-1] < 0.01  # and ends with the budget, not before
    assert all(a >= b for a, b in itertools.pairwise(toy.lrs))


def test_time_budget_on_the_detector_trainer(tiny, tmp_path):
    """The detector trainer with ``epochs: 1`` and a budget trains past one epoch, stops on the
    budget within one step, and validates and checkpoints the epoch it stopped in."""
    clock = _StepClock()
    budget = 15.0  # two epochs or more of 2 steps on 2 CPU cores
    result = _fit(tiny, tmp_path, time_budget=budget, extra_hooks=[clock], **BUDGET)
    assert result.stopped_by == "time_budget" and result.time_budget == budget
    assert len(result.history) >= 2
    assert result.train_seconds <= budget + max(clock.seconds)
    assert "map_50" in result.history[-1]
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] + 1 == len(result.history) and (tmp_path / "best.pt").is_file()


def test_resume_keeps_the_remaining_time_budget(tiny, tmp_path):
    budget = 14.0
    with pytest.raises(TrainingInterrupted):
        _fit(tiny, tmp_path, time_budget=budget, extra_hooks=[_Cut()], **BUDGET)
    used = load_checkpoint(tmp_path / "last.pt")["train_seconds"]
    assert 0 < used < budget
    clock = _StepClock()
    start = time.perf_counter()
    resumed = _fit(tiny, tmp_path, time_budget=budget, resume=True, extra_hooks=[clock], **BUDGET)
    assert resumed.history[0]["epoch"] == 1 and len(resumed.history) >= 2
    assert resumed.train_seconds <= budget + max(clock.seconds)
    assert time.perf_counter() - start < budget - used + 2 * max(clock.seconds) + 3  # + set-up
    assert clock.lrs[-1] < resumed.history[0]["lr"]  # the resumed part continues the decay
    again = _fit(tiny, tmp_path, time_budget=budget, resume=True, **BUDGET)
    assert len(again.history) == len(resumed.history)  # budget used up: nothing more
    assert again.stopped_by == "time_budget"


@pytest.mark.parametrize(
    ("value", "seconds"), [(90, 90.0), ("90s", 90.0), ("20m", 1200.0), ("1h30m", 5400.0)]
)
def test_time_budget_accepts_seconds_and_durations(value, seconds):
    assert TrainConfig.from_dict({"time_budget": value}).time_budget == seconds


@pytest.mark.parametrize("value", ["soon", 0, -5, True, "20 min"])
def test_bad_time_budget_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"experiment 'e1': training\.time_budget"):
        TrainConfig.from_dict({"time_budget": value}, "e1")
