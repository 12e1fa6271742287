"""Training loop for torchvision detectors, in the style of torchvision's references/detection.

One job: fit a model on a train :class:`DetectionDataset`, validate every epoch with the
project's single metric implementation (:mod:`.metrics`), keep the best and the last
checkpoint, stop early, resume. No Kedro in here.

CPU and GPU: mixed precision, ``cudnn.benchmark``, loader workers and pinned memory are
switched on only when the device is CUDA; channels-last and the fused optimizer step are on for
every device (``channels_last`` / ``fused_optimizer`` switch them off). Under ``torchrun`` (``WORLD_SIZE > 1``)
the model is wrapped in DistributedDataParallel (SyncBatchNorm on request) and only rank 0
validates, logs and writes files.

Interruptions: ``last.pt`` is written atomically at the end of every epoch, so a run killed at
any moment (even SIGKILL) resumes with ``resume: true`` from the last completed epoch and ends
with the same result as an uninterrupted run (per-epoch seeds, closed-form LR schedule, saved
optimizer/plateau/early-stopping state). SIGINT (Ctrl-C) or SIGTERM in a single-process run stops
at the next step boundary (or after the epoch's validation and checkpoint, when it arrives
during them), logs where it stopped and how to resume, and raises :class:`TrainingInterrupted`;
a second signal stops at once.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import os
import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.dataset import DetectionDataset, collate
from ..errors import ConfigError
from ..evaluation.inference import predict_dataset, select_device

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("none", "step", "multistep", "cosine", "plateau")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, divergence); the message says where and why."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM; ``last.pt`` holds the last completed epoch."""


class _StopSignal:
    """SIGINT/SIGTERM handler for the duration of :meth:`Trainer.fit`: the first signal only
    records a stop request (the loop stops at a safe point), a second one stops at once."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, name: str):
        self.name = name
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        self.signum = signum
        logger.warning(
            "[%s] %s received: stopping at the next safe point (send it again to stop at once)",
            self.name, signal.Signals(signum).name,
        )

    @contextmanager
    def installed(self, enabled: bool = True):
        previous: dict[int, Any] = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is None:
                    continue
                try:
                    previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # not allowed here (embedded interpreter...)
                    pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                try:
                    signal.signal(sig, handler)
                except (ValueError, OSError, TypeError):
                    pass


@dataclass
class TrainConfig:
    """Every knob of the training loop. Unknown keys are refused (see :meth:`from_dict`)."""

    epochs: int = 10
    batch_size: int = 4
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    backbone_lr_mult: float = 1.0  # < 1 gives the (pretrained) backbone a lower learning rate
    warmup_iters: int = 50
    warmup_factor: float = 0.001
    schedule: str = "cosine"
    step_size: int = 10  # epochs, for "step"
    milestones: list[int] = field(default_factory=lambda: [8, 11])  # epochs, for "multistep"
    gamma: float = 0.1  # decay factor for step / multistep / plateau
    plateau_patience: int = 3
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of the base learning rate
    grad_clip_norm: float | None = None
    accumulate_steps: int = 1
    early_stopping_patience: int | None = None  # epochs without improvement of the metric
    monitor: str = "map_50"
    val_every: int = 1
    val_loss: bool = True
    score_threshold: float = 0.5
    amp: bool = True  # CUDA only
    cudnn_benchmark: bool = True  # CUDA only
    channels_last: bool = True  # NHWC convolutions (oneDNN on CPU, tensor cores with AMP on CUDA)
    fused_optimizer: bool = True  # one fused kernel for the SGD/AdamW update where torch has it
    num_workers: int | str = "auto"  # "auto": 0 on CPU, min(4, cpus) on CUDA
    device: str = "auto"
    seed: int = 42
    deterministic: bool = True
    resume: bool = False
    log_every: int = 10  # steps
    divergence_factor: float = 20.0  # loss above this multiple of the first epoch's mean -> error
    sync_bn: bool = False

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | None) -> TrainConfig:
        cfg = dict(cfg or {})
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - valid)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {unknown}; valid settings: {sorted(valid)}")
        tc = cls(**cfg)
        tc.validate()
        return tc

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"training.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"training.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "accumulate_steps", "val_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"training.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"training.lr must be > 0, got {self.lr}")


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


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic and not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)


def loader_workers(num_workers: int | str, cuda: bool) -> int:
    """``num_workers``, with "auto" = min(4, cpus) on CUDA and 0 (the main process) on CPU."""
    if num_workers == "auto":
        return min(4, os.cpu_count() or 1) if cuda else 0
    return int(num_workers)


def _seed_worker(base_seed: int, worker_id: int) -> None:
    s = base_seed + worker_id
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)
    tr = getattr(torch.utils.data.get_worker_info().dataset, "transform", None)
    if tr is not None and hasattr(tr, "set_random_seed"):
        tr.set_random_seed(s)


def epoch_loader(dataset: Any, *, batch_size: int, seed: int, epoch: int, deterministic: bool, workers: int,
                 cuda: bool, sampler: Any = None, collate_fn: Any = None, drop_last: bool = False) -> DataLoader:
    """Seed everything for ``epoch`` and return its training loader, so that the order and the
    augmentation of an epoch depend only on (seed, epoch), which makes a resumed run match an
    uninterrupted one: the process and the dataset's transform get ``seed + epoch``, the default
    sampler shuffles with ``seed + epoch``, each loader worker gets ``seed + 1000 * epoch + id``."""
    seed_everything(seed + epoch, deterministic)
    tr = getattr(dataset, "transform", None)
    if tr is not None and hasattr(tr, "set_random_seed"):
        tr.set_random_seed(seed + epoch)
    if sampler is None:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed + epoch))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=cuda,
        persistent_workers=False,
        worker_init_fn=functools.partial(_seed_worker, seed + 1000 * epoch) if workers > 0 else None,
        drop_last=drop_last,
    )


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _kept_checkpoint(last_path: Path | None) -> str:
    """The end of a training error's message: where the last good epoch is, if saved."""
    return f"; the last good checkpoint is kept at {last_path}" if last_path and last_path.exists() else ""


