"""Box-aware training augmentation (albumentations 2.x) for 1- and 3-channel uint8 images.

Augmentation applies to the training split only: :func:`build_transform` returns ``None`` for
``train=False`` and when disabled.

Parameter schema (the ``augmentation`` section of an experiment; every entry is optional, and an
entry set to ``null``, ``false`` or ``0`` is off)::

    enabled: true               # false: no augmentation at all
    min_visibility: 0.3         # drop a box keeping less than this fraction of its area
    min_area: 4                 # drop a box smaller than this many pixels (after the transform)
    hflip: 0.5                  # probability of a horizontal flip
    vflip: 0.5                  # probability of a vertical flip
    rotate90: 0.5               # probability of a rotation by a random multiple of 90 degrees
                                #   (0, 90, 180 or 270; swaps height and width of non-square images)
    crop: {p: 0.3, scale: [0.5, 1.0]}
                                # random crop whose sides are a random fraction (scale) of the
                                # image's, placed so that it contains one randomly chosen box when
                                # it fits (as albumentations' AtLeastOneBBoxRandomCrop), then
                                # resized back to the input size: a zoom-in on small objects
    affine: {p: 0.3, scale: [0.8, 1.2], translate: 0.05, rotate: 10, rotate_method: largest_box}
                                # scale range, translation as a fraction of the size (+-),
                                # rotation in degrees (+-), box rule for rotations
                                # (largest_box | ellipse); borders are filled with 0
    brightness_contrast: {p: 0.3, limit: 0.2}   # brightness and contrast change in +-limit
    noise: {p: 0.2, std: [0.01, 0.05]}          # Gaussian noise, std as a fraction of 255
    blur: {p: 0.1, limit: 3}                    # box blur, odd kernel size in 3..limit

A dict entry may also be written as a bare probability (``blur: 0.1``) to use its default
settings. Unknown keys raise :class:`ConfigError` naming the key and the valid ones.

Boxes are ``x1, y1, x2, y2`` pixels (``A.BboxParams(format="pascal_voc", clip=True)``). After a
transform, boxes below ``min_visibility`` / ``min_area`` and boxes thinner than 1 pixel are
dropped together with their labels; an image may end with no box (a valid negative example for
torchvision's Faster R-CNN).

Randomness: albumentations 2.x transforms carry their own generators and ignore ``random`` /
``numpy`` / ``torch`` seeds. ``Compose(seed=s)`` (2.0.8) gives every transform the *same* seed,
which makes transforms with one draw per call, such as the two flips, fire together. The
pipeline returned here is a :class:`SeededCompose`, whose ``set_random_seed(s)`` (like
:func:`seed_transform`) gives all transforms one shared stream instead. In a ``DataLoader`` with
workers, seed it per worker in ``worker_init_fn`` (``transform.set_random_seed(base + worker_id)``),
otherwise every worker replays the same augmentation sequence; without any seed (``seed=None``
and no worker seeding) the sequence differs from run to run.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops import functional as fcrops
from albumentations.augmentations.geometric import functional as fgeometric

from ..errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .coco import CocoDataset

TOP_LEVEL_KEYS = (
    "enabled",
    "min_visibility",
    "min_area",
    "hflip",
    "vflip",
    "rotate90",
    "crop",
    "affine",
    "brightness_contrast",
    "noise",
    "blur",
)
# defaults of each dict entry (used for keys left out, and for a bare probability)
ENTRY_DEFAULTS: dict[str, dict[str, Any]] = {
    "crop": {"p": 0.3, "scale": [0.5, 1.0]},
    "affine": {"p": 0.3, "scale": [0.8, 1.2], "translate": 0.05, "rotate": 10.0, "rotate_method": "largest_box"},
    "brightness_contrast": {"p": 0.3, "limit": 0.2},
    "noise": {"p": 0.2, "std": [0.01, 0.05]},
    "blur": {"p": 0.1, "limit": 3},
}
DEFAULT_MIN_VISIBILITY = 0.3
DEFAULT_MIN_AREA = 4.0
MIN_SIDE_PX = 1.0


class RandomScaleCrop(A.DualTransform):
    """Crop a window whose sides are ``s`` times the image's (``s`` uniform in ``scale``) and
    resize it back to the input size.

    When boxes are given, the window is placed to contain one randomly chosen box if it fits
    (else to overlap it as much as it can); without boxes it is placed uniformly.
    """

    def __init__(self, scale: tuple[float, float] = (0.5, 1.0), p: float = 1.0):
        super().__init__(p=p)
        self.scale = (float(scale[0]), float(scale[1]))

    @property
    def targets_as_params(self) -> list[str]:
        return []

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        s = self.py_random.uniform(*self.scale)
        crop_h = min(height, max(1, round(height * s)))
        crop_w = min(width, max(1, round(width * s)))
        x_lo, x_hi = 0, width - crop_w
        y_lo, y_hi = 0, height - crop_h
        bboxes = data.get("bboxes")
        if bboxes is not None and len(bboxes):
            x1, y1, x2, y2 = np.asarray(bboxes)[self.py_random.randrange(len(bboxes)), :4]
            x1, x2 = x1 * width, x2 * width
            y1, y2 = y1 * height, y2 * height
            x_lo, x_hi = _window_range(x1, x2, crop_w, width)
            y_lo, y_hi = _window_range(y1, y2, crop_h, height)
        x0 = self.py_random.randint(x_lo, x_hi)
        y0 = self.py_random.randint(y_lo, y_hi)
        return {"crop_coords": (x0, y0, x0 + crop_w, y0 + crop_h)}

    def apply(self, img: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        crop = fcrops.crop(img, *crop_coords)
        return fgeometric.resize(crop, tuple(params["shape"][:2]), cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        crop = fcrops.crop(mask, *crop_coords)
        return fgeometric.resize(crop, tuple(params["shape"][:2]), cv2.INTER_NEAREST)

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        # normalised coordinates relative to the window are unchanged by the resize
        return fcrops.crop_bboxes_by_coords(bboxes, crop_coords, params["shape"][:2])

    def apply_to_keypoints(
        self, keypoints: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        keypoints = fcrops.crop_keypoints_by_coords(keypoints, crop_coords)
        height, width = params["shape"][:2]
        return fgeometric.keypoints_scale(
            keypoints,
            scale_x=width / (crop_coords[2] - crop_coords[0]),
            scale_y=height / (crop_coords[3] - crop_coords[1]),
        )

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale",)


def _window_range(lo: float, hi: float, size: int, limit: int) -> tuple[int, int]:
    """Start positions of a ``size`` window inside ``[0, limit]`` that contain ``[lo, hi]``
    (or, for a box larger than the window, that lie inside it)."""
    if hi - lo <= size:
        start_lo, start_hi = math.ceil(hi - size), math.floor(lo)
    else:
        start_lo, start_hi = math.ceil(lo), math.floor(hi - size)
    start_lo, start_hi = max(0, start_lo), min(limit - size, start_hi)
    if start_lo > start_hi:  # rounding at the borders: fall back to anywhere
        return 0, limit - size
    return start_lo, start_hi


class SeededCompose(A.Compose):
    """``A.Compose`` whose ``set_random_seed(seed)`` gives all transforms one shared stream.

    albumentations 2.0.8 seeds every transform of a Compose with the same seed, so two
    transforms that draw once per call (``HorizontalFlip`` and ``VerticalFlip``) always fire
    together. Code that seeds a pipeline generically (``transform.set_random_seed(s)`` in a
    ``worker_init_fn``) gets independent draws from this class.
    """

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        if seed is not None:
            self.set_random_state(np.random.default_rng(seed), random.Random(seed))


# ---------------------------------------------------------------------------- building
def build_transform(cfg: Mapping[str, Any] | None, train: bool = True, seed: int | None = None) -> A.Compose | None:
    """The training augmentation pipeline described by ``cfg`` (schema in the module docstring),
    or ``None`` for evaluation splits (``train=False``), an empty/missing section or
    ``enabled: false``. ``seed`` makes the sequence reproducible (see :func:`seed_transform`)."""
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"augmentation must be a mapping of {list(TOP_LEVEL_KEYS)}, got {type(cfg).__name__}")
    unknown = [k for k in cfg if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise ConfigError(f"augmentation: unknown key(s) {unknown}; valid keys are {list(TOP_LEVEL_KEYS)}")
    # validate everything even when disabled or for evaluation, so typos surface early
    enabled = cfg.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"augmentation.enabled must be true or false, got {enabled!r}")
    min_visibility = _number(cfg, "min_visibility", DEFAULT_MIN_VISIBILITY, 0.0, 1.0)
    min_area = _number(cfg, "min_area", DEFAULT_MIN_AREA, 0.0, None)
    transforms: list[Any] = []

    crop = _entry(cfg, "crop")
    if crop:
        transforms.append(RandomScaleCrop(scale=_range(crop, "crop", "scale", 1e-3, 1.0), p=crop["p"]))
    affine = _entry(cfg, "affine")
    if affine:
        translate = _number(affine, "translate", 0.0, 0.0, 1.0, where="augmentation.affine")
        rotate = _number(affine, "rotate", 0.0, 0.0, 180.0, where="augmentation.affine")
        method = affine.get("rotate_method", "largest_box")
        if method not in ("largest_box", "ellipse"):
            raise ConfigError(f"augmentation.affine.rotate_method must be largest_box or ellipse, got {method!r}")
        transforms.append(
            A.Affine(
                scale=_range(affine, "affine", "scale", 1e-3, None),
                translate_percent=(-translate, translate),
                rotate=(-rotate, rotate),
                rotate_method=method,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=affine["p"],
            )
        )
    for key, cls in (("hflip", A.HorizontalFlip), ("vflip", A.VerticalFlip), ("rotate90", A.RandomRotate90)):
        p = _probability(cfg.get(key), f"augmentation.{key}")
        if p:
            transforms.append(cls(p=p))
    bc = _entry(cfg, "brightness_contrast")
    if bc:
        limit = _number(bc, "limit", 0.2, 0.0, 1.0, where="augmentation.brightness_contrast")
        transforms.append(A.RandomBrightnessContrast(brightness_limit=limit, contrast_limit=limit, p=bc["p"]))
    noise = _entry(cfg, "noise")
    if noise:
        transforms.append(A.GaussNoise(std_range=_range(noise, "noise", "std", 0.0, 1.0), p=noise["p"]))
    blur = _entry(cfg, "blur")
    if blur:
        limit = blur.get("limit", 3)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 3 or limit % 2 == 0:
            raise ConfigError(f"augmentation.blur.limit must be an odd integer >= 3, got {limit!r}")
        transforms.append(A.Blur(blur_limit=(3, limit), p=blur["p"]))

    if not train or not enabled or not transforms:
        return None
    with warnings.catch_warnings():
        # pixel-only pipelines (noise, blur...) leave boxes alone, which albumentations flags
        warnings.filterwarnings("ignore", message="Got processor for bboxes", category=UserWarning)
        compose = SeededCompose(
            transforms,
            bbox_params=A.BboxParams(
                format="pascal_voc",
                label_fields=["labels"],
                min_visibility=min_visibility,
                min_area=min_area,
                clip=True,
            ),
        )
    if seed is not None:
        seed_transform(compose, seed)
    return compose


def seed_transform(transform: A.Compose | None, seed: int) -> None:
    """Give the whole pipeline one generator stream seeded by ``seed`` (reproducible, and the
    transforms draw independently, unlike ``Compose(seed=...)`` in albumentations 2.0.8).
    Works on any ``A.Compose``; on a :class:`SeededCompose` it equals ``set_random_seed``."""
    if transform is not None:
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def _entry(cfg: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """A dict entry with defaults filled in, or None when off."""
    value = cfg.get(key)
    where = f"augmentation.{key}"
    if value is None or value is False or (_is_number(value) and value == 0):
        return None
    defaults = ENTRY_DEFAULTS[key]
    if _is_number(value):
        out = dict(defaults, p=_probability(value, where))
    elif isinstance(value, Mapping):
        unknown = [k for k in value if k not in defaults]
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {list(defaults)}")
        out = {**defaults, **value}
        out["p"] = _probability(out["p"], f"{where}.p")
    else:
        raise ConfigError(f"{where} must be a mapping {defaults}, a probability, or null; got {value!r}")
    return out if out["p"] > 0 else None


def _probability(value: Any, where: str) -> float:
    if value is None or value is False:
        return 0.0
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{where} must be a probability in [0, 1] (or null for off), got {value!r}")
    return float(value)


def _number(cfg: Mapping[str, Any], key: str, default: float, lo: float, hi: float | None, where: str = "augmentation") -> float:
    value = cfg.get(key, default)
    if value is None:
        value = default
    if not _is_number(value) or value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{where}.{key} must be a number {bounds}, got {value!r}")
    return float(value)


def _range(entry: Mapping[str, Any], name: str, key: str, lo: float, hi: float | None) -> tuple[float, float]:
    value = entry.get(key)
    where = f"augmentation.{name}.{key}"
    if _is_number(value):
        value = [value, value]
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(_is_number(v) for v in value)
        or not lo <= value[0] <= value[1]
        or (hi is not None and value[1] > hi)
    ):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{where} must be [low, high] with low <= high, {bounds}; got {value!r}")
    return float(value[0]), float(value[1])


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# ---------------------------------------------------------------------------- applying
def apply_transform(
    transform: A.Compose | None, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``transform`` to an image ``(H, W)`` or ``(H, W, 3)`` (``uint8``, or ``float32`` in
    [0, 1] for images of more than 8 bits) and its boxes.

    ``boxes`` is ``(N, 4)`` float ``x1, y1, x2, y2`` pixels, ``labels`` ``(N,)`` int. Returns the
    image with the same channel layout, ``boxes`` ``(M, 4)`` float32 and ``labels`` ``(M,)``
    int64 (``M`` may be 0). Input boxes are clipped to the image and those with no area left
    are dropped first (albumentations refuses them); output boxes under 1 pixel wide or high
    are dropped.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    if transform is None:
        return image, boxes, labels
    height, width = image.shape[:2]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, labels = boxes[keep], labels[keep]

    out = transform(image=image, bboxes=boxes, labels=labels)
    new_image = np.asarray(out["image"])
    if image.ndim == 2 and new_image.ndim == 3 and new_image.shape[-1] == 1:
        new_image = new_image[..., 0]
    new_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
    new_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
    ok = ((new_boxes[:, 2] - new_boxes[:, 0]) >= MIN_SIDE_PX) & ((new_boxes[:, 3] - new_boxes[:, 1]) >= MIN_SIDE_PX)
    return np.ascontiguousarray(new_image), new_boxes[ok], new_labels[ok]


# ---------------------------------------------------------------------------- preview
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
    images as they are. Pixels are scaled by ``intensity`` (:mod:`.intensity`), as in training.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from .intensity import to_display

    if image_ids is None:
        all_ids = [img["id"] for img in coco.images]
        if not all_ids:
            fig = Figure(figsize=(4, 1.5))
            fig.text(0.5, 0.5, "no training images to preview", ha="center", va="center")
            return fig
        rng = np.random.default_rng(seed)
        if len(all_ids) >= num_samples:
            picked = sorted(rng.choice(len(all_ids), size=num_samples, replace=False).tolist())
        else:
            picked = [i % len(all_ids) for i in range(num_samples)]
        ids = [all_ids[i] for i in picked]
    else:
        ids = list(image_ids)
    if transform is not None:
        transform = copy.deepcopy(transform)
        seed_transform(transform, seed)

    n = len(ids)
    ncols = max(1, min(4, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(3.2 * ncols, 3.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa"]
    for ax, image_id in zip(axes, ids, strict=False):
        image = coco.read_image(image_id, intensity)
        anns = [a for a in coco.annotations_by_image.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        labels = np.array([coco.label_of_category.get(a["category_id"], 0) for a in anns], dtype=np.int64)
        image, boxes, labels = apply_transform(transform, image, boxes, labels)
        image = to_display(image)
        if image.ndim == 2:
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        for (x1, y1, x2, y2), label in zip(boxes, labels, strict=True):
            ax.add_patch(
                Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=0.8, edgecolor=colors[int(label) % len(colors)])
            )
        ax.set_title(f"image {image_id}: {len(boxes)} boxes", fontsize=8)
        ax.set_axis_off()
    for ax in axes[n:]:
        fig.delaxes(ax)
    fig.suptitle("Training augmentation" if transform is not None else "Training images (no augmentation)", fontsize=10)
    fig.tight_layout()
    return fig
