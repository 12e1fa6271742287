"""Deterministic train/val/test split, grouped by image.

Split files shipped with the dataset (``train.json`` ...) win when ``use_existing`` is set;
otherwise image ids are sorted, shuffled with a seeded generator and cut by the ratios, so the
result depends only on the set of image ids and the seed, never on file order.

A split left without any object of a class is allowed (small datasets, rare classes) but
logged as a WARNING naming the class and the split: its metrics for that class are meaningless.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from .coco import SPLIT_NAMES, CocoDataset

logger = logging.getLogger(__name__)

DEFAULT_RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def check_ratios(ratios: Mapping[str, Any]) -> dict[str, float]:
    """Ratios per split name: known names, non-negative, summing to 1 (within 1e-6)."""
    if not isinstance(ratios, Mapping) or not ratios:
        raise ConfigError(f"split.ratios must be a mapping like {DEFAULT_RATIOS}, got {ratios!r}")
    unknown = [k for k in ratios if k not in SPLIT_NAMES]
    if unknown:
        raise ConfigError(
            f"split.ratios: unknown split name(s) {unknown}; allowed: {list(SPLIT_NAMES)}"
        )
    out: dict[str, float] = {}
    for name in SPLIT_NAMES:
        value = ratios.get(name, 0.0)
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"split.ratios.{name} must be a number, got {value!r}") from None
        if not math.isfinite(f) or f < 0:
            raise ConfigError(
                f"split.ratios.{name} must be a non-negative number, got {value!r} (ratios "
                f"{dict(ratios)})"
            )
        out[name] = f
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split.ratios must sum to 1, got {total:.6g} (ratios {dict(ratios)})")
    if out["train"] <= 0:
        raise ConfigError(f"split.ratios.train must be > 0 (ratios {dict(ratios)})")
    return out


def _sorted_ids(ids: Any) -> list[Any]:
    return sorted(set(ids), key=lambda i: (type(i).__name__, i))


def _allocate(n: int, ratios: dict[str, float]) -> dict[str, int]:
    """Image counts per split: largest remainder, then at least one image per split with a
    positive ratio while there are enough images (taken from the largest split)."""
    exact = {k: n * r for k, r in ratios.items()}
    counts = {k: int(math.floor(v)) for k, v in exact.items()}
    rest = n - sum(counts.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), SPLIT_NAMES.index(k)))[:rest]:
        counts[k] += 1
    positive = [k for k in SPLIT_NAMES if ratios[k] > 0]
    if n >= len(positive):
        for k in positive:
            if counts[k] == 0:
                donor = max(positive, key=lambda d: (counts[d], -SPLIT_NAMES.index(d)))
                counts[donor] -= 1
                counts[k] += 1
    return counts


def _seeded_cut(ids: list[Any], ratios: dict[str, float], seed: int) -> dict[str, list[Any]]:
    ordered = _sorted_ids(ids)
    perm = np.random.default_rng(int(seed)).permutation(len(ordered))
    shuffled = [ordered[i] for i in perm]
    counts = _allocate(len(shuffled), ratios)
    out: dict[str, list[Any]] = {}
    start = 0
    for name in SPLIT_NAMES:
        out[name] = _sorted_ids(shuffled[start : start + counts[name]])
        start += counts[name]
    return out


def with_splits(coco: CocoDataset, splits: dict[str, list[Any]]) -> CocoDataset:
    """``coco`` with its split membership replaced by ``splits`` (name -> image ids)."""
    return CocoDataset(
        root=coco.root,
        images=coco.images,
        annotations=coco.annotations,
        categories=coco.categories,
        splits=splits,
        info=coco.info,
    )


def assign_splits(
    coco: CocoDataset,
    ratios: Mapping[str, Any] | None = None,
    seed: int = 42,
    use_existing: bool = True,
) -> CocoDataset:
    """A new dataset with ``.splits`` = {"train", "val", "test"} -> image ids.

    With ``use_existing`` and a ``train`` split in the dataset, its split files are kept; a
    missing ``val`` / ``test`` is carved from ``train`` (seeded, ratios relative to train) with a
    warning. An image listed in two split files is an error (it would leak between splits).
    """
    ratios = check_ratios(DEFAULT_RATIOS if ratios is None else ratios)
    image_ids = [img["id"] for img in coco.images]

    if use_existing and coco.splits:
        if "train" in coco.splits and coco.splits["train"]:
            return _warn_missing_classes(_from_existing(coco, ratios, seed))
        logger.warning(
            "%s: split files %s have no (non-empty) train split; ignoring them and splitting from "
            "seed %d",
            coco.root,
            sorted(coco.splits),
            seed,
        )

    splits = _seeded_cut(image_ids, ratios, seed)
    return _warn_missing_classes(with_splits(coco, splits))


def classes_missing_from_splits(coco: CocoDataset) -> dict[str, list[str]]:
    """Non-empty split name -> classes (``"name (id N)"``) without a single object in that split."""
    out: dict[str, list[str]] = {}
    names = coco.category_names()
    for split in SPLIT_NAMES:
        ids = set(coco.splits.get(split) or [])
        if not ids:
            continue
        present = {
            a["category_id"]
            for a in coco.annotations
            if a["image_id"] in ids and not a.get("iscrowd", 0)
        }
        missing = [f"{names[cid]!r} (id {cid})" for cid in coco.category_ids if cid not in present]
        if missing:
            out[split] = missing
    return out


def _warn_missing_classes(coco: CocoDataset) -> CocoDataset:
    for split, missing in classes_missing_from_splits(coco).items():
        consequence = (
            "the model never sees these classes during training"
            if split == "train"
            else f"their metrics on the '{split}' split are undefined (no ground truth)"
        )
        logger.warning(
            "%s: the '%s' split (%d images) has no object of class %s: %s",
            coco.root,
            split,
            len(coco.splits[split]),
            ", ".join(missing),
            consequence,
        )
    return coco


def _from_existing(coco: CocoDataset, ratios: dict[str, float], seed: int) -> CocoDataset:
    splits = {
        name: list(dict.fromkeys(coco.splits[name])) for name in SPLIT_NAMES if name in coco.splits
    }
    seen: dict[Any, str] = {}
    for name, ids in splits.items():
        for i in ids:
            if i in seen:
                raise DatasetError(
                    f"{coco.root}: image id {i} is in both the '{seen[i]}' and '{name}' split files"
                )
            seen[i] = name
    missing = [n for n in ("val", "test") if not splits.get(n) and ratios[n] > 0]
    if missing:
        sub_ratios = {"train": ratios["train"], "val": 0.0, "test": 0.0}
        for n in missing:
            sub_ratios[n] = ratios[n]
        total = sum(sub_ratios.values())
        sub_ratios = {k: v / total for k, v in sub_ratios.items()}
        carved = _seeded_cut(splits["train"], sub_ratios, seed)
        logger.warning(
            "%s: no %s split file; carved %s from the %d train images (seed %d, ratios %s)",
            coco.root,
            " / ".join(missing),
            {n: len(carved[n]) for n in missing},
            len(splits["train"]),
            seed,
            {k: round(v, 4) for k, v in sub_ratios.items()},
        )
        splits["train"] = carved["train"]
        for n in missing:
            splits[n] = carved[n]
    for name in SPLIT_NAMES:
        splits.setdefault(name, [])
    unused = len(coco.images) - len(seen)
    if unused > 0:
        logger.info("%s: %d images are in no split file and are not used", coco.root, unused)
    return with_splits(coco, {n: splits[n] for n in SPLIT_NAMES})
