"""Dataset statistics (JSON-serialisable) and their figure.

Per split and overall: image and object counts, objects per class and per image, box
width/height/side percentiles (side = sqrt(w * h)), COCO area shares (small < 32^2 <= medium <
96^2 <= large, on ``w * h`` of the box). Top-level keys feed the training defaults (anchors,
detections per image): ``max_objects_per_image``, ``median_box_side``, ``box_side_percentiles``,
``train_box_sides``, ``image_size_median``. Crowd regions (``iscrowd: 1``) are counted apart
(``crowd_regions``) and left out of every box statistic: they are not objects to detect, and a
few large crowd boxes would otherwise move the derived anchors and input scale.

``intensity`` (when :func:`compute_stats` is given intensity settings): the pixel format of a
seeded sample of training images, the range found and the range the model uses (see
:mod:`.intensity`), and how many are grey or colour (``model.in_channels: auto`` reads it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .coco import SPLIT_NAMES, CocoDataset
from .intensity import DEFAULT_PERCENTILES, check_settings, dataset_intensity
from .masks import has_mask

SMALL_AREA = 32.0**2
MEDIUM_AREA = 96.0**2
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
SIDE_BINS = 40


def _r(v: float, nd: int = 4) -> float:
    return round(float(v), nd)


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    keys = [f"p{p}" for p in PERCENTILES] + ["min", "max"]
    if values.size == 0:
        return dict.fromkeys(keys)
    pct = np.percentile(values, PERCENTILES)
    out = {f"p{p}": _r(v) for p, v in zip(PERCENTILES, pct, strict=True)}
    out["min"] = _r(values.min())
    out["max"] = _r(values.max())
    return out


def _category_labels(coco: CocoDataset) -> dict[Any, str]:
    names: dict[Any, str] = {}
    counts: dict[str, int] = {}
    for c in coco.categories:
        n = str(c.get("name", c["id"]))
        counts[n] = counts.get(n, 0) + 1
    for c in coco.categories:
        n = str(c.get("name", c["id"]))
        names[c["id"]] = n if counts[n] == 1 else f"{n} (id {c['id']})"
    return names


def _block(coco: CocoDataset, image_ids: list[Any], names: dict[Any, str]) -> dict[str, Any]:
    """The statistics of the images ``image_ids`` (one split, or all) and their objects."""
    keep = set(image_ids)
    in_split = [a for a in coco.annotations if a["image_id"] in keep]
    anns = [a for a in in_split if not a.get("iscrowd", 0)]
    per_image = {i: 0 for i in keep}
    for a in anns:
        per_image[a["image_id"]] += 1
    n_per_image = np.array(sorted(per_image.values()), dtype=float)
    boxes = np.array([[float(v) for v in a["bbox"][2:4]] for a in anns], dtype=float).reshape(-1, 2)
    w, h = np.clip(boxes[:, 0], 0, None), np.clip(boxes[:, 1], 0, None)
    area = w * h
    side = np.sqrt(area)
    per_class = {name: 0 for name in names.values()}
    for a in anns:
        key = names.get(a["category_id"], str(a["category_id"]))
        per_class[key] = per_class.get(key, 0) + 1
    n = len(anns)
    shares, counts = _area_shares(area)
    return {
        "num_images": len(keep),
        "num_objects": n,
        "crowd_regions": len(in_split) - n,
        "objects_per_class": per_class,
        "objects_per_image": _objects_per_image(n_per_image),
        "box_width": percentiles(w),
        "box_height": percentiles(h),
        "box_side": percentiles(side),
        "area_share": shares,
        "area_count": counts,
        "histograms": {
            "box_side": _hist(side),
            "objects_per_image": _int_hist(n_per_image),
        },
    }


def _area_shares(area: np.ndarray) -> tuple[dict[str, float | None], dict[str, int]]:
    """COCO small / medium / large: the share and the count of boxes of each ``area``."""
    n = len(area)
    if not n:
        return {"small": None, "medium": None, "large": None}, {"small": 0, "medium": 0, "large": 0}
    small = int((area < SMALL_AREA).sum())
    medium = int(((area >= SMALL_AREA) & (area < MEDIUM_AREA)).sum())
    large = n - small - medium
    shares = {"small": _r(small / n), "medium": _r(medium / n), "large": _r(large / n)}
    return shares, {"small": small, "medium": medium, "large": large}


def _objects_per_image(n_per_image: np.ndarray) -> dict[str, float | None]:
    """Min, median, mean, max and 95th percentile of the object count per image."""
    if not n_per_image.size:
        return {"min": None, "median": None, "mean": None, "max": None, "p95": None}
    return {
        "min": int(n_per_image.min()),
        "median": _r(np.median(n_per_image)),
        "mean": _r(n_per_image.mean()),
        "max": int(n_per_image.max()),
        "p95": _r(np.percentile(n_per_image, 95)),
    }


def _hist(values: np.ndarray) -> dict[str, list[float]]:
    hi = max(33.0, float(values.max()) if values.size else 0.0)
    edges = np.linspace(0.0, np.ceil(hi), SIDE_BINS + 1)
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": [_r(e, 3) for e in edges], "counts": [int(c) for c in counts]}


def _int_hist(values: np.ndarray) -> dict[str, list[float]]:
    hi = int(values.max()) if values.size else 0
    step = max(1, int(np.ceil((hi + 1) / SIDE_BINS)))
    edges = np.arange(0, hi + step + 1, step, dtype=float) - 0.5
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def sample_train_ids(coco: CocoDataset, max_images: int, seed: int) -> list[Any]:
    """A seeded sample of at most ``max_images`` training images (every image without splits)."""
    ids = (
        list(coco.splits["train"])
        if coco.splits.get("train")
        else [img["id"] for img in coco.images]
    )
    if len(ids) <= max_images:
        return ids
    rng = np.random.default_rng(seed)
    return [ids[i] for i in sorted(rng.choice(len(ids), size=max_images, replace=False).tolist())]


def intensity_stats(coco: CocoDataset, settings: dict[str, Any] | None) -> dict[str, Any]:
    """Pixel format and intensity range of sampled training images (see :mod:`.intensity`).

    ``settings``: ``mode`` (auto | per_image | fixed), ``percentiles``, ``sample_images``,
    ``pixels_per_image``, ``seed``."""
    settings = check_settings(settings)
    ids = sample_train_ids(
        coco, int(settings.get("sample_images", 200)), int(settings.get("seed", 0))
    )
    info = dataset_intensity(
        ((i, coco.read_raw(i)) for i in ids),
        mode=str(settings.get("mode", "auto")),
        percentiles=tuple(settings.get("percentiles", DEFAULT_PERCENTILES)),
        pixels_per_image=int(settings.get("pixels_per_image", 20_000)),
        seed=int(settings.get("seed", 0)),
    )
    info["sampled_from"] = "train" if coco.splits.get("train") else "all"
    return info


def box_sides(coco: CocoDataset, image_ids: Iterable[int]) -> list[float]:
    """``sqrt(w * h)`` of every object (crowd regions left out) of ``image_ids``."""
    keep = set(image_ids)
    return [
        float(np.sqrt(max(float(a["bbox"][2]), 0.0) * max(float(a["bbox"][3]), 0.0)))
        for a in coco.annotations
        if a["image_id"] in keep and not a.get("iscrowd", 0)
    ]


def mask_counts(coco: CocoDataset, image_ids: Iterable[int]) -> dict[str, Any]:
    """Non-crowd objects of ``image_ids``, how many carry a segmentation (``model.task:
    auto`` trains Mask R-CNN when all do) and the first annotation ids of those without."""
    objects = [
        a
        for i in image_ids
        for a in coco.annotations_by_image.get(i, [])
        if not a.get("iscrowd", 0)
    ]
    without = [a["id"] for a in objects if not has_mask(a)]
    return {
        "objects": len(objects),
        "with_mask": len(objects) - len(without),
        "without_mask_ids": without[:10],
    }


def compute_stats(coco: CocoDataset, intensity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Statistics of ``coco``: ``overall``, ``splits`` (per split name) and top-level keys;
    with ``intensity`` settings, also the ``intensity`` block (reads a sample of images)."""
    names = _category_labels(coco)
    all_ids = [img["id"] for img in coco.images]
    overall = _block(coco, all_ids, names)
    splits = {
        name: _block(coco, list(coco.splits[name]), names)
        for name in SPLIT_NAMES
        if name in coco.splits
    }
    train_ids = set(coco.splits["train"]) if coco.splits.get("train") else set(all_ids)
    train_sides = [round(side, 2) for side in box_sides(coco, train_ids)]
    # A tiled dataset trains on tiles: the model's input size and detections per image follow
    # the tiles (the training split), not the whole validation/test scenes.
    tiling = coco.info.get("tiling") if isinstance(coco.info, dict) else None
    sized = [coco.images_by_id[i] for i in train_ids] if tiling else coco.images
    widths = sorted(float(img["width"]) for img in sized)
    heights = sorted(float(img["height"]) for img in sized)
    crowded = splits["train"] if tiling else overall
    out = {
        "num_images": overall["num_images"],
        "num_objects": overall["num_objects"],
        "crowd_regions": overall["crowd_regions"],
        "num_classes": len(names),
        "categories": {str(k): v for k, v in names.items()},
        "max_objects_per_image": crowded["objects_per_image"]["max"] or 0,
        "median_box_side": overall["box_side"]["p50"],
        "box_side_percentiles": overall["box_side"],
        "train_box_sides": train_sides,
        "train_box_sides_source": "train" if coco.splits.get("train") else "all",
        "image_size_median": [_r(np.median(widths)), _r(np.median(heights))] if widths else None,
        "overall": overall,
        "splits": splits,
    }
    if tiling:
        out["tiling"] = tiling
    # every split: Mask R-CNN validates during training and is scored on masks too
    out["masks"] = mask_counts(coco, all_ids)
    if intensity is not None:
        out["intensity"] = intensity_stats(coco, intensity)
    return out


