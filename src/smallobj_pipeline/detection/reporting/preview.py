"""The augmentation preview: a grid of training samples after the experiment's transform, their
boxes drawn by :mod:`.draw` in their class colour (the report's ``augmentation_preview.png``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import albumentations as A
import numpy as np
from matplotlib.figure import Figure

from ..data.augment import apply_transform_with_masks, seed_transform
from ..data.masks import has_mask, image_masks
from .draw import show_boxes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..data.coco import CocoDataset

PREVIEW_COLOURS = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa"]


def render_augmentation_grid(
    coco: CocoDataset,
    transform: A.Compose | None,
    num_samples: int = 8,
    seed: int = 0,
    image_ids: Sequence[Any] | None = None,
    intensity: Any = None,
) -> Figure:
    """A grid of augmented training samples with their boxes (one panel per sample).

    Images are drawn at random (``seed``) among ``coco.images`` (repeated when there are fewer
    than ``num_samples``), or taken from ``image_ids`` (one panel each). The same seed gives the
    same figure; ``transform`` itself is not touched (a seeded copy is used). ``None`` shows the
    images as they are. Pixels are scaled by ``intensity`` (:mod:`..data.intensity`), as in
    training.
    """
    ids = list(image_ids) if image_ids is not None else preview_ids(coco, num_samples, seed)
    if not ids and image_ids is None:
        fig = Figure(figsize=(4, 1.5))
        fig.text(0.5, 0.5, "no training images to preview", ha="center", va="center")
        return fig
    if transform is not None:
        transform = copy.deepcopy(transform)
        seed_transform(transform, seed)

    n = len(ids)
    ncols = max(1, min(4, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(3.2 * ncols, 3.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, image_id in zip(axes, ids, strict=False):
        preview_panel(ax, coco, image_id, transform, intensity)
    for ax in axes[n:]:
        fig.delaxes(ax)
    title = (
        "Training augmentation" if transform is not None else "Training images (no augmentation)"
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def preview_ids(coco: CocoDataset, num_samples: int, seed: int) -> list[Any]:
    """``num_samples`` image ids drawn with ``seed`` (repeated when there are fewer images)."""
    all_ids = [img["id"] for img in coco.images]
    if not all_ids:
        return []
    rng = np.random.default_rng(seed)
    if len(all_ids) >= num_samples:
        picked = sorted(rng.choice(len(all_ids), size=num_samples, replace=False).tolist())
    else:
        picked = [i % len(all_ids) for i in range(num_samples)]
    return [all_ids[i] for i in picked]


def preview_panel(
    ax: Axes, coco: CocoDataset, image_id: Any, transform: A.Compose | None, intensity: Any
) -> None:
    """One image through ``transform``, its boxes (and masks, when every object has one)
    drawn in their class colour."""
    image = coco.read_image(image_id, intensity)
    anns = [a for a in coco.annotations_by_image.get(image_id, []) if not a.get("iscrowd", 0)]
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    labels = np.array(
        [coco.label_of_category.get(a["category_id"], 0) for a in anns], dtype=np.int64
    )
    masks = None
    if anns and all(has_mask(a) for a in anns):
        masks = image_masks(anns, *image.shape[:2])
    image, boxes, labels, masks = apply_transform_with_masks(transform, image, boxes, labels, masks)
    colours = [PREVIEW_COLOURS[int(label) % len(PREVIEW_COLOURS)] for label in labels]
    title = f"image {image_id}: {len(boxes)} {'masks' if masks is not None else 'boxes'}"
    show_boxes(ax, image, boxes, title=title, colors=colours, masks=masks)
