"""Backbone pretraining without downloads: a ResNet trained as a classifier, saved so the model
factory's ``pretrained: backbone`` mode loads it by name.

Seed 003 found that pretrained backbone weights matter most and that a detector trained from
scratch barely learns; seed 004 gives the remedy when no downloadable weights exist: pretrain the
backbone as an image classifier, then fine-tune the detector. Two sources of training data:

- ``crops`` (in-domain, needs no other data): square windows cut from a :class:`CocoDataset`
  split around each object (its box plus ``context`` times its side on every side, at least
  ``min_crop_side`` px, moved inside the image where it fits, zero-padded where it does not),
  labelled by category, plus ``background`` windows (sides drawn from the same image's object
  windows, placed by a seeded RNG) that intersect no box at all. Every window is resized to
  ``crop_size`` px. The train split gives the training crops, the val split the validation ones.
- ``folder``: an image-classification folder ``root/<class_name>/*.png`` (PNG/JPEG/TIFF, any
  size, resized to ``crop_size``), or ``root/train/<class>/...`` + ``root/val/<class>/...`` for a
  fixed split; otherwise ``val_fraction`` of each class is held out (seeded).

Training is standard classification: cross-entropy (optional label smoothing), SGD or AdamW,
linear warm-up then cosine decay per iteration, the detector's augmentation schema
(:mod:`.augment`: flips, rotate90, brightness/contrast, noise, ...), validation accuracy per
epoch, logging with ETA, seeded and deterministic on CPU. Inputs are normalised exactly as the
detector normalises its images (``model.image_mean`` / ``image_std`` defaults: ImageNet's, or
their mean for 1 channel), so the features the backbone learns are the ones it will see.

:func:`save_backbone` writes ``<output_dir>/<name>.pt``: a checkpoint dict whose ``"model"`` is
the ResNet body's state dict with torchvision key names (``conv1.weight``, ``layer1.0...``; no
``fc.*``), plus metadata (arch, in_channels, classes, history...). Reference it from an
experiment with ``model: {pretrained: backbone, backbone: <arch>, in_channels: <same>,
weights_path: <name>}`` (looked up in ``data/06_models/backbones``; set ``model.weights_dir`` if
``output_dir`` differs). A conv1 saved with 1 input channel loads as it is into a 1-channel
detector. No Kedro in here.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.coco import IMAGE_SUFFIXES, CocoDataset, read_image
from ..data.dataset import image_to_tensor, to_channels
from ..engine.trainer import (
    _fmt_seconds,
    cosine_multiplier,
    epoch_loader,
    loader_workers,
    seed_everything,
    warmup_multiplier,
)
from ..errors import ConfigError, DatasetError
from ..evaluation.inference import select_device

logger = logging.getLogger(__name__)

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
SOURCES = ("crops", "folder")
OPTIMIZERS = ("sgd", "adamw")
BACKGROUND = "background"
BACKBONE_FORMAT = "smallobj_pipeline/backbone-v1"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PER_CLASS_COLUMNS_MAX = 10  # per-class validation accuracy in the history up to this many classes

DEFAULT_AUGMENTATION: dict[str, Any] = {
    "enabled": True,
    "hflip": 0.5,
    "vflip": 0.5,
    "rotate90": 0.5,
    "brightness_contrast": {"p": 0.5, "limit": 0.2},
    "noise": {"p": 0.3, "std": [0.01, 0.05]},
}


# ---------------------------------------------------------------------------- configuration
@dataclass
class PretrainConfig:
    """Every setting of backbone pretraining (``conf/base/parameters_pretrain.yml``)."""

    name: str = "indomain_r18_gray"  # file <output_dir>/<name>.pt; experiments use weights_path: <name>
    arch: str = "resnet18"  # resnet18 | resnet34 | resnet50 | resnet101
    in_channels: int = 1  # 1 | 3 (must equal the detector's model.in_channels)
    source: str = "crops"  # crops (from the COCO training split) | folder (root/class/*.png)
    folder_root: str | None = None  # for source: folder
    crop_size: int = 64  # every crop / folder image is resized to crop_size x crop_size
    context: float = 0.5  # object window = box side x (1 + 2 x context), square, centred on the box
    min_crop_side: int = 8  # smallest window side in source pixels
    crops_per_image: int | None = None  # at most this many object crops per image (random, seeded); None: all
    background_ratio: float = 0.5  # background crops per object crop (0: no background class)
    background_attempts: int = 50  # random placements tried per background crop
    train_split: str = "train"
    val_split: str = "val"
    val_fraction: float = 0.2  # folder source without root/train + root/val: held out per class
    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0  # linear warm-up from warmup_factor x lr
    warmup_factor: float = 0.01
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    label_smoothing: float = 0.0
    zero_init_residual: bool = False
    image_mean: Any = None  # None: the detector's default (ImageNet's; their mean for 1 channel)
    image_std: Any = None
    augmentation: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_AUGMENTATION))
    seed: int = 42
    deterministic: bool = True
    device: str = "auto"
    num_workers: int | str = "auto"  # auto: 0 on CPU, min(4, cpus) on CUDA
    log_every: int = 20  # steps
    output_dir: str = "data/06_models/backbones"

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> PretrainConfig:
        cfg = dict(cfg or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(cfg) - set(valid))
        if unknown:
            raise ConfigError(f"pretrain: unknown setting(s) {unknown}; valid settings: {', '.join(valid)}")
        return cls(**cfg)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ConfigError(
                f"pretrain.name {self.name!r} is not a valid file name: use letters, digits, '_', '-', '.'"
            )
        if self.arch not in ARCHS:
            raise ConfigError(f"pretrain.arch must be one of {list(ARCHS)}, got {self.arch!r}")
        if self.in_channels not in (1, 3) or isinstance(self.in_channels, bool):
            raise ConfigError(f"pretrain.in_channels must be 1 or 3, got {self.in_channels!r}")
        if self.source not in SOURCES:
            raise ConfigError(f"pretrain.source must be one of {list(SOURCES)}, got {self.source!r}")
        if self.source == "folder" and not self.folder_root:
            raise ConfigError("pretrain.source 'folder' needs pretrain.folder_root (a folder of root/<class>/*.png)")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"pretrain.optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("crop_size", "min_crop_side", "epochs", "batch_size", "background_attempts", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"pretrain.{name} must be an integer >= 1, got {value!r}")
        if self.crops_per_image is not None and (
            isinstance(self.crops_per_image, bool) or not isinstance(self.crops_per_image, int) or self.crops_per_image < 1
        ):
            raise ConfigError(f"pretrain.crops_per_image must be an integer >= 1 or null, got {self.crops_per_image!r}")
        for name, lo, hi in (
            ("context", 0.0, None), ("background_ratio", 0.0, None), ("val_fraction", 0.0, 0.9),
            ("warmup_epochs", 0.0, None), ("warmup_factor", 0.0, 1.0), ("min_lr_ratio", 0.0, 1.0),
            ("label_smoothing", 0.0, 0.99), ("weight_decay", 0.0, None), ("momentum", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < lo or (hi is not None and value > hi):
                bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise ConfigError(f"pretrain.{name} must be a number {bounds}, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or not self.lr > 0:
            raise ConfigError(f"pretrain.lr must be > 0, got {self.lr!r}")
        self.image_mean = _per_channel("image_mean", self.image_mean, self.in_channels, IMAGENET_MEAN)
        self.image_std = _per_channel("image_std", self.image_std, self.in_channels, IMAGENET_STD)
        if any(s <= 0 for s in self.image_std):
            raise ConfigError(f"pretrain.image_std must be positive, got {self.image_std}")

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir) / f"{self.name}.pt"


def _per_channel(name: str, value: Any, channels: int, imagenet: Sequence[float]) -> list[float]:
    """As the detector's defaults (:mod:`.models`): ImageNet's per channel, or their mean for 1."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return list(imagenet) if channels == 3 else [round(sum(imagenet) / len(imagenet), 6)]
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"pretrain.{name} must be numbers, got {value!r}")
    values = [float(v) for v in values]
    if len(values) == 1 and channels == 3:
        values *= 3
    if len(values) != channels:
        raise ConfigError(f"pretrain.{name} needs {channels} value(s) for in_channels {channels}, got {values}")
    return values