def plot_stats(stats: dict[str, Any]) -> Figure:
    """Box-side histogram (with the 32 px small-object line), objects per image, and per-class
    counts per split."""
    fig = Figure(figsize=(15, 4.5), dpi=100)
    axes = fig.subplots(1, 3)
    blocks = {"overall": stats["overall"], **stats.get("splits", {})}
    tiling = stats.get("tiling")
    if tiling and "train" in blocks:  # the training split holds tiles, after clipping
        blocks = {
            (f"train ({tiling['tile_size']} px tiles)" if k == "train" else k): v
            for k, v in blocks.items()
        }

    ax = axes[0]
    _stairs(ax, blocks, "box_side")
    ax.axvline(32, color="red", linestyle="--", label="32 px (COCO small)")
    ax.set_xlabel("box side sqrt(w*h) [px]")
    ax.set_ylabel("boxes")
    ax.set_title("Box size")
    ax.legend(fontsize=8)

    ax = axes[1]
    _stairs(ax, blocks, "objects_per_image")
    ax.set_xlabel("objects per image" + (" or tile" if tiling else ""))
    ax.set_ylabel("images")
    ax.set_title("Objects per image")
    ax.legend(fontsize=8)

    _class_bars(axes[2], stats)
    fig.suptitle(
        f"{stats['num_images']} images, {stats['num_objects']} objects, "
        f"median box side {stats['median_box_side'] or 0:.1f} px, "
        f"up to {stats['max_objects_per_image']} per image"
    )
    fig.tight_layout()
    return fig


