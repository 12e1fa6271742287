"""Box-aware training augmentation (albumentations 2.x) for 1- and 3-channel uint8 images.

Augmentation applies to the training split only: :func:`build_transform` returns ``None`` for
``train=False`` and when disabled.

Parameter schema (the ``augmentation`` section of an experiment), declared once with defaults
and descriptions in :class:`AugmentationConfig`; every entry is optional, and an entry set to
``null``, ``false`` or ``0`` is off. An example::

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

import math
import random
import warnings
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops import functional as fcrops
from albumentations.augmentations.geometric import functional as fgeometric
from pydantic import AfterValidator, BeforeValidator, Field, Strict
from pydantic_core import PydanticCustomError

from ..modeling.config import ConfigSection, Fraction, none_is, parse_section

MIN_SIDE_PX = 1.0


# ---------------------------------------------------------------------------- config
def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _off_is_zero(value: Any) -> Any:
    return 0.0 if value is None or value is False else value


def _entry_shorthand(value: Any) -> Any:
    """``null``/``false``/``0``: off; a bare probability: the entry's defaults with that ``p``."""
    if value is None or value is False or (_is_number(value) and value == 0):
        return None
    return {"p": value} if _is_number(value) else value


def _pair(value: Any) -> Any:
    """A single number ``v`` as ``[v, v]``; a sequence must have two items."""
    if _is_number(value):
        return [value, value]
    if isinstance(value, list | tuple) and len(value) != 2:
        raise PydanticCustomError("range_shape", "Input should be [low, high]")
    return value


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise PydanticCustomError("range_order", "Input should be [low, high] with low <= high")
    return pair


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise PydanticCustomError("odd", "Input should be an odd integer >= 3")
    return value


def Range(low: float, high: float | None) -> Any:  # noqa: N802 - a type, used as one
    """``[low, high]`` within the bounds (a single number ``v`` is ``[v, v]``)."""
    bound = Annotated[float, Strict(), Field(ge=low, le=high)]
    return Annotated[
        tuple[bound, bound],
        AfterValidator(_ordered),
        BeforeValidator(_pair),
    ]


Probability = Annotated[Fraction, BeforeValidator(_off_is_zero)]  # null/false: 0 (off)


class CropEntry(ConfigSection):
    """Random crop placed on a box, resized back to the input size (:class:`RandomScaleCrop`)."""

    p: Probability = Field(0.3, description="probability")
    scale: Range(1e-3, 1.0) = Field(
        (0.5, 1.0), description="crop side as a fraction of the image's, [low, high]"
    )

    def transform(self) -> A.BasicTransform:
        return RandomScaleCrop(scale=self.scale, p=self.p)


class AffineEntry(ConfigSection):
    """Scale, translation and rotation (``A.Affine``), borders filled with 0."""

    # fmt: off
    p: Probability = Field(0.3, description="probability")
    scale: Range(1e-3, None) = Field((0.8, 1.2), description="scale factor range [low, high]")
    translate: Annotated[Fraction, none_is(0.0)] = Field(0.05, description=(
        "translation, +- this fraction of the size; null: 0"))
    rotate: Annotated[float, Strict(), Field(ge=0.0, le=180.0), none_is(0.0)] = Field(
        10.0, description="rotation, +- this many degrees; null: 0")
    rotate_method: Literal["largest_box", "ellipse"] = Field(
        "largest_box", description="how a rotated box is bounded: largest_box | ellipse")
    # fmt: on

    def transform(self) -> A.BasicTransform:
        return A.Affine(
            scale=self.scale,
            translate_percent=(-self.translate, self.translate),
            rotate=(-self.rotate, self.rotate),
            rotate_method=self.rotate_method,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=self.p,
        )


class BrightnessContrastEntry(ConfigSection):
    """Brightness and contrast change (``A.RandomBrightnessContrast``)."""

    p: Probability = Field(0.3, description="probability")
    limit: Annotated[Fraction, none_is(0.2)] = Field(
        0.2, description="brightness and contrast change in +-limit"
    )

    def transform(self) -> A.BasicTransform:
        return A.RandomBrightnessContrast(
            brightness_limit=self.limit, contrast_limit=self.limit, p=self.p
        )


class NoiseEntry(ConfigSection):
    """Gaussian noise (``A.GaussNoise``)."""

    p: Probability = Field(0.2, description="probability")
    std: Range(0.0, 1.0) = Field(
        (0.01, 0.05), description="noise std range as a fraction of 255, [low, high]"
    )

    def transform(self) -> A.BasicTransform:
        return A.GaussNoise(std_range=self.std, p=self.p)


class BlurEntry(ConfigSection):
    """Box blur (``A.Blur``)."""

    p: Probability = Field(0.1, description="probability")
    limit: Annotated[int, Strict(), Field(ge=3), AfterValidator(_odd)] = Field(
        3, description="largest kernel size, odd (kernel drawn in 3..limit)"
    )

    def transform(self) -> A.BasicTransform:
        return A.Blur(blur_limit=(3, self.limit), p=self.p)


def Entry(cls: type[ConfigSection]) -> Any:  # noqa: N802 - a type, used as one
    """An entry: a mapping of ``cls``'s keys, a bare probability, or ``null``/``false``/0 (off)."""
    return Annotated[cls | None, BeforeValidator(_entry_shorthand)]


