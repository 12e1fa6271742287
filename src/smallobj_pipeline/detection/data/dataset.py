"""PyTorch view of a :class:`CocoDataset` split for torchvision detection models."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError
from .augment import apply_transform_with_masks
from .coco import CocoDataset
from .intensity import Intensity
from .masks import image_masks


def to_channels(image: np.ndarray, in_channels: int) -> np.ndarray:
    """Give an image (``uint8``, or ``float32`` in [0, 1]) the model's channel count: (H, W)
    for 1, (H, W, 3) for 3. The pixel type is kept."""
    if in_channels == 1:
        if image.ndim == 3:  # RGB -> luma (ITU-R 601)
            luma = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            if image.dtype == np.uint8:
                return np.clip(np.round(luma), 0, 255).astype(np.uint8)
            return np.clip(luma, 0.0, 1.0)
        return image
    if in_channels == 3:
        return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    raise DatasetError(f"in_channels must be 1 or 3, got {in_channels}")


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) -> float tensor (C, H, W) in [0, 1]: ``uint8`` is divided by 255,
    ``float32`` (already scaled by :mod:`.intensity`) is taken as it is."""
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:  # arrays read from PIL are read-only; torch wants writable memory
        image = image.copy()
    t = torch.from_numpy(image)
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    if image.dtype == np.uint8:
        return t.float().div_(255.0)
    return t.float()


class DetectionDataset(Dataset):
    """Images of ``image_ids`` with targets in torchvision's format.

    Boxes become ``[x1, y1, x2, y2]``; category ids map to contiguous labels; crowd annotations
    are left out of the targets. ``transform`` is an albumentations pipeline from
    :mod:`.augment` (train only), or ``None``. ``intensity`` (an :class:`.intensity.Intensity`
    or its dict) says how raw pixels are scaled; ``None``: 8-bit kept, more bits per image.
    ``masks``: targets also hold ``masks`` ``(N, H, W)`` uint8 (Mask R-CNN), decoded from each
    annotation's ``segmentation`` when the image is read (:mod:`.masks`).
    """

    def __init__(
        self,
        coco: CocoDataset,
        image_ids: list[int],
        in_channels: int = 1,
        transform: Any = None,
        intensity: Any = None,
        masks: bool = False,
    ):
        self.masks = masks
        self.coco = coco
        self.image_ids = list(image_ids)
        self.in_channels = in_channels
        self.transform = transform
        self.intensity = Intensity.from_dict(intensity)

    def __len__(self) -> int:
        return len(self.image_ids)

    def objects(self, image_id: int) -> list[dict[str, Any]]:
        """The image's annotations that are targets: crowd regions left out."""
        return [
            a for a in self.coco.annotations_by_image.get(image_id, []) if not a.get("iscrowd", 0)
        ]

    def boxes_and_labels(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        anns = self.objects(image_id)
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        labels = np.array(
            [self.coco.label_of_category[a["category_id"]] for a in anns], dtype=np.int64
        )
        return boxes, labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.image_ids[index]
        image = to_channels(self.coco.read_image(image_id, self.intensity), self.in_channels)
        boxes, labels = self.boxes_and_labels(image_id)
        masks = self._masks(image_id, image.shape[:2]) if self.masks else None
        if self.transform is not None:
            image, boxes, labels, masks = apply_transform_with_masks(
                self.transform, image, boxes, labels, masks
            )
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "image_id": torch.tensor(image_id),
        }
        if masks is not None:
            target["masks"] = torch.from_numpy(np.ascontiguousarray(masks))
        return image_to_tensor(image), target

    def _masks(self, image_id: int, shape: tuple[int, ...]) -> np.ndarray:
        """The objects' masks at the image's size (a clear error for a bad segmentation)."""
        img = self.coco.images_by_id[image_id]
        if (int(img["height"]), int(img["width"])) != tuple(shape):
            raise DatasetError(
                f"image id {image_id}: declared {img['width']} x {img['height']}, read "
                f"{shape[1]} x {shape[0]}: its masks cannot be placed (re-run validation)"
            )
        anns = self.objects(image_id)
        missing = [a["id"] for a in anns if not a.get("segmentation")]
        if missing:
            raise DatasetError(
                f"image id {image_id}: annotation id(s) {missing[:10]} have no segmentation; "
                "instance segmentation needs a mask for every object (or set model.task: "
                "detection)"
            )
        try:
            return image_masks(anns, *shape)
        except (ValueError, TypeError) as exc:
            raise DatasetError(
                f"image id {image_id}, {exc} (validation reports every such annotation)"
            ) from None


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
