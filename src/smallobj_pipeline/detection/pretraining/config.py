"""The pretraining settings (``pretrain:`` in ``conf/base/parameters_pretrain.yml``), each
declared once with its default and a one-line comment, checked by pydantic (strict numbers: a
boolean or a string is not a number here). Errors are the project's :class:`ConfigError` naming
the key (see :class:`~..engine.config.SettingsModel`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..constants import (
    BACKBONES,
    IMAGENET_GRAY_MEAN,
    IMAGENET_GRAY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
)
from ..engine.config import SettingsModel
from ..errors import ConfigError

ARCHS = BACKBONES
SOURCES = ("crops", "folder")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

DEFAULT_AUGMENTATION: dict[str, Any] = {
    "enabled": True,
    "hflip": 0.5,
    "vflip": 0.5,
    "rotate90": 0.5,
    "brightness_contrast": {"p": 0.5, "limit": 0.2},
    "noise": {"p": 0.3, "std": [0.01, 0.05]},
}


def _count(default: int) -> Any:
    return Field(default, ge=1, strict=True)


def _number(default: float, ge: float = 0.0, le: float | None = None) -> Any:
    return Field(default, ge=ge, le=le, strict=True)


class PretrainConfig(SettingsModel):
    """Every setting of backbone pretraining."""

    SECTION: ClassVar[str] = "pretrain"

    name: str = "indomain_r18_gray"  # the file <output_dir>/<name>.pt (weights_path: <name>)
    arch: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet18"  # = ARCHS
    in_channels: Literal[1, 3] = 1  # must equal the detector's model.in_channels
    source: Literal["crops", "folder"] = "crops"  # crops of the COCO training split | a folder
    folder_root: str | None = None  # for source: folder (root/<class>/*.png)
    crop_size: int = _count(64)  # every crop / folder image is resized to crop_size x crop_size
    context: float = _number(0.5)  # window side = box side x (1 + 2 x context), centred on the box
    min_crop_side: int = _count(8)  # smallest window side in source pixels
    crops_per_image: int | None = Field(None, ge=1, strict=True)  # per image at most (null: all)
    background_ratio: float = _number(0.5)  # background crops per object crop (0: no background)
    background_attempts: int = _count(50)  # random placements tried per background crop
    train_split: str = "train"  # crops for training come from this split...
    val_split: str = "val"  # ...and for the validation accuracy from this one
    val_fraction: float = _number(0.2, le=0.9)  # folder without train/ + val/: held out per class
    epochs: int = _count(15)  # passes over the training crops
    batch_size: int = _count(64)  # crops per step
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float = Field(0.05, gt=0, strict=True)  # peak learning rate
    momentum: float = _number(0.9, le=1.0)  # SGD momentum (Nesterov when > 0)
    weight_decay: float = _number(5e-4)  # not applied to norms and biases
    warmup_epochs: float = _number(1.0)  # linear warm-up from warmup_factor x lr, then cosine
    warmup_factor: float = _number(0.01, le=1.0)  # the warm-up starts at this fraction of lr
    min_lr_ratio: float = _number(0.0, le=1.0)  # cosine floor as a fraction of lr
    label_smoothing: float = _number(0.0, le=0.99)  # cross-entropy label smoothing
    zero_init_residual: bool = False  # each residual block starts as the identity
    image_mean: Any = None  # None: the detector's default (ImageNet's; their mean for 1 channel)
    image_std: Any = None  # as image_mean
    augmentation: dict[str, Any] | None = Field(default_factory=lambda: dict(DEFAULT_AUGMENTATION))
    seed: int = 42  # crops, sampling, augmentation and initialisation
    deterministic: bool = True  # deterministic algorithms on CPU
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    num_workers: int | str = "auto"  # auto: 0 on CPU, min(4, cpus) on CUDA
    log_every: int = _count(20)  # steps between progress lines
    output_dir: str = "data/06_models/backbones"  # where <name>.pt is written

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ConfigError(
                f"pretrain.name {value!r} is not a valid file name: "
                "use letters, digits, '_', '-', '.'"
            )
        return value

    @field_validator("in_channels", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # True == 1 for Literal[1, 3]
            raise ConfigError(f"pretrain.in_channels must be 1 or 3, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PretrainConfig:
        if self.source == "folder" and not self.folder_root:
            raise ConfigError(
                "pretrain.source 'folder' needs pretrain.folder_root "
                "(a folder of root/<class>/*.png)"
            )
        channels = self.in_channels
        self.image_mean = per_channel(
            "image_mean", self.image_mean, channels, IMAGENET_MEAN, IMAGENET_GRAY_MEAN
        )
        self.image_std = per_channel(
            "image_std", self.image_std, channels, IMAGENET_STD, IMAGENET_GRAY_STD
        )
        if any(s <= 0 for s in self.image_std):
            raise ConfigError(f"pretrain.image_std must be positive, got {self.image_std}")
        return self

    @classmethod
    def unknown_message(cls, unknown: list[str]) -> str:
        return (
            f"pretrain: unknown setting(s) {unknown}; valid settings: {', '.join(cls.model_fields)}"
        )

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir) / f"{self.name}.pt"


def per_channel(
    name: str, value: Any, channels: int, rgb: Sequence[float], gray: float
) -> list[float]:
    """As the detector's defaults (:mod:`..modeling.factory`): ``rgb`` (ImageNet's) for 3
    channels, ``gray`` (their mean) for 1; a single value is repeated for 3 channels."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return list(rgb) if channels == 3 else [gray]
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"pretrain.{name} must be numbers, got {value!r}")
    values = [float(v) for v in values]
    if len(values) == 1 and channels == 3:
        values *= 3
    if len(values) != channels:
        raise ConfigError(
            f"pretrain.{name} needs {channels} value(s) for in_channels {channels}, got {values}"
        )
    return values