class AugmentationConfig(ConfigSection):
    """The ``augmentation`` section: which transforms, how often, how boxes are kept."""

    SECTION: ClassVar[str] = "augmentation"

    # fmt: off
    enabled: Annotated[bool, Strict()] = Field(True, description="false: no augmentation at all")
    min_visibility: Annotated[Fraction, none_is(0.3)] = Field(0.3, description=(
        "drop a box keeping less than this fraction of its area"))
    min_area: Annotated[float, Strict(), Field(ge=0.0), none_is(4.0)] = Field(4.0, description=(
        "drop a box smaller than this many pixels (after the transform)"))
    hflip: Probability = Field(0.0, description="probability of a horizontal flip")
    vflip: Probability = Field(0.0, description="probability of a vertical flip")
    rotate90: Probability = Field(0.0, description=(
        "probability of a rotation by a random multiple of 90 degrees"))
    crop: Entry(CropEntry) = Field(None, description=(
        "zoom-in crop placed on a box: {p, scale}, a bare probability, or null (off)"))
    affine: Entry(AffineEntry) = Field(None, description=(
        "{p, scale, translate, rotate, rotate_method}, a bare probability, or null (off)"))
    brightness_contrast: Entry(BrightnessContrastEntry) = Field(None, description=(
        "{p, limit}, a bare probability, or null (off)"))
    noise: Entry(NoiseEntry) = Field(None, description=(
        "Gaussian noise: {p, std}, a bare probability, or null (off)"))
    blur: Entry(BlurEntry) = Field(None, description=(
        "box blur: {p, limit}, a bare probability, or null (off)"))
    # fmt: on

    def transforms(self) -> list[A.BasicTransform]:
        """The transforms switched on, in the order they are applied."""
        out = [entry.transform() for entry in (self.crop, self.affine) if _on(entry)]
        for p, cls in (
            (self.hflip, A.HorizontalFlip),
            (self.vflip, A.VerticalFlip),
            (self.rotate90, A.RandomRotate90),
        ):
            if p:
                out.append(cls(p=p))
        entries = (self.brightness_contrast, self.noise, self.blur)
        return out + [entry.transform() for entry in entries if _on(entry)]


def _on(entry: ConfigSection | None) -> bool:
    return entry is not None and entry.p > 0


TOP_LEVEL_KEYS = tuple(AugmentationConfig.model_fields)


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

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
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

    def apply(
        self, img: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        crop = fcrops.crop(img, *crop_coords)
        return fgeometric.resize(crop, tuple(params["shape"][:2]), cv2.INTER_LINEAR)

    def apply_to_mask(
        self, mask: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        crop = fcrops.crop(mask, *crop_coords)
        return fgeometric.resize(crop, tuple(params["shape"][:2]), cv2.INTER_NEAREST)

    def apply_to_bboxes(
        self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
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
def build_transform(
    cfg: Mapping[str, Any] | AugmentationConfig | None,
    train: bool = True,
    seed: int | None = None,
) -> A.Compose | None:
    """The training augmentation pipeline described by ``cfg`` (:class:`AugmentationConfig` or
    a mapping of its keys), or ``None`` for evaluation splits (``train=False``), an
    empty/missing section or ``enabled: false``. The config is checked in every case, so typos
    surface early (:class:`ConfigError`). ``seed`` makes the sequence reproducible (see
    :func:`seed_transform`)."""
    if cfg is None:
        return None
    aug = parse_section(AugmentationConfig, cfg)
    transforms = aug.transforms()
    if not train or not aug.enabled or not transforms:
        return None
    with warnings.catch_warnings():
        # pixel-only pipelines (noise, blur...) leave boxes alone, which albumentations flags
        warnings.filterwarnings("ignore", message="Got processor for bboxes", category=UserWarning)
        compose = SeededCompose(
            transforms,
            bbox_params=A.BboxParams(
                format="pascal_voc",
                label_fields=["labels"],
                min_visibility=aug.min_visibility,
                min_area=aug.min_area,
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
    image, boxes, labels, _ = apply_transform_with_masks(transform, image, boxes, labels, None)
    return image, boxes, labels


def apply_transform_with_masks(
    transform: A.Compose | None,
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`apply_transform` with instance masks ``(N, H, W)`` uint8 (or ``None``): they go
    through the same geometric transforms (albumentations' ``masks`` target), and an object
    whose box is dropped loses its mask too, and one whose mask is left with no pixel (its
    box kept by a corner without the object) is dropped. Returns ``masks`` ``(M, H', W')``."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(boxes) != len(labels) or (masks is not None and len(masks) != len(labels)):
        n_masks = "no" if masks is None else len(masks)
        raise ValueError(f"{len(boxes)} boxes, {len(labels)} labels and {n_masks} masks")
    if transform is None:
        return image, boxes, labels, masks
    height, width = image.shape[:2]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    keep = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))

    # the label field carries each object's index, so that its mask follows its box
    data: dict[str, Any] = {"image": image, "bboxes": boxes[keep], "labels": keep}
    if masks is not None and len(masks):
        data["masks"] = list(masks)
    out = transform(**data)
    new_image = np.asarray(out["image"])
    if image.ndim == 2 and new_image.ndim == 3 and new_image.shape[-1] == 1:
        new_image = new_image[..., 0]
    new_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
    index = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
    ok = ((new_boxes[:, 2] - new_boxes[:, 0]) >= MIN_SIDE_PX) & (
        (new_boxes[:, 3] - new_boxes[:, 1]) >= MIN_SIDE_PX
    )
    new_masks = None
    if masks is not None:
        new_h, new_w = new_image.shape[:2]
        moved = out.get("masks")
        # a box kept over none of its object's pixels (a crop of its empty corner) goes too
        ok &= np.array([bool(np.any(moved[i])) for i in index], dtype=bool).reshape(-1)
        new_masks = np.zeros((int(ok.sum()), new_h, new_w), dtype=np.uint8)
        for row, i in enumerate(index[ok]):
            new_masks[row] = np.asarray(moved[i], dtype=np.uint8)
    return np.ascontiguousarray(new_image), new_boxes[ok], labels[index[ok]], new_masks
