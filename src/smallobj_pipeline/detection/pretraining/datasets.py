"""Classification datasets for pretraining: in-memory crops (:class:`ArrayClassificationDataset`,
from :mod:`.crops`) or an image-classification folder (:class:`FolderClassificationDataset`,
``root/<class_name>/*.png``, or ``root/train/<class>/...`` + ``root/val/<class>/...`` for a
fixed split; otherwise ``val_fraction`` of each class is held out, seeded). Images go through
the detector's augmentation schema and are normalised exactly as the detector normalises its
own (``image_mean`` / ``image_std``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..constants import IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD
from ..data.augment import apply_transform
from ..data.coco import IMAGE_SUFFIXES, CocoDataset, read_image
from ..data.dataset import image_to_tensor, to_channels
from ..errors import DatasetError
from .config import PretrainConfig
from .crops import extract_crops

logger = logging.getLogger(__name__)


def _normaliser(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as (C, 1, 1) tensors, built once per dataset."""
    return (
        torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1),
        torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1),
    )


def _to_tensor(image: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (image_to_tensor(image) - mean) / std


def _augment(transform: Any, image: np.ndarray) -> np.ndarray:
    if transform is None:
        return image
    out, _, _ = apply_transform(
        transform, image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    )
    return out


class ArrayClassificationDataset(Dataset):
    """In-memory uint8 images (all ``S x S``) with integer labels."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[int],
        classes: Sequence[str],
        transform: Any = None,
        mean: Sequence[float] = (IMAGENET_GRAY_MEAN,),
        std: Sequence[float] = (IMAGENET_GRAY_STD,),
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
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def scan_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted sub-folder names) and ``(file, class index)`` of ``root/<class>/**/*``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: classification folder not found (expected {root}/<class_name>/*.png)"
        )
    dirs = _class_dirs(root)
    samples = [(f, i) for i, d in enumerate(dirs) for f in _image_files(d)]
    if len(dirs) < 2:
        raise DatasetError(
            f"{root}: a classification folder needs at least 2 class sub-folders, "
            f"found {[d.name for d in dirs]}"
        )
    empty = [d.name for i, d in enumerate(dirs) if not any(c == i for _, c in samples)]
    if empty:
        raise DatasetError(
            f"{root}: class folder(s) {empty} hold no image ({', '.join(IMAGE_SUFFIXES)})"
        )
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
        mean: Sequence[float] = (IMAGENET_GRAY_MEAN,),
        std: Sequence[float] = (IMAGENET_GRAY_STD,),
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
            image = np.ascontiguousarray(
                cv2.resize(image, (self.image_size, self.image_size), interpolation=interp)
            )
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
              "std": cfg.image_std, "intensity": intensity}  # fmt: skip
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train_samples, val_samples = _fixed_split(root)
        train_root, val_root = root / "train", root / "val"
    else:
        classes, samples = scan_folder(root)
        train_samples, val_samples = _held_out(samples, len(classes), cfg)
        train_root = val_root = root
    train = FolderClassificationDataset(
        train_root, transform=transform, samples=train_samples, classes=classes, **common
    )
    if not val_samples:
        return train, None
    return train, FolderClassificationDataset(
        val_root, samples=val_samples, classes=classes, **common
    )


def _fixed_split(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Classes and samples of ``root/train`` and ``root/val`` (the val classes in train's order)."""
    classes, train_samples = scan_folder(root / "train")
    val_classes, val_found = scan_folder(root / "val")
    index = {name: i for i, name in enumerate(classes)}
    unknown = [name for name in val_classes if name not in index]
    if unknown:
        raise DatasetError(f"{root / 'val'}: class folder(s) {unknown} are not in {root / 'train'}")
    return classes, train_samples, [(f, index[val_classes[c]]) for f, c in val_found]


def _held_out(
    samples: list[tuple[Path, int]], num_classes: int, cfg: PretrainConfig
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """A seeded ``val_fraction`` of each class for validation, at least one image left to train."""
    rng = np.random.default_rng(cfg.seed)
    train_samples, val_samples = [], []
    for c in range(num_classes):
        members = [s for s in samples if s[1] == c]
        order = rng.permutation(len(members))
        n_val = min(len(members) - 1, int(round(cfg.val_fraction * len(members))))
        val_idx = set(order[:n_val].tolist())
        for i, s in enumerate(members):
            (val_samples if i in val_idx else train_samples).append(s)
    return train_samples, val_samples


def crop_datasets(
    coco: CocoDataset, cfg: PretrainConfig, transform: Any, intensity: Any = None
) -> tuple[ArrayClassificationDataset, ArrayClassificationDataset | None, dict[str, Any]]:
    """Train / validation crop sets from the ``train_split`` / ``val_split`` of ``coco`` (the
    whole dataset when it has no splits), plus a summary of what was cut."""
    kwargs = {
        "crop_size": cfg.crop_size,
        "context": cfg.context,
        "min_crop_side": cfg.min_crop_side,
        "crops_per_image": cfg.crops_per_image,
        "background_ratio": cfg.background_ratio,
        "background_attempts": cfg.background_attempts,
        "in_channels": cfg.in_channels,
        "intensity": intensity,
    }
    if coco.splits:
        if not coco.splits.get(cfg.train_split):
            raise DatasetError(
                f"{coco.root}: the '{cfg.train_split}' split is empty or missing "
                f"(splits: {sorted(coco.splits)})"
            )
        train_ids = coco.splits[cfg.train_split]
        val_ids = coco.splits.get(cfg.val_split) or []
    else:
        train_ids, val_ids = [img["id"] for img in coco.images], []
    train = extract_crops(coco, train_ids, seed=cfg.seed, **kwargs)
    val = extract_crops(coco, val_ids, seed=cfg.seed + 1, **kwargs) if val_ids else None
    if not len(train):
        raise DatasetError(
            f"{coco.root}: no crop could be cut from the '{cfg.train_split}' split (no boxes?)"
        )
    summary = {"train_crops": train.counts(), "val_crops": val.counts() if val is not None else {}}
    logger.info(
        "pretraining crops: train %s, val %s",
        summary["train_crops"],
        summary["val_crops"] or "none",
    )
    mean, std = cfg.image_mean, cfg.image_std
    train_set = ArrayClassificationDataset(
        train.images, train.labels, train.classes, transform, mean, std
    )
    val_set = (
        ArrayClassificationDataset(val.images, val.labels, val.classes, None, mean, std)
        if val is not None and len(val)
        else None
    )
    return train_set, val_set, summary
