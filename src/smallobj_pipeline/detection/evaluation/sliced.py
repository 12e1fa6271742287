"""Sliced inference for small objects on large images (as SAHI does), used by the evaluation of
tiled experiments (per-epoch validation and the test metrics, on whole images) and by
``predict``.

The image is cut into overlapping tiles by the same grid that cuts the training tiles
(:func:`..data.tiling.tile_windows`); each tile is predicted at the model's own scale, its boxes
are shifted back to image coordinates, optionally joined by a whole-image pass (for large
objects), and the lot is merged per class: torchvision's ``batched_nms`` (IoU), or SAHI's
greedy non-maximum *merging* (the default), which replaces a group of matching boxes by their
union, matched by IoS (intersection over the smaller box) so that the part of an object seen by
one tile joins the whole object seen by the next. Masks (Mask R-CNN) follow their boxes: each
is kept as the crop of its box (:class:`MaskPiece`), and a merged group's mask is the union of
its members' masks pasted into the image, before it is written as COCO RLE.

The greedy merge is written here (about 30 lines) because torchvision has only suppression and
SAHI is not a dependency.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BeforeValidator, Field, Strict
from torchvision.ops import batched_nms, box_area, box_iou

from ..data.masks import encode
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


def merge_groups(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float, metric: str
) -> list[list[int]]:
    """SAHI's greedy non-maximum merging, per class, as groups of indices (each group led by its
    best-scoring box): the best-scoring box left absorbs every remaining box of its class that
    overlaps it by ``threshold`` or more (``metric``)."""
    groups: list[list[int]] = []
    for label in labels.unique():
        idx = torch.nonzero(labels == label).flatten()
        idx = idx[scores[idx].argsort(descending=True)]
        overlap = pairwise_overlap(boxes[idx], boxes[idx], metric)
        free = torch.ones(len(idx), dtype=torch.bool, device=boxes.device)
        for i in range(len(idx)):
            if not free[i]:
                continue
            group = free & (overlap[i] >= threshold)
            group[i] = True
            free &= ~group
            members = idx[group].tolist()
            lead = int(idx[i])
            groups.append([lead] + [m for m in members if m != lead])
    return groups


def greedy_merge(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float, metric: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAHI's greedy non-maximum merging (:func:`merge_groups`): each group becomes the union of
    its boxes, with the best score; sorted by descending score."""
    boxes, scores, labels, _ = _merged(boxes, scores, labels, merge_groups(
        boxes, scores, labels, threshold, metric
    ))  # fmt: skip
    return boxes, scores, labels


def _merged(boxes, scores, labels, groups: list[list[int]]):
    """Each group as its union box, its leader's score and label, by descending score; and the
    groups in that order."""
    if not groups:
        return boxes[:0], scores[:0], labels[:0], []
    union = torch.stack(
        [
            torch.cat([boxes[g, :2].min(dim=0).values, boxes[g, 2:].max(dim=0).values])
            for g in groups
        ]
    )
    leads = torch.tensor([g[0] for g in groups], device=boxes.device)
    order = scores[leads].argsort(descending=True)
    return union[order], scores[leads][order], labels[leads][order], [groups[i] for i in order]