# ---------------------------------------------------------------------------- crops
@dataclass
class CropSet:
    """Crops cut from a COCO split. ``windows`` are ``x0, y0, x1, y1`` in source-image pixels
    (they may extend past the image where it was padded); ``kinds`` is ``object`` or
    ``background``; ``ann_ids`` the annotation of each object crop (``None`` for background)."""

    images: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    windows: np.ndarray
    image_ids: list[Any]
    kinds: list[str]
    ann_ids: list[Any]

    def __len__(self) -> int:
        return len(self.images)

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.classes)}


def crop_classes(coco: CocoDataset, background: bool) -> tuple[list[str], dict[int, int]]:
    """Class names (``background`` first when used) and category id -> class index."""
    names = coco.category_names()
    offset = 1 if background else 0
    classes = ([BACKGROUND] if background else []) + [names[cid] for cid in coco.category_ids]
    if len(set(classes)) != len(classes):  # duplicate names: make them unique with the id
        classes = ([BACKGROUND] if background else []) + [f"{names[cid]}_{cid}" for cid in coco.category_ids]
    return classes, {cid: i + offset for i, cid in enumerate(coco.category_ids)}


def object_window(bbox: Sequence[float], width: int, height: int, context: float, min_side: int) -> tuple[int, int, int]:
    """Square window ``(x0, y0, side)`` around a COCO box ``[x, y, w, h]``: side = the box's
    longer side x (1 + 2 x context), at least ``min_side`` and 2 px more than the box (so
    rounding never cuts it), centred on the box, then moved inside the image along each axis
    where it fits. It always contains the box."""
    x, y, w, h = (float(v) for v in bbox)
    side = max(int(min_side), math.ceil(max(w, h) * (1.0 + 2.0 * context)), math.ceil(max(w, h)) + 2)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = math.floor(cx - side / 2.0), math.floor(cy - side / 2.0)
    x0 = _inside(x0, side, width, x, x + w)
    y0 = _inside(y0, side, height, y, y + h)
    return x0, y0, side