def _stairs(ax: Any, blocks: dict[str, dict[str, Any]], histogram: str) -> None:
    """One step curve per block (``overall`` filled) of its histogram ``histogram``."""
    for name, block in blocks.items():
        hist = block["histograms"][histogram]
        if sum(hist["counts"]):
            ax.stairs(
                hist["counts"],
                hist["edges"],
                label=name,
                fill=name == "overall",
                alpha=0.35 if name == "overall" else 1.0,
            )


def _class_bars(ax: Any, stats: dict[str, Any]) -> None:
    """Objects per class, one bar per split (or the overall count without splits)."""
    classes = list(stats["overall"]["objects_per_class"])
    split_blocks = stats.get("splits") or {"overall": stats["overall"]}
    x = np.arange(len(classes))
    width = 0.8 / max(len(split_blocks), 1)
    for k, (name, block) in enumerate(split_blocks.items()):
        ax.bar(
            x + k * width - 0.4 + width / 2,
            [block["objects_per_class"].get(c, 0) for c in classes],
            width,
            label=name,
        )
    ax.set_xticks(
        x,
        classes,
        rotation=30 if len(classes) > 4 else 0,
        ha="right" if len(classes) > 4 else "center",
    )
    ax.set_ylabel("objects")
    ax.set_title("Objects per class")
    ax.legend(fontsize=8)
