"""Sliced inference for small objects on large images (as SAHI does).

The image is cut into overlapping tiles of about the training size; each tile is predicted at
the model's own scale, boxes are shifted back to image coordinates, optionally joined by a
whole-image pass (for large objects), and merged with class-wise NMS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from ..errors import ConfigError


@dataclass
class SliceConfig:
    enabled: bool | str = (
        "auto"  # True | False | "auto": slice when the image is much larger than training
    )
    tile_size: int = 256
    overlap: float = 0.2  # fraction of the tile shared with its neighbour
    auto_factor: float = 2.0  # "auto" slices when max(H, W) > auto_factor * training size
    iou_threshold: float = 0.5  # NMS merge of tile predictions
    include_full_image: bool = True
    batch_size: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"slicing.overlap must be in [0, 1), got {self.overlap}")
        if self.tile_size < 16:
            raise ConfigError(f"slicing.tile_size must be >= 16 px, got {self.tile_size}")
        if self.enabled not in (True, False, "auto"):
            raise ConfigError(f"slicing.enabled must be true, false or auto, got {self.enabled!r}")


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` px overlapping by
    ``overlap``."""
    if length <= tile:
        return [0]
    stride = max(1, int(round(tile * (1 - overlap))))
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # last tile flush with the border
    return sorted(set(starts))


def should_slice(height: int, width: int, train_size: int, cfg: SliceConfig) -> bool:
    if cfg.enabled == "auto":
        return max(height, width) > cfg.auto_factor * train_size
    return bool(cfg.enabled)


@torch.inference_mode()
def sliced_predict(
    model: torch.nn.Module, image: torch.Tensor, cfg: SliceConfig
) -> dict[str, torch.Tensor]:
    """Predict one ``(C, H, W)`` image tile by tile; returns ``boxes`` (xyxy), ``scores``,
    ``labels``."""
    model.eval()
    _, height, width = image.shape
    tiles, offsets = [], []
    for y in tile_starts(height, cfg.tile_size, cfg.overlap):
        for x in tile_starts(width, cfg.tile_size, cfg.overlap):
            tiles.append(image[:, y : y + cfg.tile_size, x : x + cfg.tile_size])
            offsets.append((x, y))
    boxes, scores, labels = [], [], []
    for i in range(0, len(tiles), cfg.batch_size):
        outputs = model(tiles[i : i + cfg.batch_size])
        for out, (x, y) in zip(outputs, offsets[i : i + cfg.batch_size], strict=True):
            shift = torch.tensor([x, y, x, y], dtype=out["boxes"].dtype, device=out["boxes"].device)
            boxes.append(out["boxes"] + shift)
            scores.append(out["scores"])
            labels.append(out["labels"])
    if cfg.include_full_image and len(tiles) > 1:
        out = model([image])[0]
        boxes.append(out["boxes"])
        scores.append(out["scores"])
        labels.append(out["labels"])
    boxes_t, scores_t, labels_t = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(boxes_t, scores_t, labels_t, cfg.iou_threshold)
    return {
        "boxes": boxes_t[keep],
        "scores": scores_t[keep],
        "labels": labels_t[keep],
        "num_tiles": len(tiles),
    }
