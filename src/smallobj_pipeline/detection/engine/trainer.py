"""Detector training on the loop of :mod:`.loop`, in the style of torchvision's
references/detection: fit a model on a train :class:`DetectionDataset`, validate every epoch with
the project's single metric implementation (:mod:`..evaluation.metrics`), keep the best and the
last checkpoint, stop early, resume. What :class:`Trainer` defines is one step (forward, loss,
backward, optimizer step), its optimizer and validation; the rest are hooks (:mod:`.hooks`).

CPU and GPU: mixed precision, ``cudnn.benchmark``, loader workers and pinned memory are switched
on only when the device is CUDA; channels-last and the fused optimizer step are on for every
device (``channels_last`` / ``fused_optimizer`` switch them off). Under ``torchrun``
(``WORLD_SIZE > 1``) the model is wrapped in DistributedDataParallel (SyncBatchNorm on request)
and only rank 0 validates, logs and writes files.

Interruptions: ``last.pt`` is written atomically at the end of every epoch, so a run killed at
any moment (even SIGKILL) resumes with ``resume: true`` from the last completed epoch and ends
with the same result as an uninterrupted run (per-epoch seeds; the optimizer, learning-rate
schedulers, best and early-stopping state saved). SIGINT (Ctrl-C) or SIGTERM in a single-process
run stops at the next step boundary (or after the epoch's validation and checkpoint, when it
arrives during them), logs where it stopped and how to resume, and raises
:class:`TrainingInterrupted`; a second signal stops at once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .. import constants
from ..checkpoint import load_checkpoint
from ..data.dataset import DetectionDataset, collate
from ..data.tiling import tile_windows
from ..errors import ConfigError
from ..evaluation.inference import predict_dataset, select_device
from ..evaluation.metrics import evaluate_detections
from ..evaluation.sliced import SliceConfig
from . import hooks as H
from .config import TrainConfig
from .loop import TrainerBase, TrainingError, TrainingInterrupted
from .runtime import (
    distributed,
    epoch_loader,
    fmt_seconds,
    loader_workers,
    process_device,
    seed_everything,
    wrap_distributed,
)
from .schedule import UNPLANNED_ITERS, build_lr_scheduler, build_plateau, stretch_decay

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "build_optimizer",
    "seed_everything",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_metric: float
    epochs_run: int
    train_seconds: float
    seconds_per_epoch: float
    best_state: dict[str, torch.Tensor]
    stopped_early: bool = False
    stopped_by: str = "epochs"  # or early_stopping, time_budget
    time_budget: float | None = None  # training.time_budget, seconds


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Two parameter groups: the backbone body (``lr * backbone_lr_mult``) and the rest."""
    body = getattr(getattr(model, "backbone", None), "body", None)
    body_ids = {id(p) for p in body.parameters()} if body is not None else set()
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) in body_ids]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in body_ids]
    groups = [{"params": rest, "lr": cfg.lr, "name": "heads"}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"})
    params = [p for g in groups for p in g["params"]]
    # fused=True needs floating-point parameters on a device with the fused kernel (CPU, CUDA)
    fused = bool(cfg.fused_optimizer) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )
    extra = {"fused": True} if fused else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **extra
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