def _distributed() -> tuple[bool, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world > 1, rank, world


def warmup_multiplier(it: int, warmup_iters: int, warmup_factor: float) -> float:
    """Linear warm-up from ``warmup_factor`` to 1 over the first ``warmup_iters`` iterations."""
    if warmup_iters > 0 and it < warmup_iters:
        alpha = it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    return 1.0


def cosine_multiplier(it: int, total_iters: int, min_lr_ratio: float) -> float:
    """Cosine decay from 1 to ``min_lr_ratio`` over ``total_iters`` iterations."""
    progress = min(1.0, it / max(1, total_iters))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LRPolicy:
    """Per-iteration multiplier = linear warm-up x schedule (closed form, so it resumes exactly)."""

    def __init__(self, cfg: TrainConfig, iters_per_epoch: int):
        self.cfg = cfg
        self.iters_per_epoch = max(1, iters_per_epoch)
        self.total_iters = self.iters_per_epoch * cfg.epochs
        self.plateau_scale = 1.0
        self._plateau_best = -math.inf
        self._plateau_bad = 0

    def __call__(self, it: int) -> float:
        cfg = self.cfg
        warm = warmup_multiplier(it, cfg.warmup_iters, cfg.warmup_factor)
        epoch = it // self.iters_per_epoch
        if cfg.schedule == "step":
            sched = cfg.gamma ** (epoch // max(1, cfg.step_size))
        elif cfg.schedule == "multistep":
            sched = cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), epoch)
        elif cfg.schedule == "cosine":
            sched = cosine_multiplier(it, self.total_iters, cfg.min_lr_ratio)
        elif cfg.schedule == "plateau":
            sched = self.plateau_scale
        else:
            sched = 1.0
        return warm * sched

    def epoch_end(self, metric: float | None) -> None:
        if self.cfg.schedule != "plateau" or metric is None:
            return
        if metric > self._plateau_best + 1e-6:
            self._plateau_best, self._plateau_bad = metric, 0
        else:
            self._plateau_bad += 1
            if self._plateau_bad > self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.gamma
                self._plateau_bad = 0
                logger.info("validation %s has not improved: learning rate x%.3g", self.cfg.monitor, self.cfg.gamma)

    def state_dict(self) -> dict[str, float]:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self._plateau_best, "plateau_bad": self._plateau_bad}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self._plateau_best = float(state["plateau_best"])
        self._plateau_bad = int(state["plateau_bad"])


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
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **extra)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