def _inside(start: int, side: int, limit: int, lo: float, hi: float) -> int:
    if side <= limit:
        return min(max(start, 0), limit - side)
    # window larger than the image: keep it centred on the box (padding on both sides)
    return min(max(start, math.ceil(hi) - side), math.floor(lo))


def crop_square(image: np.ndarray, x0: int, y0: int, side: int, out_size: int) -> np.ndarray:
    """``image[y0:y0+side, x0:x0+side]`` (zero-padded outside the image) resized to ``out_size``."""
    h, w = image.shape[:2]
    shape = (side, side) + image.shape[2:]
    window = np.zeros(shape, dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        window[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if side == out_size:
        return window
    interp = cv2.INTER_AREA if side > out_size else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(window, (out_size, out_size), interpolation=interp))


def _intersects_any(x0: float, y0: float, side: float, boxes: np.ndarray) -> bool:
    """Whether the window shares any area with a box (``x1, y1, x2, y2`` rows); touching is not."""
    if not len(boxes):
        return False
    return bool(np.any((x0 < boxes[:, 2]) & (x0 + side > boxes[:, 0]) & (y0 < boxes[:, 3]) & (y0 + side > boxes[:, 1])))


def background_windows(
    boxes_xyxy: np.ndarray,
    width: int,
    height: int,
    sides: Sequence[int],
    count: int,
    rng: np.random.Generator,
    attempts: int = 50,
    min_side: int = 8,
) -> list[tuple[int, int, int]]:
    """Up to ``count`` windows ``(x0, y0, side)`` inside the image that intersect no box.

    Each side is drawn from ``sides`` (the image's object windows); a crowded image where no
    placement is found in ``attempts`` tries is retried with half the side (not below
    ``min_side``), else that crop is given up."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out: list[tuple[int, int, int]] = []
    if not sides or count <= 0:
        return out
    for _ in range(count):
        side = int(sides[int(rng.integers(len(sides)))])
        side = min(side, width, height)
        placed = None
        while placed is None and side >= min(min_side, width, height):
            for _ in range(attempts):
                x0 = int(rng.integers(0, width - side + 1))
                y0 = int(rng.integers(0, height - side + 1))
                if not _intersects_any(x0, y0, side, boxes):
                    placed = (x0, y0, side)
                    break
            if placed is None:
                if side // 2 < min(min_side, width, height):
                    break
                side //= 2
        if placed is not None:
            out.append(placed)
    return out


def extract_crops(
    coco: CocoDataset,
    image_ids: Sequence[Any] | None = None,
    *,
    crop_size: int = 64,
    context: float = 0.5,
    min_crop_side: int = 8,
    crops_per_image: int | None = None,
    background_ratio: float = 0.5,
    background_attempts: int = 50,
    in_channels: int = 1,
    seed: int = 0,
    intensity: Any = None,
) -> CropSet:
    """Object and background crops of ``image_ids`` (default: every image), see the module
    docstring. Crowd annotations give no object crop but are avoided by background crops.
    Deterministic for a given ``seed``. Pixels are scaled by ``intensity`` (:mod:`.intensity`),
    as the detector will see them."""
    rng = np.random.default_rng(seed)
    background = background_ratio > 0
    classes, class_of_category = crop_classes(coco, background)
    if len(classes) < 2:
        raise ConfigError(
            f"{coco.root}: a classifier needs at least 2 classes, the dataset has {coco.num_classes} category: "
            "set pretrain.background_ratio > 0 to add a background class"
        )
    ids = [img["id"] for img in coco.images] if image_ids is None else list(image_ids)
    anns_per_image = {i: coco.annotations_by_image.get(i, []) for i in ids}
    mean_objects = float(np.mean([len(a) for a in anns_per_image.values()])) if ids else 0.0
    images, labels, windows, crop_image_ids, kinds, ann_ids = [], [], [], [], [], []
    all_sides: list[int] = []
    for image_id in ids:
        info = coco.images_by_id[image_id]
        image = to_channels(coco.read_image(image_id, intensity), in_channels)
        height, width = image.shape[:2]
        anns = anns_per_image[image_id]
        objects = [a for a in anns if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        if crops_per_image is not None and len(objects) > crops_per_image:
            keep = sorted(rng.choice(len(objects), size=crops_per_image, replace=False).tolist())
            objects = [objects[i] for i in keep]
        sides = []
        for ann in objects:
            x0, y0, side = object_window(ann["bbox"], width, height, context, min_crop_side)
            images.append(crop_square(image, x0, y0, side, crop_size))
            labels.append(class_of_category[ann["category_id"]])
            windows.append((x0, y0, x0 + side, y0 + side))
            crop_image_ids.append(image_id)
            kinds.append("object")
            ann_ids.append(ann.get("id"))
            sides.append(side)
        all_sides += sides
        if not background:
            continue
        wanted = background_ratio * (len(objects) if objects else mean_objects)
        count = int(math.floor(wanted) + (rng.random() < wanted - math.floor(wanted)))
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        pool = sides or all_sides or [max(min_crop_side, crop_size)]
        placed = background_windows(
            boxes, int(width), int(height), pool, count, rng, attempts=background_attempts, min_side=min_crop_side
        )
        if len(placed) < count:
            logger.debug("image %s: %d of %d background crops placed (crowded image)", info["id"], len(placed), count)
        for x0, y0, side in placed:
            images.append(crop_square(image, x0, y0, side, crop_size))
            labels.append(0)
            windows.append((x0, y0, x0 + side, y0 + side))
            crop_image_ids.append(image_id)
            kinds.append("background")
            ann_ids.append(None)
    return CropSet(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        classes=classes,
        windows=np.asarray(windows, dtype=np.int64).reshape(-1, 4),
        image_ids=crop_image_ids,
        kinds=kinds,
        ann_ids=ann_ids,
    )


# ---------------------------------------------------------------------------- datasets
def _normaliser(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as (C, 1, 1) tensors, built once per dataset."""
    return (torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1),
            torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1))


