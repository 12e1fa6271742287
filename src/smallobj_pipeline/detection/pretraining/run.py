"""The whole pretraining job: build the data (``source``: ``crops`` from the COCO training split,
or an image-classification ``folder``), train the classifier, save the backbone.

Seed 003 found that pretrained backbone weights matter most and that a detector trained from
scratch barely learns; seed 004 gives the remedy when no downloadable weights exist: pretrain the
backbone as an image classifier (this package), then fine-tune the detector from it. No Kedro in
here; the pipeline's node calls :func:`train_backbone` (the catalog saves the backbone),
:func:`run_pretraining` also writes the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..checkpoint import save_checkpoint
from ..data.augment import build_transform
from ..data.coco import CocoDataset
from ..engine.runtime import seed_everything
from ..errors import ConfigError
from .classifier import PretrainResult, build_classifier, train_classifier
from .config import PretrainConfig
from .datasets import crop_datasets, folder_datasets
from .io import backbone_payload

logger = logging.getLogger(__name__)


def train_backbone(
    cfg: Mapping[str, Any] | PretrainConfig, coco: CocoDataset | None = None, intensity: Any = None
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Build the data (``source``), train the classifier; write nothing. Returns ``(history,
    summary, backbone)``: ``summary`` names the file (``<output_dir>/<name>.pt``) and how to
    reference it from an experiment, ``backbone`` is the checkpoint dict to save there
    (:func:`.io.backbone_payload`). ``intensity``: how pixels are scaled (the dataset
    statistics' spec, the same the detector trains with)."""
    c = cfg if isinstance(cfg, PretrainConfig) else PretrainConfig.from_dict(cfg)
    train_set, val_set, data_summary = _datasets(c, coco, intensity)
    classes = list(train_set.classes)
    seed_everything(c.seed, c.deterministic)
    model = build_classifier(c.arch, c.in_channels, len(classes), c.zero_init_residual)
    logger.info(
        "[%s] pretraining %s (%d channel(s)) as a %d-class classifier on %s: "
        "%d train / %d val samples, %d epochs",
        c.name, c.arch, c.in_channels, len(classes), c.source, len(train_set),
        len(val_set) if val_set else 0, c.epochs,
    )  # fmt: skip
    result = train_classifier(model, train_set, val_set, c, name=c.name)
    summary = _summary(c, result, data_summary)
    backbone = backbone_payload(
        result.best_state, arch=c.arch, in_channels=c.in_channels,
        classes=result.classes, history=result.history, image_mean=c.image_mean,
        image_std=c.image_std, crop_size=c.crop_size, best_epoch=result.best_epoch,
        best_val_accuracy=result.best_val_accuracy, config=c.to_dict(),
        summary={k: v for k, v in summary.items() if k != "usage"},
    )  # fmt: skip
    logger.info(
        "[%s] backbone trained (best epoch %d, val accuracy %.4f); use it with model: %s",
        c.name, result.best_epoch, result.best_val_accuracy, summary["usage"]["model"],
    )  # fmt: skip
    return result.history, summary, backbone


def run_pretraining(
    cfg: Mapping[str, Any] | PretrainConfig, coco: CocoDataset | None = None, intensity: Any = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`train_backbone`, then the backbone saved to ``<output_dir>/<name>.pt``. Returns
    ``(history, summary)``."""
    c = cfg if isinstance(cfg, PretrainConfig) else PretrainConfig.from_dict(cfg)
    history, summary, backbone = train_backbone(c, coco, intensity)
    save_checkpoint(backbone, c.output_path)
    logger.info("[%s] backbone saved to %s", c.name, c.output_path)
    return history, summary


def _summary(c: PretrainConfig, result: PretrainResult, data: dict[str, Any]) -> dict[str, Any]:
    """What was trained, how well, where it is saved and how an experiment uses it."""
    usage = {"pretrained": "backbone", "backbone": c.arch, "in_channels": c.in_channels,
             "weights_path": c.name}  # fmt: skip
    return {
        "name": c.name,
        "file": str(c.output_path),
        "arch": c.arch,
        "in_channels": c.in_channels,
        "source": c.source,
        "classes": result.classes,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "epochs": c.epochs,
        "train_seconds": result.train_seconds,
        "usage": {"model": usage},
        **data,
    }


def _datasets(c: PretrainConfig, coco: CocoDataset | None, intensity: Any) -> tuple[Any, Any, dict]:
    """Train and validation sets of the configured source, and what they hold."""
    transform = build_transform(c.augmentation, train=True, seed=c.seed)
    if c.source == "crops":
        if coco is None:
            raise ConfigError(
                "pretrain.source 'crops' needs the COCO dataset "
                "(the data pipeline's model_input_coco)"
            )
        train_set, val_set, summary = crop_datasets(coco, c, transform, intensity)
        return train_set, val_set, {**summary, "dataset": str(coco.root)}
    train_set, val_set = folder_datasets(c.folder_root, c, transform, intensity)
    return (
        train_set,
        val_set,
        {
            "dataset": str(c.folder_root),
            "train_images": _counts(train_set),
            "val_images": _counts(val_set) if val_set else {},
        },
    )


def _counts(dataset: Any) -> dict[str, int]:
    return {name: int((dataset.labels == i).sum()) for i, name in enumerate(dataset.classes)}