class Trainer(TrainerBase):
    """Fit ``model`` on ``train_set``, validating on ``val_set`` every ``val_every`` epochs.

    ``checkpoint_dir`` receives ``last.pt`` (full state, every epoch) and ``best.pt`` (weights of
    the best epoch by ``monitor``); both written atomically. ``model_config`` is stored in them
    so the model can be rebuilt.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_set: DetectionDataset,
        val_set: DetectionDataset | None,
        cfg: TrainConfig,
        checkpoint_dir: str | Path | None = None,
        model_config: dict[str, Any] | None = None,
        name: str = "experiment",
        slicing: SliceConfig | None = None,
    ):
        """``slicing``: validation images are predicted tile by tile (an experiment trained on
        tiles is validated on whole images); ``None``: whole images in one pass."""
        super().__init__()
        if slicing is not None and cfg.monitor == "val_loss":
            raise ConfigError(
                f"experiment {name!r}: training.monitor val_loss is not available when the "
                "validation images are predicted tile by tile (tiled training); monitor map_50"
            )
        self.slicing = slicing
        self.cfg, self.name, self.max_epochs = cfg, name, cfg.epochs
        self.distributed, self.rank, self.world = distributed()
        self.device = process_device(select_device(cfg.device))
        self.is_main = self.rank == 0
        self.model = self.train_model = model
        self.train_set, self.val_set = train_set, val_set
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.model_config = model_config or getattr(model, "smallobj_config", {})
        has_val = val_set is not None and len(val_set)
        self.val_gt = val_set.coco.to_coco_dict(val_set.image_ids) if has_val else None

    # ------------------------------------------------------------------ set-up
    def fit(self) -> TrainResult:
        """Train (or resume) to the end; see the module docstring for interruptions."""
        self._setup()
        self._resume()
        self.train()
        state, epoch, metric = self.best.result()
        epoch_secs = [r["epoch_seconds"] for r in self.history if "epoch_seconds" in r]
        return TrainResult(
            history=self.history,
            best_epoch=epoch,
            best_metric=metric,
            epochs_run=len(self.history),
            train_seconds=self.train_seconds,
            seconds_per_epoch=float(np.mean(epoch_secs)) if epoch_secs else 0.0,
            best_state=state,
            stopped_early=self.early_stopping.stopped,
            stopped_by=self._stopped_by(),
            time_budget=self.cfg.time_budget,
        )

    def _stopped_by(self) -> str:
        """What ended training: ``time_budget``, ``early_stopping`` or ``epochs``."""
        if self.budget is not None and self.budget.stopped:
            return "time_budget"
        return "early_stopping" if self.early_stopping.stopped else "epochs"

    def _setup(self) -> None:
        """Device, DDP, optimizer, schedulers, gradient scaler and hooks."""
        cfg = self.cfg
        seed_everything(cfg.seed, cfg.deterministic)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
        self.model = self.train_model = self.model.to(self.device)
        if cfg.channels_last:
            self.model = self.train_model = self.model.to(memory_format=torch.channels_last)
        if self.distributed:
            self.train_model, self.model = wrap_distributed(self.model, self.device, cfg.sync_bn)
        self.optimizer = build_optimizer(self.model, cfg)
        iters = math.ceil(len(self.epoch_data(0)) / cfg.accumulate_steps)
        self.scheduler = build_lr_scheduler(
            self.optimizer,
            schedule=cfg.schedule,
            total_iters=iters * cfg.epochs if cfg.time_budget is None else UNPLANNED_ITERS,
            iters_per_epoch=iters,
            warmup_iters=cfg.warmup_iters,
            warmup_factor=cfg.warmup_factor,
            min_lr_ratio=cfg.min_lr_ratio,
            step_size=cfg.step_size,
            milestones=cfg.milestones,
            gamma=cfg.gamma,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.amp)
        self.register_hooks(self._hooks())

    def _hooks(self) -> list[H.HookBase | None]:
        cfg, last = self.cfg, self._ckpt("last.pt")
        plateau = None
        if cfg.schedule == "plateau":
            plateau = build_plateau(self.optimizer, patience=cfg.plateau_patience, gamma=cfg.gamma)
        self.best = H.BestState(1e-9, self._ckpt("best.pt"), self.model_config)
        self.early_stopping = H.EarlyStopping(
            cfg.early_stopping_patience,
            cfg.monitor,
            self.best,
            device=self.device if self.distributed else None,
        )
        self.budget = None
        if cfg.time_budget is not None:
            self.budget = H.TimeBudget(
                cfg.time_budget,
                set_total=partial(stretch_decay, self.scheduler),
                accumulate=cfg.accumulate_steps,
                val_every=cfg.val_every,
            )
        return [
            H.LRStep(self.scheduler),
            H.DivergenceGuard(cfg.divergence_factor, self._divergence_advice),
            self.budget,
            H.Validation(),
            H.PlateauLR(plateau, cfg.monitor) if plateau is not None else None,
            self.best,
            self.early_stopping,
            H.Checkpointer(last),
            H.ProgressLogger(cfg.log_every),
            H.SignalStop(last, enabled=not self.distributed),
        ]

    def _resume(self) -> None:
        """With ``resume``, the state of ``last.pt`` when it exists (else from scratch)."""
        last = self._ckpt("last.pt")
        if not self.cfg.resume:
            return
        if last is None or not last.is_file():
            logger.info(
                "[%s] resume requested but no checkpoint at %s: starting from scratch",
                self.name,
                last,
            )
            return
        state = load_checkpoint(last)
        if "_schedulers" not in state.get("scheduler", {}):
            raise ConfigError(
                f"{last} was written by an older version of the trainer (another learning-rate "
                "schedule format) and cannot be resumed: run without training.resume"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.load_hook_states(state)
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        self.prior_seconds = float(state.get("train_seconds", 0.0))
        planned = f"/{self.cfg.epochs}" if self.cfg.time_budget is None else ""
        logger.info(
            "[%s] resuming from %s at epoch %d%s (%s of training done)",
            self.name,
            last,
            self.start_epoch + 1,
            planned,
            fmt_seconds(self.prior_seconds),
        )

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "epoch": self.epoch,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "config": self.model_config,
            "train_config": self.cfg.to_dict(),
            **self.hook_states(),  # scheduler, lr_policy, best_metric/epoch, bad_epochs
        }

    def epoch_data(self, epoch: int) -> DataLoader:
        cfg, cuda = self.cfg, self.device.type == "cuda"
        sampler = None
        if self.distributed:
            sampler = DistributedSampler(self.train_set, shuffle=True, seed=cfg.seed)
            sampler.set_epoch(epoch)
        return epoch_loader(
            self.train_set,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            deterministic=cfg.deterministic,
            workers=loader_workers(cfg.num_workers, cuda),
            cuda=cuda,
            sampler=sampler,
            collate_fn=collate,
        )

    def _ckpt(self, name: str) -> Path | None:
        return self.checkpoint_dir / name if self.checkpoint_dir else None

    def _kept_checkpoint(self) -> str:
        """The end of a training error's message: where the last good epoch is, if saved."""
        last = self._ckpt("last.pt")
        return f"; the last good checkpoint is kept at {last}" if last and last.exists() else ""

    def _divergence_advice(self) -> str:
        return (
            f"The learning rate ({self.cfg.lr:g}) is too high for this model: lower training.lr "
            f"(or set training.grad_clip_norm){self._kept_checkpoint()}"
        )

    # ------------------------------------------------------------------ one step
    def before_epoch(self) -> None:
        self.sums: dict[str, float] = {}
        super().before_epoch()

    def run_step(self) -> None:
        """One batch: forward under autocast, a finite-loss check, backward (scaled); every
        ``accumulate_steps`` batches: clip, optimizer step."""
        cfg, device = self.cfg, self.device
        images, targets = self.next_batch()
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(device_type=device.type, enabled=device.type == "cuda" and cfg.amp):
            loss_dict = self.train_model(images, targets)
            loss = sum(loss_dict.values())
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise self._non_finite(loss_value, loss_dict)
        self.scaler.scale(loss / cfg.accumulate_steps).backward()
        last = self.step + 1 == self.steps
        self.optimizer_stepped = (self.step + 1) % cfg.accumulate_steps == 0 or last
        if self.optimizer_stepped:
            if cfg.grad_clip_norm:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        for k, v in loss_dict.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.sums["loss"] = self.sums.get("loss", 0.0) + loss_value

    def _non_finite(self, value: float, loss_dict: dict[str, torch.Tensor]) -> TrainingError:
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in loss_dict.items())
        return TrainingError(
            f"[{self.name}] non-finite loss ({value}) at epoch {self.epoch + 1}, "
            f"step {self.step + 1} "
            f"({parts}). The learning rate ({self.lr:.3g}) is probably too high for this model: "
            f"lower training.lr or set training.grad_clip_norm{self._kept_checkpoint()}."
        )

    def epoch_row(self) -> dict[str, Any]:
        n = max(1, self.steps)
        row = {"train_loss": self.sums["loss"] / n}
        row.update({f"train_{k}": v / n for k, v in self.sums.items() if k != "loss"})
        return row

    def step_text(self) -> str:
        return f"loss {self.sums['loss'] / (self.step + 1):.4f}"

    def epoch_text(self) -> str:
        shown = " ".join(
            f"{k} {self.row[k]:.4f}" for k in constants.EPOCH_LOG_KEYS if k in self.row
        )
        return f"train_loss {self.row['train_loss']:.4f} {shown}"

    # ------------------------------------------------------------------ validation
    def validation_due(self) -> bool:
        every, epoch = self.cfg.val_every, self.epoch + 1
        has_val = self.val_set is not None and len(self.val_set)
        last = epoch == self.max_epochs or self.stop
        return bool(self.is_main and has_val and (epoch % every == 0 or last))

    def validation_estimate(self, step_seconds: float) -> float:
        """A validation's seconds before one was timed: each batch's inference costs about 0.4
        of a training step (forward only), and as much again for the validation loss."""
        if self.val_set is None or not len(self.val_set):
            return 0.0
        if self.slicing is not None:  # one forward per tile of every whole validation image
            sizes = [self.val_set.coco.images_by_id[i] for i in self.val_set.image_ids]
            tiles = sum(
                len(tile_windows(int(im["width"]), int(im["height"]),
                                 int(self.slicing.tile_size), self.slicing.overlap))
                for im in sizes
            )  # fmt: skip
            return tiles * step_seconds * 0.4 / self.cfg.batch_size
        batches = math.ceil(len(self.val_set) / self.cfg.batch_size)
        return batches * step_seconds * (0.8 if self.cfg.val_loss else 0.4)

    def validate_epoch(self) -> float | None:
        start = time.perf_counter()
        self.row.update(self.validate(self.model))
        self.row["val_seconds"] = time.perf_counter() - start
        return self.row.get(self.cfg.monitor)

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.cfg.val_loss and self.slicing is None:  # no loss on whole images of a tiled run
            out["val_loss"] = self._val_loss(model)
        results, _ = predict_dataset(
            model, self.val_set, self.device, batch_size=self.cfg.batch_size, slicing=self.slicing
        )
        metrics = evaluate_detections(
            self.val_gt, results, score_threshold=self.cfg.score_threshold, per_class=False,
            segm=bool(getattr(self.val_set, "masks", False)),
        )  # fmt: skip
        out.update({k: float(metrics[k]) for k in constants.SUMMARY_METRIC_KEYS if k in metrics})
        return out

    @torch.no_grad()
    def _val_loss(self, model: torch.nn.Module) -> float:
        """Detection losses on the validation split: train-mode forward (torchvision returns
        losses only then) with every normalisation layer kept in eval mode, no gradients."""
        was_training = model.training
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._NormBase | torch.nn.GroupNorm):
                m.eval()
        loader = DataLoader(
            self.val_set, batch_size=self.cfg.batch_size, shuffle=False, collate_fn=collate
        )
        total, n = 0.0, 0
        for images, targets in loader:
            images = [im.to(self.device) for im in images]
            targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            total += float(sum(losses.values()))
            n += 1
        model.train(was_training)
        return total / max(1, n)
