"""The one routine that draws boxes (and instance masks) on an image, shared by the report's
example predictions, the predict pipeline's drawings and the augmentation preview.

The pixels are drawn by torchvision (``draw_bounding_boxes``, ``draw_segmentation_masks``); this
module only brings the project's images (1 or 3 channels, ``uint8`` or ``float32`` in [0, 1],
boxes as ``x1, y1, x2, y2`` arrays) to torchvision's ``uint8`` tensors and back, and puts the
result on a matplotlib axis when a figure needs a title.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..data.intensity import to_display
from ..data.masks import decode

Colour = str | tuple[int, int, int]


def draw_boxes(
    image: np.ndarray,
    boxes: Any,
    colors: Colour | Sequence[Colour] = "red",
    masks: Any = None,
    width: int = 1,
    mask_alpha: float = 0.4,
) -> np.ndarray:
    """``image`` (``H x W`` or ``H x W x C``, model-input scaling) with ``boxes`` (``N x 4``,
    ``x1, y1, x2, y2`` in pixels) outlined and, when given, ``masks`` (``N x H x W`` booleans)
    filled; one colour for all or one per box. Returns ``H x W x 3`` ``uint8``."""
    pixels = to_display(np.asarray(image))
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    tensor = torch.from_numpy(np.array(pixels[:, :, :3])).permute(2, 0, 1)  # a writable copy
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    colours = list(colors) if not isinstance(colors, str | tuple) else colors
    if masks is not None and len(boxes):
        masks = torch.as_tensor(np.asarray(masks, dtype=bool))
        tensor = draw_segmentation_masks(tensor, masks, alpha=mask_alpha, colors=colours)
    if len(boxes):
        tensor = draw_bounding_boxes(tensor, boxes, colors=colours, width=width)
    return tensor.permute(1, 2, 0).numpy()


def item_masks(items: Sequence[dict[str, Any]], height: int, width: int) -> np.ndarray | None:
    """The ``segmentation`` of COCO annotations or results as ``N x H x W`` booleans (empty for
    an item without one), or ``None`` when no item has one: what :func:`draw_boxes` fills."""
    if not any(item.get("segmentation") for item in items):
        return None
    out = np.zeros((len(items), height, width), dtype=bool)
    for i, item in enumerate(items):
        if item.get("segmentation"):
            out[i] = decode(item["segmentation"], height, width).astype(bool)
    return out


def show_boxes(ax: Any, image: np.ndarray, boxes: Any, title: str | None = None, **draw: Any):
    """:func:`draw_boxes` shown on the matplotlib axis ``ax`` (no ticks), with ``title``."""
    ax.imshow(draw_boxes(image, boxes, **draw))
    if title is not None:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