class Trainer:
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
    ):
        self.cfg = cfg
        self.name = name
        self.device = select_device(cfg.device)
        self.distributed, self.rank, self.world = _distributed()
        if self.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.is_main = self.rank == 0
        self.model = model
        self.train_set = train_set
        self.val_set = val_set
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.model_config = model_config or getattr(model, "smallobj_config", {})
        self.val_gt = (
            val_set.coco.to_coco_dict(val_set.image_ids) if val_set is not None and len(val_set) else None
        )

    # ------------------------------------------------------------------ set-up helpers
    def _loader(self, epoch: int) -> DataLoader:
        cfg = self.cfg
        cuda = self.device.type == "cuda"
        sampler = None
        if self.distributed:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(self.train_set, shuffle=True, seed=cfg.seed)
            sampler.set_epoch(epoch)
        return epoch_loader(self.train_set, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch,
                            deterministic=cfg.deterministic, workers=loader_workers(cfg.num_workers, cuda),
                            cuda=cuda, sampler=sampler, collate_fn=collate)

    def _ckpt(self, name: str) -> Path | None:
        return self.checkpoint_dir / name if self.checkpoint_dir else None

    # ------------------------------------------------------------------ main loop
    def fit(self) -> TrainResult:
        """Train (or resume) to the end; see the module docstring for interruptions."""
        self._stop = _StopSignal(self.name)
        with self._stop.installed(enabled=not self.distributed):
            return self._fit()

    def _interrupted(self, where: str, completed_epoch: int) -> TrainingInterrupted:
        """The exception (and log line) for a stop request; ``completed_epoch`` is 1-based."""
        last_path = self._ckpt("last.pt")
        if last_path is not None and last_path.is_file() and completed_epoch > 0:
            saved = (
                f"{last_path} holds epoch {completed_epoch}/{self.cfg.epochs}, the last completed one; "
                f"run again with training.resume: true to continue from epoch {completed_epoch + 1}"
            )
        elif last_path is None:
            saved = "no checkpoint directory was set, so nothing was saved and the run cannot be resumed"
        else:
            saved = "no epoch was completed, so there is nothing to resume: the next run starts from scratch"
        msg = f"[{self.name}] training interrupted by {self._stop.signal_name or 'a signal'} {where}: {saved}"
        logger.warning(msg)
        return TrainingInterrupted(msg)

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        seed_everything(cfg.seed, cfg.deterministic)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
        model = self.model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if cuda else "gloo")
            if cfg.sync_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            if cuda:
                torch.cuda.set_device(self.device)
            ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if cuda else None
            )
            train_model, core = ddp, model
        else:
            train_model, core = model, model

        optimizer = build_optimizer(core, cfg)
        iters_per_epoch = math.ceil(len(self._loader(0)) / cfg.accumulate_steps)
        policy = LRPolicy(cfg, iters_per_epoch)
        # a plain lambda: LambdaLR would pickle a callable object's __dict__ into its state
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: policy(it))
        scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.amp)

        history: list[dict[str, Any]] = []
        start_epoch = 0
        best_metric, best_epoch, bad_epochs = -math.inf, -1, 0
        best_state: dict[str, torch.Tensor] | None = None
        prior_seconds = 0.0
        last_path = self._ckpt("last.pt")
        if cfg.resume and last_path is not None and last_path.is_file():
            state = load_checkpoint(last_path)
            core.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            policy.load_state_dict(state["lr_policy"])
            scaler.load_state_dict(state["scaler"]) if state.get("scaler") else None
            history = list(state["history"])
            start_epoch = int(state["epoch"]) + 1
            best_metric, best_epoch = float(state["best_metric"]), int(state["best_epoch"])
            bad_epochs = int(state["bad_epochs"])
            prior_seconds = float(state.get("train_seconds", 0.0))
            best_path = self._ckpt("best.pt")
            if best_path is not None and best_path.is_file():
                best_state = load_checkpoint(best_path)["model"]
            logger.info("[%s] resuming from %s at epoch %d/%d", self.name, last_path, start_epoch + 1, cfg.epochs)
        elif cfg.resume:
            logger.info("[%s] resume requested but no checkpoint at %s: starting from scratch", self.name, last_path)

        fit_start = time.perf_counter()
        first_epoch_loss: float | None = history[0]["train_loss"] if history else None
        stopped_early = False
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.epochs):
            if bad_epochs and cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
                stopped_early = True
                break
            epoch_start = time.perf_counter()
            loader = self._loader(epoch)
            train_model.train()
            sums: dict[str, float] = {}
            n_steps = len(loader)
            optimizer.zero_grad(set_to_none=True)
            batches = iter(loader)
            for step in range(n_steps):
                where = f"during epoch {epoch + 1}/{cfg.epochs}, after step {step}/{n_steps}"
                if self._stop.requested:
                    raise self._interrupted(where, epoch)
                try:
                    images, targets = next(batches)
                except Exception:  # a worker killed by the same Ctrl-C: report the interruption
                    if self._stop.requested:
                        raise self._interrupted(where, epoch) from None
                    raise
                images = [im.to(self.device, non_blocking=True) for im in images]
                targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
                with torch.autocast(device_type=self.device.type, enabled=cuda and cfg.amp):
                    loss_dict = train_model(images, targets)
                    loss = sum(loss_dict.values())
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in loss_dict.items())
                    kept = _kept_checkpoint(last_path)
                    raise TrainingError(
                        f"[{self.name}] non-finite loss ({loss_value}) at epoch {epoch + 1}, step {step + 1} "
                        f"({parts}). The learning rate ({optimizer.param_groups[0]['lr']:.3g}) is probably too "
                        f"high for this model: lower training.lr or set training.grad_clip_norm{kept}."
                    )
                scaler.scale(loss / cfg.accumulate_steps).backward()
                if (step + 1) % cfg.accumulate_steps == 0 or step + 1 == n_steps:
                    if cfg.grad_clip_norm:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(core.parameters(), cfg.grad_clip_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                for k, v in loss_dict.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + loss_value
                if self.is_main and ((step + 1) % cfg.log_every == 0 or step + 1 == n_steps):
                    elapsed = time.perf_counter() - epoch_start
                    eta_epoch = elapsed / (step + 1) * (n_steps - step - 1)
                    logger.info(
                        "[%s] epoch %d/%d step %d/%d loss %.4f lr %.3g | epoch ETA %s",
                        self.name, epoch + 1, cfg.epochs, step + 1, n_steps, sums["loss"] / (step + 1),
                        optimizer.param_groups[0]["lr"], _fmt_seconds(eta_epoch),
                    )
            train_loss = sums["loss"] / max(1, n_steps)
            if first_epoch_loss is None:
                first_epoch_loss = train_loss
            elif train_loss > cfg.divergence_factor * first_epoch_loss:
                raise TrainingError(
                    f"[{self.name}] training diverged at epoch {epoch + 1}: mean loss {train_loss:.4g} is over "
                    f"{cfg.divergence_factor:g}x the first epoch's ({first_epoch_loss:.4g}). The learning rate "
                    f"({cfg.lr:g}) is too high for this model: lower training.lr (or set training.grad_clip_norm)"
                    + _kept_checkpoint(last_path)
                    + "."
                )
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss}
            row.update({f"train_{k}": v / max(1, n_steps) for k, v in sums.items() if k != "loss"})
            row["lr"] = optimizer.param_groups[0]["lr"]
            row["train_seconds"] = time.perf_counter() - epoch_start

            metric_value: float | None = None
            if self.is_main and self.val_set is not None and len(self.val_set) and (
                (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs
            ):
                val_start = time.perf_counter()
                row.update(self.validate(core))
                row["val_seconds"] = time.perf_counter() - val_start
                metric_value = row.get(cfg.monitor)
            policy.epoch_end(metric_value)
            row["epoch_seconds"] = time.perf_counter() - epoch_start
            history.append(row)

            improved = metric_value is not None and metric_value > best_metric + 1e-9
            if improved:
                best_metric, best_epoch, bad_epochs = float(metric_value), epoch + 1, 0
                best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
                if self.is_main and self._ckpt("best.pt") is not None:
                    save_checkpoint(
                        {"model": best_state, "config": self.model_config, "epoch": epoch, "metrics": row},
                        self._ckpt("best.pt"),
                    )
            elif metric_value is not None:
                bad_epochs += 1
            train_seconds = prior_seconds + (time.perf_counter() - fit_start)
            if self.is_main and last_path is not None:
                save_checkpoint(
                    {
                        "model": core.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "lr_policy": policy.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                        "epoch": epoch,
                        "history": history,
                        "best_metric": best_metric,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                        "train_seconds": train_seconds,
                        "config": self.model_config,
                        "train_config": asdict(cfg),
                    },
                    last_path,
                )
            if self.is_main:
                done = epoch + 1 - start_epoch
                eta = (time.perf_counter() - fit_start) / done * (cfg.epochs - epoch - 1)
                val_txt = " ".join(
                    f"{k} {row[k]:.4f}" for k in ("val_loss", "map_50", "map", "iou_per_prediction", "iou_per_gt") if k in row
                )
                logger.info(
                    "[%s] epoch %d/%d done in %s: train_loss %.4f %s%s | ETA %s",
                    self.name, epoch + 1, cfg.epochs, _fmt_seconds(row["epoch_seconds"]), train_loss, val_txt,
                    " (best)" if improved else "", _fmt_seconds(eta),
                )
            if self._stop.requested and epoch + 1 < cfg.epochs:
                raise self._interrupted(f"after epoch {epoch + 1}/{cfg.epochs}", epoch + 1)
            stop = bool(cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience)
            if self.distributed:  # rank 0 validated: every rank waits for it and follows its decision
                import torch.distributed as dist

                flag = torch.tensor([int(stop)], device=self.device if cuda else "cpu")
                dist.broadcast(flag, src=0)
                stop = bool(flag.item())
            if stop:
                logger.info(
                    "[%s] early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)",
                    self.name, cfg.monitor, bad_epochs, best_metric, best_epoch,
                )
                stopped_early = True
                break

        if best_state is None:  # no validation ran: the last weights are the result
            best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
            best_epoch = len(history)
        train_seconds = prior_seconds + (time.perf_counter() - fit_start)
        epochs_run = len(history)
        epoch_secs = [r["epoch_seconds"] for r in history if "epoch_seconds" in r]
        return TrainResult(
            history=history,
            best_epoch=best_epoch,
            best_metric=best_metric if math.isfinite(best_metric) else float("nan"),
            epochs_run=epochs_run,
            train_seconds=train_seconds,
            seconds_per_epoch=float(np.mean(epoch_secs)) if epoch_secs else 0.0,
            best_state=best_state,
            stopped_early=stopped_early,
        )

    # ------------------------------------------------------------------ validation
    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        from ..evaluation.metrics import evaluate_detections

        out: dict[str, float] = {}
        if self.cfg.val_loss:
            out["val_loss"] = self._val_loss(model)
        results, _ = predict_dataset(model, self.val_set, self.device, batch_size=self.cfg.batch_size)
        metrics = evaluate_detections(
            self.val_gt, results, score_threshold=self.cfg.score_threshold, per_class=False
        )
        for key in ("map", "map_50", "map_75", "map_small", "iou_per_prediction", "iou_per_gt", "precision", "recall"):
            if key in metrics:
                out[key] = float(metrics[key])
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
        loader = DataLoader(self.val_set, batch_size=self.cfg.batch_size, shuffle=False, collate_fn=collate)
        total, n = 0.0, 0
        for images, targets in loader:
            images = [im.to(self.device) for im in images]
            targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            total += float(sum(losses.values()))
            n += 1
        model.train(was_training)
        return total / max(1, n)