def _to_tensor(image: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (image_to_tensor(image) - mean) / std


def _augment(transform: Any, image: np.ndarray) -> np.ndarray:
    if transform is None:
        return image
    from ..data.augment import apply_transform

    out, _, _ = apply_transform(transform, image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
    return out


class ArrayClassificationDataset(Dataset):
    """In-memory uint8 images (all ``S x S``) with integer labels."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[int],
        classes: Sequence[str],
        transform: Any = None,
        mean: Sequence[float] = (0.449,),
        std: Sequence[float] = (0.226,),
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = list(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.transform = transform
        self.mean, self.std = _normaliser(mean, std)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = _augment(self.transform, self.images[index])
        return _to_tensor(image, self.mean, self.std), int(self.labels[index])


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted sub-folder names) and ``(file, class index)`` of ``root/<class>/**/*``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: classification folder not found (expected {root}/<class_name>/*.png)")
    dirs = _class_dirs(root)
    samples = [(f, i) for i, d in enumerate(dirs) for f in _image_files(d)]
    if len(dirs) < 2:
        raise DatasetError(f"{root}: a classification folder needs at least 2 class sub-folders, found {[d.name for d in dirs]}")
    empty = [d.name for i, d in enumerate(dirs) if not any(c == i for _, c in samples)]
    if empty:
        raise DatasetError(f"{root}: class folder(s) {empty} hold no image ({', '.join(IMAGE_SUFFIXES)})")
    return [d.name for d in dirs], samples


class FolderClassificationDataset(Dataset):
    """An image-classification folder, ``root/<class_name>/*.png`` (PNG/JPEG/TIFF, nested
    folders allowed). Images are read lazily, given ``in_channels`` and resized to
    ``image_size`` x ``image_size``. ``samples`` (``(file, class index)`` pairs) restricts it to
    a subset; ``classes`` defaults to the sorted sub-folder names."""

    def __init__(
        self,
        root: str | Path,
        in_channels: int = 1,
        image_size: int = 64,
        transform: Any = None,
        samples: Sequence[tuple[Path, int]] | None = None,
        classes: Sequence[str] | None = None,
        mean: Sequence[float] = (0.449,),
        std: Sequence[float] = (0.226,),
        intensity: Any = None,
    ):
        self.root = Path(root)
        self.intensity = intensity
        if samples is None or classes is None:
            found_classes, found = scan_folder(self.root)
            classes = classes or found_classes
            samples = found if samples is None else samples
        self.classes = list(classes)
        self.samples = [(Path(f), int(c)) for f, c in samples]
        self.labels = np.asarray([c for _, c in self.samples], dtype=np.int64)
        self.in_channels = in_channels
        self.image_size = int(image_size)
        self.transform = transform
        self.mean, self.std = _normaliser(mean, std)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> np.ndarray:
        path, _ = self.samples[index]
        image = to_channels(read_image(path, intensity=self.intensity), self.in_channels)
        h, w = image.shape[:2]
        if (h, w) != (self.image_size, self.image_size):
            interp = cv2.INTER_AREA if max(h, w) > self.image_size else cv2.INTER_LINEAR
            image = np.ascontiguousarray(cv2.resize(image, (self.image_size, self.image_size), interpolation=interp))
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = _augment(self.transform, self.load(index))
        return _to_tensor(image, self.mean, self.std), int(self.samples[index][1])


def folder_datasets(
    root: str | Path, cfg: PretrainConfig, transform: Any, intensity: Any = None
) -> tuple[FolderClassificationDataset, FolderClassificationDataset | None]:
    """Train and validation sets of a folder: ``root/train`` + ``root/val`` when both exist,
    else a seeded hold-out of ``val_fraction`` of each class (at least one image per class
    stays in training)."""
    root = Path(root)
    common = {"in_channels": cfg.in_channels, "image_size": cfg.crop_size, "mean": cfg.image_mean,
              "std": cfg.image_std, "intensity": intensity}
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train_samples = scan_folder(root / "train")
        val_classes, val_found = scan_folder(root / "val")
        index = {name: i for i, name in enumerate(classes)}
        unknown = [name for name in val_classes if name not in index]
        if unknown:
            raise DatasetError(f"{root / 'val'}: class folder(s) {unknown} are not in {root / 'train'}")
        val_samples = [(f, index[val_classes[c]]) for f, c in val_found]
        return (
            FolderClassificationDataset(root / "train", transform=transform, samples=train_samples, classes=classes, **common),
            FolderClassificationDataset(root / "val", samples=val_samples, classes=classes, **common),
        )
    classes, samples = scan_folder(root)
    rng = np.random.default_rng(cfg.seed)
    train_samples, val_samples = [], []
    for c in range(len(classes)):
        members = [s for s in samples if s[1] == c]
        order = rng.permutation(len(members))
        n_val = min(len(members) - 1, int(round(cfg.val_fraction * len(members))))
        val_idx = set(order[:n_val].tolist())
        for i, s in enumerate(members):
            (val_samples if i in val_idx else train_samples).append(s)
    train = FolderClassificationDataset(root, transform=transform, samples=train_samples, classes=classes, **common)
    val = FolderClassificationDataset(root, samples=val_samples, classes=classes, **common) if val_samples else None
    return train, val


def crop_datasets(
    coco: CocoDataset, cfg: PretrainConfig, transform: Any, intensity: Any = None
) -> tuple[ArrayClassificationDataset, ArrayClassificationDataset | None, dict[str, Any]]:
    """Train / validation crop sets from the ``train_split`` / ``val_split`` of ``coco`` (the
    whole dataset when it has no splits), plus a summary of what was cut."""
    kwargs = {
        "crop_size": cfg.crop_size, "context": cfg.context, "min_crop_side": cfg.min_crop_side,
        "crops_per_image": cfg.crops_per_image, "background_ratio": cfg.background_ratio,
        "background_attempts": cfg.background_attempts, "in_channels": cfg.in_channels,
        "intensity": intensity,
    }
    if coco.splits:
        if not coco.splits.get(cfg.train_split):
            raise DatasetError(f"{coco.root}: the '{cfg.train_split}' split is empty or missing (splits: {sorted(coco.splits)})")
        train_ids = coco.splits[cfg.train_split]
        val_ids = coco.splits.get(cfg.val_split) or []
    else:
        train_ids, val_ids = [img["id"] for img in coco.images], []
    train = extract_crops(coco, train_ids, seed=cfg.seed, **kwargs)
    val = extract_crops(coco, val_ids, seed=cfg.seed + 1, **kwargs) if val_ids else None
    if not len(train):
        raise DatasetError(f"{coco.root}: no crop could be cut from the '{cfg.train_split}' split (no boxes?)")
    summary = {"train_crops": train.counts(), "val_crops": val.counts() if val is not None else {}}
    logger.info("pretraining crops: train %s, val %s", summary["train_crops"], summary["val_crops"] or "none")
    mean, std = cfg.image_mean, cfg.image_std
    train_set = ArrayClassificationDataset(train.images, train.labels, train.classes, transform, mean, std)
    val_set = ArrayClassificationDataset(val.images, val.labels, val.classes, None, mean, std) if val is not None and len(val) else None
    return train_set, val_set, summary


# ---------------------------------------------------------------------------- model and training
def build_classifier(arch: str, in_channels: int, num_classes: int, zero_init_residual: bool = False) -> nn.Module:
    """torchvision ``resnet{18,34,50,101}(weights=None, num_classes=K)`` with BatchNorm (as the
    pretrained files torchvision provides); for ``in_channels != 3`` conv1 is replaced by
    ``Conv2d(in_channels, 64, 7, 2, 3)`` (Kaiming init, as the detector's)."""
    from torchvision.models import resnet

    if arch not in ARCHS:
        raise ConfigError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    model = resnet.__dict__[arch](weights=None, num_classes=int(num_classes), zero_init_residual=zero_init_residual)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def lr_multiplier(it: int, total_iters: int, warmup_iters: int, warmup_factor: float, min_lr_ratio: float) -> float:
    """Linear warm-up (from ``warmup_factor``) times cosine decay to ``min_lr_ratio`` over all iterations."""
    return warmup_multiplier(it, warmup_iters, warmup_factor) * cosine_multiplier(it, total_iters, min_lr_ratio)


@dataclass
class PretrainResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_accuracy: float
    best_state: dict[str, torch.Tensor]
    train_seconds: float
    classes: list[str]


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 128) -> dict[str, Any]:
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
    per_class = {name: (float(correct[i] / total[i]) if total[i] else float("nan")) for i, name in enumerate(classes)}
    return {
        "loss": loss_sum / max(1, n),
        "accuracy": float(correct.sum() / max(1, total.sum())),
        "per_class": per_class,
    }


def train_classifier(
    model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: PretrainConfig, name: str = "pretrain"
) -> PretrainResult:
    """Standard classification training; the best epoch by validation accuracy (or the last
    one without a validation set) is kept. Seeded per epoch (sampling and augmentation)."""
    seed_everything(cfg.seed, cfg.deterministic)
    device = select_device(cfg.device)
    cuda = device.type == "cuda"
    workers = loader_workers(cfg.num_workers, cuda)
    model = model.to(device)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    else:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    drop_last = len(train_set) > cfg.batch_size
    steps = len(train_set) // cfg.batch_size if drop_last else 1
    total_iters = steps * cfg.epochs
    warmup_iters = int(round(cfg.warmup_epochs * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_multiplier(it, total_iters, warmup_iters, cfg.warmup_factor, cfg.min_lr_ratio)
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=float(cfg.label_smoothing))
    classes = list(getattr(train_set, "classes", []))
    per_class_columns = len(classes) <= PER_CLASS_COLUMNS_MAX

    history: list[dict[str, Any]] = []
    best_acc, best_epoch, best_state = -math.inf, 0, None
    fit_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        epoch_start = time.perf_counter()
        loader = epoch_loader(train_set, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch,
                              deterministic=cfg.deterministic, workers=workers, cuda=cuda, drop_last=drop_last)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        n_steps = len(loader)
        for step, (images, labels) in enumerate(loader):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = model(images)
            loss = criterion(logits, labels)
            if not torch.isfinite(loss):
                raise RuntimeError(
                    f"[{name}] non-finite loss at epoch {epoch + 1}, step {step + 1}: lower pretrain.lr "
                    f"(now {optimizer.param_groups[0]['lr']:.3g})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * int(labels.numel())
            correct += int((logits.detach().argmax(1) == labels).sum())
            seen += int(labels.numel())
            if (step + 1) % cfg.log_every == 0 or step + 1 == n_steps:
                elapsed = time.perf_counter() - epoch_start
                logger.info(
                    "[%s] epoch %d/%d step %d/%d loss %.4f acc %.3f lr %.3g | epoch ETA %s",
                    name, epoch + 1, cfg.epochs, step + 1, n_steps, loss_sum / max(1, seen), correct / max(1, seen),
                    optimizer.param_groups[0]["lr"], _fmt_seconds(elapsed / (step + 1) * (n_steps - step - 1)),
                )
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, seen),
            "train_accuracy": correct / max(1, seen),
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": time.perf_counter() - epoch_start,
        }
        if val_set is not None and len(val_set):
            val = evaluate_classifier(model, val_set, device, batch_size=max(cfg.batch_size, 64))
            row["val_loss"], row["val_accuracy"] = val["loss"], val["accuracy"]
            if per_class_columns:
                row.update({f"val_accuracy_{c}": v for c, v in val["per_class"].items()})
            metric = val["accuracy"]
        else:
            metric = None  # no validation set: the last epoch is kept
        row["epoch_seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        improved = metric is None or metric > best_acc + 1e-12
        if improved:
            best_acc = metric if metric is not None else best_acc
            best_epoch = epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        eta = (time.perf_counter() - fit_start) / (epoch + 1) * (cfg.epochs - epoch - 1)
        val_txt = f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}" if "val_accuracy" in row else ""
        logger.info(
            "[%s] epoch %d/%d done in %s: train_loss %.4f train_acc %.4f%s%s | ETA %s",
            name, epoch + 1, cfg.epochs, _fmt_seconds(row["epoch_seconds"]), row["train_loss"], row["train_accuracy"],
            val_txt, " (best)" if improved and metric is not None else "", _fmt_seconds(eta),
        )
    assert best_state is not None
    return PretrainResult(
        history=history,
        best_epoch=best_epoch,
        best_val_accuracy=best_acc if math.isfinite(best_acc) else float("nan"),
        best_state=best_state,
        train_seconds=time.perf_counter() - fit_start,
        classes=classes,
    )


# ---------------------------------------------------------------------------- saving and loading
def backbone_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A classifier's state dict without its ``fc.*`` head: the ResNet body, torchvision keys."""
    return {k: v.detach().cpu().clone() for k, v in state.items() if not k.startswith("fc.")}


def save_backbone(
    state: Mapping[str, torch.Tensor] | nn.Module,
    path: str | Path,
    *,
    arch: str,
    in_channels: int,
    classes: Sequence[str],
    history: Sequence[Mapping[str, Any]] = (),
    **metadata: Any,
) -> Path:
    """Write the backbone checkpoint atomically: ``{"model": body state dict (no fc.*), "arch",
    "in_channels", "classes", "history", ...metadata}``; readable with weights_only loading
    (:func:`.weights.load_state_dict` unwraps ``"model"``)."""
    if isinstance(state, nn.Module):
        state = state.state_dict()
    payload = {
        "format": BACKBONE_FORMAT,
        "kind": "resnet_backbone",
        "model": backbone_state(state),
        "arch": str(arch),
        "in_channels": int(in_channels),
        "classes": [str(c) for c in classes],
        "history": [_plain(row) for row in history],
    }
    payload.update({k: _plain(v) for k, v in metadata.items()})
    return save_checkpoint(payload, path)


def _plain(value: Any) -> Any:
    """Only tensors and plain containers/scalars in a checkpoint (weights_only loading)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def load_backbone(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict written by :func:`save_backbone` (weights_only loading)."""
    data = load_checkpoint(path)
    if not isinstance(data.get("model"), Mapping):
        raise DatasetError(f"{path}: not a backbone checkpoint (no 'model' state dict)")
    return data


# ---------------------------------------------------------------------------- the whole job
def run_pretraining(
    cfg: Mapping[str, Any] | PretrainConfig, coco: CocoDataset | None = None, intensity: Any = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build the data (``source``), train the classifier, save the backbone to
    ``<output_dir>/<name>.pt``. Returns ``(history, summary)``; ``summary`` names the file and
    how to reference it from an experiment. ``intensity``: how pixels are scaled (the dataset
    statistics' spec, the same the detector trains with)."""
    from ..data.augment import build_transform

    c = cfg if isinstance(cfg, PretrainConfig) else PretrainConfig.from_dict(cfg)
    transform = build_transform(c.augmentation, train=True, seed=c.seed)
    if c.source == "crops":
        if coco is None:
            raise ConfigError("pretrain.source 'crops' needs the COCO dataset (the data pipeline's model_input_coco)")
        train_set, val_set, data_summary = crop_datasets(coco, c, transform, intensity)
        data_summary["dataset"] = str(coco.root)
    else:
        train_set, val_set = folder_datasets(c.folder_root, c, transform, intensity)
        data_summary = {
            "dataset": str(c.folder_root),
            "train_images": {name: int((train_set.labels == i).sum()) for i, name in enumerate(train_set.classes)},
            "val_images": {name: int((val_set.labels == i).sum()) for i, name in enumerate(val_set.classes)} if val_set else {},
        }
    classes = list(train_set.classes)
    seed_everything(c.seed, c.deterministic)
    model = build_classifier(c.arch, c.in_channels, len(classes), c.zero_init_residual)
    logger.info(
        "[%s] pretraining %s (%d channel(s)) as a %d-class classifier on %s: %d train / %d val samples, %d epochs",
        c.name, c.arch, c.in_channels, len(classes), c.source, len(train_set), len(val_set) if val_set else 0, c.epochs,
    )
    result = train_classifier(model, train_set, val_set, c, name=c.name)
    summary = {
        "name": c.name,
        "file": str(c.output_path),
        "arch": c.arch,
        "in_channels": c.in_channels,
        "source": c.source,
        "classes": classes,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "epochs": c.epochs,
        "train_seconds": result.train_seconds,
        "usage": {"model": {"pretrained": "backbone", "backbone": c.arch, "in_channels": c.in_channels,
                            "weights_path": c.name}},
        **data_summary,
    }
    save_backbone(
        result.best_state, c.output_path, arch=c.arch, in_channels=c.in_channels, classes=classes,
        history=result.history, image_mean=c.image_mean, image_std=c.image_std, crop_size=c.crop_size,
        best_epoch=result.best_epoch, best_val_accuracy=result.best_val_accuracy, config=asdict(c),
        summary={k: v for k, v in summary.items() if k != "usage"},
    )
    logger.info(
        "[%s] backbone saved to %s (best epoch %d, val accuracy %.4f); use it with model: %s",
        c.name, c.output_path, result.best_epoch, result.best_val_accuracy, summary["usage"]["model"],
    )
    return result.history, summary


def plot_history(history: Sequence[Mapping[str, Any]], title: str = "Backbone pretraining"):
    """Loss and accuracy (train and validation) per epoch, as a matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for ax, key, label in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "accuracy", "accuracy")):
        for split in ("train", "val"):
            values = [row.get(f"{split}_{key}") for row in history]
            points = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None and not _isnan(v)]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_acc.set_ylim(0, 1.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True
