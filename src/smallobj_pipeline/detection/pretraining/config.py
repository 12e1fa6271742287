"""The pretraining settings (``pretrain:`` in ``conf/base/parameters_pretrain.yml``), each
declared once with its default and a one-line description, checked by pydantic (strict numbers:
a boolean or a string is not a number here). Errors are the project's :class:`ConfigError`
naming the key (:func:`..engine.config.parse_settings`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..constants import (
    BACKBONES,
    IMAGENET_GRAY_MEAN,
    IMAGENET_GRAY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPTIMIZERS,
)
from ..engine.config import NonNegative, parse_settings
from ..errors import ConfigError
from ..modeling.config import (
    Channels,
    ConfigSection,
    Flag,
    Fraction,
    Integer,
    PositiveInt,
    PositiveNumber,
)

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


Arch = Literal[BACKBONES]  # type: ignore[valid-type]


class PretrainConfig(ConfigSection):
    """Every setting of backbone pretraining."""

    SECTION: ClassVar[str] = "pretrain"

    # fmt: off
    name: str = Field("indomain_r18_gray", description=(
        "the file <output_dir>/<name>.pt; experiments use weights_path: <name>"))
    arch: Arch = Field("resnet18", description="= the detector's model.backbone")
    in_channels: Channels = Field(1, description="= the detector's model.in_channels")
    source: Literal["crops", "folder"] = Field("crops", description=(
        "crops of the COCO training split | folder (folder_root/<class>/*.png)"))
    folder_root: str | None = Field(None, description="for source: folder")
    crop_size: PositiveInt = Field(64, description="every crop or folder image is resized to this")
    context: NonNegative = Field(0.5, description=(
        "object window side = box side x (1 + 2 x context), centred on the box"))
    min_crop_side: PositiveInt = Field(8, description="smallest window side in source pixels")
    crops_per_image: PositiveInt | None = Field(None, description=(
        "at most this many object crops per image (seeded); null: all"))
    background_ratio: NonNegative = Field(0.5, description=(
        "background crops per object crop (0: no background class)"))
    background_attempts: PositiveInt = Field(50, description=(
        "random placements tried per background crop"))
    train_split: str = Field("train", description="crops for training come from this split")
    val_split: str = Field("val", description="crops for the validation accuracy from this one")
    val_fraction: NonNegative = Field(0.2, le=0.9, description=(
        "folder without train/ + val/: share of each class held out (seeded)"))
    epochs: PositiveInt = Field(15, description="passes over the training crops")
    batch_size: PositiveInt = Field(64, description="crops per step")
    optimizer: Literal[OPTIMIZERS] = Field("sgd", description=(  # type: ignore[valid-type]
        "sgd (Nesterov momentum) | adamw"))
    lr: PositiveNumber = Field(0.05, description="peak learning rate")
    momentum: Fraction = Field(0.9, description="SGD momentum (Nesterov when > 0)")
    weight_decay: NonNegative = Field(5e-4, description="not applied to norms and biases")
    warmup_epochs: NonNegative = Field(1.0, description=(
        "linear warm-up from warmup_factor x lr, then cosine decay per iteration"))
    warmup_factor: Fraction = Field(0.01, description="the warm-up starts at this fraction of lr")
    min_lr_ratio: Fraction = Field(0.0, description="cosine floor as a fraction of lr")
    label_smoothing: NonNegative = Field(0.0, le=0.99, description="cross-entropy label smoothing")
    zero_init_residual: Flag = Field(False, description=(
        "each residual block starts as the identity"))
    image_mean: Any = Field(None, description=(
        "null: the detector's default (ImageNet's; their mean for 1 channel)"))
    image_std: Any = Field(None, description="as image_mean")
    augmentation: dict[str, Any] | None = Field(
        default_factory=lambda: dict(DEFAULT_AUGMENTATION),
        description="the detector's augmentation schema (data/augment.py)")
    seed: Integer = Field(42, description="crops, sampling, augmentation and initialisation")
    deterministic: Flag = Field(True, description="deterministic algorithms on CPU")
    device: str = Field("auto", description="auto (CUDA when available) | cpu | cuda | cuda:N")
    num_workers: int | str = Field("auto", description="auto: 0 on CPU, min(4, cpus) on CUDA")
    log_every: PositiveInt = Field(20, description="steps between progress lines")
    output_dir: str = Field("data/06_models/backbones", description="where <name>.pt is written")
    # fmt: on

    @classmethod
    def from_dict(
        cls, cfg: Mapping[str, Any] | None, experiment: str | None = None
    ) -> PretrainConfig:
        return parse_settings(cls, cfg, cls.unknown_message, experiment)

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ConfigError(
                f"pretrain.name {value!r} is not a valid file name: "
                "use letters, digits, '_', '-', '.'"
            )
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
