"""The pretraining classifier: a torchvision ResNet, trained on the engine's loop
(:class:`~..engine.loop.TrainerBase`) with its own step and validation, and evaluated.

Training is standard classification: cross-entropy (optional label smoothing), SGD (Nesterov) or
AdamW without weight decay on norms and biases, linear warm-up then cosine decay per iteration
(:mod:`..engine.schedule`), validation accuracy per epoch, the best epoch's weights kept
(by validation accuracy; the last epoch's without a validation set), progress lines with ETA,
seeded per epoch (sampling and augmentation) and deterministic on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models import resnet

from ..engine import hooks as H
from ..engine.loop import TrainerBase
from ..engine.runtime import epoch_loader, loader_workers, seed_everything
from ..engine.schedule import build_lr_scheduler
from ..errors import ConfigError
from ..evaluation.inference import select_device
from .config import ARCHS, PretrainConfig

PER_CLASS_COLUMNS_MAX = 10  # per-class validation accuracy in the history up to this many classes


def build_classifier(
    arch: str, in_channels: int, num_classes: int, zero_init_residual: bool = False
) -> nn.Module:
    """torchvision ``resnet{18,34,50,101}(weights=None, num_classes=K)`` with BatchNorm (as the
    pretrained files torchvision provides); for ``in_channels != 3`` conv1 is replaced by
    ``Conv2d(in_channels, 64, 7, 2, 3)`` (Kaiming init, as the detector's)."""
    if arch not in ARCHS:
        raise ConfigError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    model = resnet.__dict__[arch](
        weights=None, num_classes=int(num_classes), zero_init_residual=zero_init_residual
    )
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


@dataclass
class PretrainResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_accuracy: float
    best_state: dict[str, torch.Tensor]
    train_seconds: float
    classes: list[str]


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 128
) -> dict[str, Any]:
    """Loss, accuracy and per-class accuracy (``nan`` for a class without samples)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    classes = list(getattr(dataset, "classes", []))
    correct = np.zeros(max(1, len(classes)), dtype=np.int64)
    total = np.zeros_like(correct)
    loss_sum, n = 0.0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        pred = logits.argmax(1)
        n += int(labels.numel())
        for c in labels.unique().tolist():
            mask = labels == c
            total[c] += int(mask.sum())
            correct[c] += int((pred[mask] == c).sum())
    per_class = {
        name: (float(correct[i] / total[i]) if total[i] else float("nan"))
        for i, name in enumerate(classes)
    }
    return {
        "loss": loss_sum / max(1, n),
        "accuracy": float(correct.sum() / max(1, total.sum())),
        "per_class": per_class,
    }


def classifier_optimizer(model: nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (or AdamW); no weight decay on norms and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


class ClassifierTrainer(TrainerBase):
    """One step = one batch of crops through the classifier; validation = accuracy."""

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        val_set: Dataset | None,
        cfg: PretrainConfig,
        name: str = "pretrain",
    ):
        super().__init__()
        self.cfg, self.name, self.max_epochs = cfg, name, cfg.epochs
        seed_everything(cfg.seed, cfg.deterministic)
        self.device = select_device(cfg.device)
        self.workers = loader_workers(cfg.num_workers, self.device.type == "cuda")
        self.model = self.train_model = model.to(self.device)
        self.optimizer = classifier_optimizer(self.model, cfg)
        self.train_set, self.val_set = train_set, val_set
        self.drop_last = len(train_set) > cfg.batch_size
        steps = len(train_set) // cfg.batch_size if self.drop_last else 1
        self.scheduler = build_lr_scheduler(
            self.optimizer,
            schedule="cosine",
            total_iters=steps * cfg.epochs,
            iters_per_epoch=steps,
            warmup_iters=int(round(cfg.warmup_epochs * steps)),
            warmup_factor=cfg.warmup_factor,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=float(cfg.label_smoothing))
        self.classes = list(getattr(train_set, "classes", []))
        self.best = H.BestState(tolerance=1e-12)
        self.register_hooks(
            [H.LRStep(self.scheduler), H.Validation(), self.best, H.ProgressLogger(cfg.log_every)]
        )

    def epoch_data(self, epoch: int) -> DataLoader:
        cfg = self.cfg
        return epoch_loader(
            self.train_set,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            deterministic=cfg.deterministic,
            workers=self.workers,
            cuda=self.device.type == "cuda",
            drop_last=self.drop_last,
        )

    def before_epoch(self) -> None:
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0
        super().before_epoch()

    def run_step(self) -> None:
        images, labels = self.next_batch()
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        logits = self.model(images)
        loss = self.criterion(logits, labels)
        if not torch.isfinite(loss):
            raise RuntimeError(
                f"[{self.name}] non-finite loss at epoch {self.epoch + 1}, step {self.step + 1}: "
                f"lower pretrain.lr (now {self.lr:.3g})"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.optimizer_stepped = True
        self.loss_sum += float(loss.detach()) * int(labels.numel())
        self.correct += int((logits.detach().argmax(1) == labels).sum())
        self.seen += int(labels.numel())

    def epoch_row(self) -> dict[str, Any]:
        seen = max(1, self.seen)
        return {"train_loss": self.loss_sum / seen, "train_accuracy": self.correct / seen}

    def step_text(self) -> str:
        seen = max(1, self.seen)
        return f"loss {self.loss_sum / seen:.4f} acc {self.correct / seen:.3f}"

    def epoch_text(self) -> str:
        row = self.row
        val = ""
        if "val_accuracy" in row:
            val = f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}"
        return f"train_loss {row['train_loss']:.4f} train_acc {row['train_accuracy']:.4f}{val}"

    def validation_due(self) -> bool:
        return self.val_set is not None and len(self.val_set) > 0

    def validate_epoch(self) -> float:
        batch = max(self.cfg.batch_size, 64)
        val = evaluate_classifier(self.model, self.val_set, self.device, batch_size=batch)
        self.row["val_loss"], self.row["val_accuracy"] = val["loss"], val["accuracy"]
        if len(self.classes) <= PER_CLASS_COLUMNS_MAX:
            self.row.update({f"val_accuracy_{c}": v for c, v in val["per_class"].items()})
        return val["accuracy"]


def train_classifier(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: PretrainConfig,
    name: str = "pretrain",
) -> PretrainResult:
    """Standard classification training; the best epoch by validation accuracy (or the last
    one without a validation set) is kept. Seeded per epoch (sampling and augmentation)."""
    trainer = ClassifierTrainer(model, train_set, val_set, cfg, name)
    trainer.train()
    state, epoch, accuracy = trainer.best.result()
    return PretrainResult(
        history=trainer.history,
        best_epoch=epoch,
        best_val_accuracy=accuracy if math.isfinite(accuracy) else float("nan"),
        best_state=state,
        train_seconds=trainer.train_seconds,
        classes=trainer.classes,
    )
