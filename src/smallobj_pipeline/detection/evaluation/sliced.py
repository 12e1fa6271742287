"""Sliced inference for small objects on large images (as SAHI does), used by the evaluation of
tiled experiments (per-epoch validation and the test metrics, on whole images) and by
``predict``.

The image is cut into overlapping tiles by the same grid that cuts the training tiles
(:func:`..data.tiling.tile_windows`); each tile is predicted at the model's own scale, its boxes
are shifted back to image coordinates, optionally joined by a whole-image pass (for large
objects), and the lot is merged per class: torchvision's ``batched_nms`` (IoU), or SAHI's
greedy non-maximum *merging* (the default), which replaces a group of matching boxes by their
union, matched by IoS (intersection over the smaller box) so that the part of an object seen by
one tile joins the whole object seen by the next.

The greedy merge is written here (about 30 lines) because torchvision has only suppression and
SAHI is not a dependency.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BeforeValidator, Field, Strict
from torchvision.ops import batched_nms, box_area, box_iou

from ..data.tiling import check_overlap, tile_windows
from ..modeling.config import (
    AutoPositiveInt,
    ConfigSection,
    Fraction,
    PositiveInt,
    PositiveNumber,
    parse_section,
)


class SliceConfig(ConfigSection):
    """How an image is sliced and the tiles' detections merged (``predict.slicing``, and
    ``evaluation.slicing`` of an experiment)."""

    SECTION: ClassVar[str] = "slicing"

    # fmt: off
    enabled: Literal[True, False, "auto"] = Field("auto", description=(
        "auto: slice when the image is over auto_factor x the training size"))
    tile_size: AutoPositiveInt = Field(256, description=(
        "tile side in px (null in predict: the training image size)"))
    overlap: Annotated[float, BeforeValidator(check_overlap)] = Field(0.2, description=(
        "overlap of neighbouring tiles: fraction of the tile (< 1) or px"))
    auto_factor: PositiveNumber = Field(2.0, description=(
        "enabled auto slices when max(H, W) > auto_factor x the training size"))
    merge: Literal["nmm", "nms"] = Field("nmm", description=(
        "nmm: greedy merging into the union box (SAHI's default) | nms: suppression"))
    match_metric: Literal["ios", "iou"] = Field("ios", description=(
        "overlap measure of the merge: ios (intersection over the smaller box) | iou"))
    iou_threshold: Fraction = Field(0.5, description="boxes match at or above this overlap")
    include_full_image: Annotated[bool, Strict()] = Field(True, description=(
        "also predict the whole image (resized) for objects larger than a tile"))
    batch_size: PositiveInt = Field(4, description="tiles per forward pass")
    # fmt: on

    def describe(self) -> str:
        """One line for the report: how the images were sliced and merged."""
        over = f"{self.overlap:g}" if self.overlap < 1 else f"{int(self.overlap)} px"
        full = " + whole image" if self.include_full_image else ""
        return (
            f"sliced: {self.tile_size} px tiles, overlap {over}{full}, "
            f"{'greedy NMM' if self.merge == 'nmm' else 'NMS'} "
            f"({self.match_metric.upper()} {self.iou_threshold:g})"
        )


def parse_slicing(data: Any) -> SliceConfig:
    """``data`` (a mapping or a :class:`SliceConfig`) checked; errors name ``slicing.<key>``."""
    return parse_section(SliceConfig, data)


def should_slice(height: int, width: int, train_size: int, cfg: SliceConfig) -> bool:
    if cfg.enabled == "auto":
        return max(height, width) > cfg.auto_factor * train_size
    return bool(cfg.enabled)


def pairwise_overlap(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """IoU, or IoS (intersection over the smaller box's area), between boxes ``a`` and ``b``."""
    if metric == "iou":
        return box_iou(a, b)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    smaller = torch.min(box_area(a)[:, None], box_area(b)[None, :]).clamp(min=1e-9)
    return inter / smaller


def greedy_merge(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float, metric: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAHI's greedy non-maximum merging, per class: the best-scoring box left absorbs every
    remaining box of its class that overlaps it by ``threshold`` or more (``metric``); the group
    becomes the union of its boxes, with the best score."""
    out_boxes, out_scores, out_labels = [], [], []
    for label in labels.unique():
        idx = torch.nonzero(labels == label).flatten()
        idx = idx[scores[idx].argsort(descending=True)]
        cls_boxes = boxes[idx]
        overlap = pairwise_overlap(cls_boxes, cls_boxes, metric)
        free = torch.ones(len(idx), dtype=torch.bool, device=boxes.device)
        for i in range(len(idx)):
            if not free[i]:
                continue
            group = free & (overlap[i] >= threshold)
            group[i] = True
            free &= ~group
            members = cls_boxes[group]
            union = torch.cat([members[:, :2].min(dim=0).values, members[:, 2:].max(dim=0).values])
            out_boxes.append(union)
            out_scores.append(scores[idx[i]])
            out_labels.append(label)
    if not out_boxes:
        return boxes[:0], scores[:0], labels[:0]
    merged = torch.stack(out_boxes), torch.stack(out_scores), torch.stack(out_labels)
    order = merged[1].argsort(descending=True)
    return merged[0][order], merged[1][order], merged[2][order]


def merge_detections(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, cfg: SliceConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tiles' detections (in image coordinates) merged per class as ``cfg`` says."""
    if cfg.merge == "nmm":
        return greedy_merge(boxes, scores, labels, cfg.iou_threshold, cfg.match_metric)
    if cfg.match_metric == "iou":
        keep = batched_nms(boxes, scores, labels, cfg.iou_threshold)
        return boxes[keep], scores[keep], labels[keep]
    keep = _suppress(boxes, scores, labels, cfg.iou_threshold)
    return boxes[keep], scores[keep], labels[keep]


def _suppress(boxes, scores, labels, threshold: float) -> torch.Tensor:
    """NMS by IoS (torchvision's NMS knows only IoU)."""
    order = scores.argsort(descending=True)
    same = labels[order][:, None] == labels[order][None, :]
    overlap = pairwise_overlap(boxes[order], boxes[order], "ios") * same
    alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if alive[i]:
            later = torch.arange(len(order), device=boxes.device) > i
            alive &= ~(later & (overlap[i] >= threshold))
    return order[alive]


@torch.inference_mode()
def sliced_predict(
    model: torch.nn.Module, image: torch.Tensor, cfg: SliceConfig
) -> dict[str, torch.Tensor]:
    """Predict one ``(C, H, W)`` image tile by tile; returns ``boxes`` (xyxy), ``scores``,
    ``labels`` and ``num_tiles``."""
    model.eval()
    _, height, width = image.shape
    windows = tile_windows(width, height, int(cfg.tile_size), cfg.overlap)
    tiles = [image[:, y : y + h, x : x + w] for x, y, w, h in windows]
    boxes, scores, labels = [], [], []
    for i in range(0, len(tiles), cfg.batch_size):
        outputs = model(tiles[i : i + cfg.batch_size])
        for out, (x, y, _w, _h) in zip(outputs, windows[i : i + cfg.batch_size], strict=True):
            shift = torch.tensor([x, y, x, y], dtype=out["boxes"].dtype, device=out["boxes"].device)
            boxes.append(out["boxes"] + shift)
            scores.append(out["scores"])
            labels.append(out["labels"])
    if cfg.include_full_image and len(tiles) > 1:
        out = model([image])[0]
        boxes.append(out["boxes"])
        scores.append(out["scores"])
        labels.append(out["labels"])
    merged = merge_detections(torch.cat(boxes), torch.cat(scores), torch.cat(labels), cfg)
    return {"boxes": merged[0], "scores": merged[1], "labels": merged[2], "num_tiles": len(tiles)}