def merge_detections(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, cfg: SliceConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tiles' detections (in image coordinates) merged per class as ``cfg`` says."""
    merged = _merge_with_groups(boxes, scores, labels, cfg)
    return merged[0], merged[1], merged[2]


def _merge_with_groups(boxes, scores, labels, cfg: SliceConfig):
    """:func:`merge_detections` plus the indices each output box was made from."""
    if cfg.merge == "nmm":
        groups = merge_groups(boxes, scores, labels, cfg.iou_threshold, cfg.match_metric)
        return _merged(boxes, scores, labels, groups)
    if cfg.match_metric == "iou":
        keep = batched_nms(boxes, scores, labels, cfg.iou_threshold)
    else:
        keep = _suppress(boxes, scores, labels, cfg.iou_threshold)
    return boxes[keep], scores[keep], labels[keep], [[int(i)] for i in keep]


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


# ---------------------------------------------------------------------- masks of tiles
class MaskPiece:
    """One detection's binary mask as the crop of its box, placed at ``(x, y)`` of the image:
    a tile's masks are kept this small, never as whole-image arrays."""

    def __init__(self, x: int, y: int, crop: torch.Tensor):
        self.x, self.y, self.crop = x, y, crop

    @classmethod
    def from_output(cls, mask: torch.Tensor, box: torch.Tensor, dx: int, dy: int) -> MaskPiece:
        """``mask`` ``(1, h, w)`` probabilities of a tile at ``(dx, dy)``, cut to ``box``."""
        h, w = mask.shape[-2:]
        x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
        x2, y2 = min(int(torch.ceil(box[2])), w), min(int(torch.ceil(box[3])), h)
        crop = mask[0, y1:y2, x1:x2] > 0.5
        return cls(x1 + dx, y1 + dy, crop.cpu())

    @staticmethod
    def union(pieces: list[MaskPiece]) -> MaskPiece:
        """The pixels of any of ``pieces`` (a merged group's mask: pasted before merging)."""
        x = min(p.x for p in pieces)
        y = min(p.y for p in pieces)
        w = max(p.x + p.crop.shape[1] for p in pieces) - x
        h = max(p.y + p.crop.shape[0] for p in pieces) - y
        out = torch.zeros((max(h, 0), max(w, 0)), dtype=torch.bool)
        for p in pieces:
            ph, pw = p.crop.shape
            out[p.y - y : p.y - y + ph, p.x - x : p.x - x + pw] |= p.crop
        return MaskPiece(x, y, out)

    def full(self, height: int, width: int) -> np.ndarray:
        """The mask as a ``(height, width)`` uint8 array."""
        out = np.zeros((height, width), dtype=np.uint8)
        crop = self.crop.numpy()[: max(height - self.y, 0), : max(width - self.x, 0)]
        out[self.y : self.y + crop.shape[0], self.x : self.x + crop.shape[1]] = crop
        return out


def _pieces(out: dict[str, torch.Tensor], dx: int, dy: int) -> list[MaskPiece]:
    return [
        MaskPiece.from_output(m, b, dx, dy) for m, b in zip(out["masks"], out["boxes"], strict=True)
    ]


@torch.inference_mode()
def sliced_predict(model: torch.nn.Module, image: torch.Tensor, cfg: SliceConfig) -> dict[str, Any]:
    """Predict one ``(C, H, W)`` image tile by tile; returns ``boxes`` (xyxy), ``scores``,
    ``labels``, ``num_tiles`` and, for a Mask R-CNN, ``rles``: each detection's mask in COCO
    RLE, the masks of a merged group pasted into the image and joined first."""
    model.eval()
    _, height, width = image.shape
    windows = tile_windows(width, height, int(cfg.tile_size), cfg.overlap)
    tiles = [image[:, y : y + h, x : x + w] for x, y, w, h in windows]
    boxes, scores, labels, pieces = [], [], [], []
    for i in range(0, len(tiles), cfg.batch_size):
        outputs = model(tiles[i : i + cfg.batch_size])
        for out, (x, y, _w, _h) in zip(outputs, windows[i : i + cfg.batch_size], strict=True):
            shift = torch.tensor([x, y, x, y], dtype=out["boxes"].dtype, device=out["boxes"].device)
            boxes.append(out["boxes"] + shift)
            scores.append(out["scores"])
            labels.append(out["labels"])
            if "masks" in out:
                pieces.extend(_pieces(out, x, y))
    if cfg.include_full_image and len(tiles) > 1:
        out = model([image])[0]
        boxes.append(out["boxes"])
        scores.append(out["scores"])
        labels.append(out["labels"])
        if "masks" in out:
            pieces.extend(_pieces(out, 0, 0))
    merged = _merge_with_groups(torch.cat(boxes), torch.cat(scores), torch.cat(labels), cfg)
    result: dict[str, Any] = {
        "boxes": merged[0], "scores": merged[1], "labels": merged[2], "num_tiles": len(tiles),
    }  # fmt: skip
    if pieces:
        result["rles"] = [
            encode(MaskPiece.union([pieces[i] for i in group]).full(height, width))
            for group in merged[3]
        ]
    return result
