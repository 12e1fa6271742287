"""Pixel intensities as the model sees them: 8-bit kept, 12/16-bit and float scaled faithfully.

Instrument images (microscopy, X-ray, astronomy, thermal) are stored as 12- or 16-bit integers
or as floats. A fixed ``v / 257`` keeps 16 grey levels of a 12-bit image (values 0..4095) and
turns 8-bit values stored as ``uint16`` into 0/1; this module replaces it with a chosen mode,
applied identically wherever pixels are read (training, evaluation, prediction, pretraining,
the report's drawings) and saved with the model so that ``predict`` reproduces it:

- ``auto`` (default): ``uint8`` images are kept as they are (``/255`` in the tensor); images of
  more than 8 bits (``uint16``, ``int32``, ``float32``...) are scaled with a *dataset-level*
  range ``[low, high]``, the ``percentiles`` (default 0.1 / 99.9) of pixels sampled from the
  training split, and clipped to ``[0, 1]`` (``float32``, every level kept). Dataset-level, not
  per image, so the relative brightness of images survives. The same scaling as csbdeep's
  ``normalize`` (percentile-based, as microscopy tools do), with the percentiles taken once over
  the dataset. Without a dataset range (an image read outside a pipeline run) it falls back to
  the image's own percentiles.
- ``per_image``: each image of more than 8 bits scaled by its own percentiles.
- ``fixed``: the former behaviour: 16-bit integers ``round(v / 257)`` to 8 bits, floats taken
  as already in ``[0, 1]`` (clipped).

Why by hand: albumentations' ``Normalize``/``ToFloat`` scale by a fixed maximum, csbdeep's
``normalize`` is per image and pulls in TensorFlow; neither computes a range over a dataset's
training split, samples it cheaply, or reports what was found.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

MODES = ("auto", "per_image", "fixed")
DEFAULT_PERCENTILES = (0.1, 99.9)
MIN_LEVELS = 32  # validation warns when an image would keep fewer grey levels than this


@dataclass
class Intensity:
    """How raw pixel values become model input (see the module docstring)."""

    mode: str = "auto"  # auto | per_image | fixed
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES  # (low, high) for auto and per_image
    low: float | None = None  # auto: the dataset-level range in raw units (from the training split)
    high: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"intensity.mode must be one of {list(MODES)}, got {self.mode!r}")
        try:
            lo, hi = (float(p) for p in self.percentiles)
        except (TypeError, ValueError):
            raise ConfigError(
                f"intensity.percentiles must be two numbers [low, high], got {self.percentiles!r}"
            ) from None
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(
                f"intensity.percentiles must satisfy 0 <= low < high <= 100, got {[lo, hi]}"
            )
        self.percentiles = (lo, hi)
        if (self.low is None) != (self.high is None):
            raise ConfigError("intensity.low and intensity.high must be given together")
        if self.low is not None:
            try:
                self.low, self.high = float(self.low), float(self.high)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"intensity.low / high must be numbers, got {self.low!r}, {self.high!r}"
                ) from None
            if not (np.isfinite(self.low) and np.isfinite(self.high) and self.low <= self.high):
                raise ConfigError(
                    "intensity.low / high must be finite with low <= high, got "
                    f"{self.low}, {self.high}"
                )

    @classmethod
    def from_dict(cls, spec: dict[str, Any] | Intensity | None) -> Intensity:
        """``None`` gives ``auto`` without a dataset range (per-image scaling of >8-bit files)."""
        if isinstance(spec, Intensity):
            return spec
        spec = dict(spec or {})
        known = {"mode", "percentiles", "low", "high"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"unknown intensity setting(s) {unknown}; valid: {sorted(known)}")
        if "percentiles" in spec:
            spec["percentiles"] = tuple(spec["percentiles"])
        return cls(**spec)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["percentiles"] = list(self.percentiles)
        return out


FIXED = Intensity(mode="fixed")  # model files written before intensity modes existed


def is_eight_bit(raw: np.ndarray) -> bool:
    return raw.dtype in (np.uint8, np.bool_)


def _scale(raw: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low
    out = raw.astype(np.float32)
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=low, posinf=high, neginf=low)
    if span <= 0:  # a constant image (or range): nothing to stretch
        return np.zeros(out.shape, np.float32)
    out -= np.float32(low)
    out *= np.float32(1.0 / span)
    return np.clip(out, 0.0, 1.0, out=out)


def image_percentiles(raw: np.ndarray, percentiles: Sequence[float]) -> tuple[float, float]:
    values = raw.reshape(-1).astype(np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    lo, hi = np.percentile(values, list(percentiles))
    return float(lo), float(hi)


def normalize(
    raw: np.ndarray, spec: Intensity | dict[str, Any] | None = None, path: Any = "<array>"
):
    """Raw pixels (as :func:`smallobj_pipeline.detection.data.coco.read_raw` returns them) -> model
    input: ``uint8`` for 8-bit files (unchanged), ``float32`` in ``[0, 1]`` otherwise (``uint8``
    under ``fixed`` for 16-bit integers)."""
    spec = Intensity.from_dict(spec)
    if raw.dtype == np.bool_:
        return raw.astype(np.uint8) * 255
    if raw.dtype == np.uint8:
        return np.ascontiguousarray(raw)
    if raw.dtype.kind not in "uif":
        raise DatasetError(f"{path}: unsupported pixel type {raw.dtype}")
    if spec.mode == "fixed":
        if raw.dtype.kind == "f":
            return np.clip(np.nan_to_num(raw.astype(np.float32)), 0.0, 1.0)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise DatasetError(
                f"{path}: values {raw.min()}..{raw.max()} do not fit 16 bits, which intensity.mode "
                "'fixed' assumes; use intensity.mode 'auto'"
            )
        return np.round(raw.astype(np.float32) / 257.0).astype(np.uint8)
    if spec.mode == "auto" and spec.low is not None:
        return _scale(raw, spec.low, spec.high)
    return _scale(raw, *image_percentiles(raw, spec.percentiles))


def grey_levels(raw: np.ndarray, spec: Intensity | dict[str, Any] | None = None) -> int:
    """Distinct grey levels the model would see of this image (8-bit-equivalent levels for
    ``fixed``, distinct scaled values otherwise)."""
    out = normalize(raw, spec)
    if out.dtype != np.uint8:
        out = np.round(out * 65535.0).astype(np.uint16)  # distinct float values, counted cheaply
    return int(np.unique(out).size)


def to_display(image: np.ndarray) -> np.ndarray:
    """Model input (``uint8`` or ``float32`` in [0, 1]) -> ``uint8`` for drawing."""
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def bit_depth(dtype: np.dtype, max_value: float) -> str:
    """A person's name for the pixel format: ``8-bit``, ``12-bit (uint16)``, ``float32``."""
    dtype = np.dtype(dtype)
    if dtype in (np.uint8, np.bool_):
        return "8-bit"
    if dtype.kind == "f":
        return str(dtype)
    bits = max(1, int(np.ceil(np.log2(max(float(max_value), 1.0) + 1.0))))
    return f"{bits}-bit ({dtype})"


@dataclass
class _Sample:
    """What :func:`dataset_intensity` found so far: sampled pixel values, dtypes, counts."""

    values: list[np.ndarray] = field(default_factory=list)
    dtypes: dict[str, int] = field(default_factory=dict)
    high_bit: int = 0
    eight_bit: int = 0
    grey: int = 0
    colour: int = 0
    grey_as_rgb: int = 0
    found_min: float = float("inf")
    found_max: float = float("-inf")

    def add(self, raw: np.ndarray, rng: np.random.Generator, pixels_per_image: int) -> None:
        """Count ``raw``'s dtype and channels; sample its finite pixels if over 8 bits."""
        self.dtypes[str(raw.dtype)] = self.dtypes.get(str(raw.dtype), 0) + 1
        if raw.ndim == 3:
            if np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(
                raw[..., 0], raw[..., 2]
            ):
                self.grey_as_rgb += 1
            else:
                self.colour += 1
        else:
            self.grey += 1
        if is_eight_bit(raw):
            self.eight_bit += 1
            return
        self.high_bit += 1
        flat = raw.reshape(-1).astype(np.float64)
        flat = flat[np.isfinite(flat)]
        if flat.size:
            self.found_min = min(self.found_min, float(flat.min()))
            self.found_max = max(self.found_max, float(flat.max()))
            take = min(flat.size, int(pixels_per_image))
            self.values.append(
                flat[rng.choice(flat.size, size=take, replace=False)] if take < flat.size else flat
            )

    def depth(self) -> str:
        """The bit depth(s) found, e.g. ``8-bit``, ``12-bit (uint16)``, ``mixed: 8-bit and ...``."""
        high_dtypes = [d for d in self.dtypes if d not in ("uint8", "bool")]
        if not high_dtypes:
            return "8-bit"
        depth = ", ".join(
            bit_depth(np.dtype(d), self.found_max if np.dtype(d).kind != "f" else 0)
            for d in high_dtypes
        )
        return f"mixed: 8-bit and {depth}" if self.eight_bit else depth


def dataset_intensity(
    images: Iterable[tuple[Any, np.ndarray]],
    mode: str = "auto",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    pixels_per_image: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Sample raw pixels of ``images`` (``(id, raw array)`` pairs, typically a seeded sample of
    the training split) and return what was found and the :class:`Intensity` to use
    (``spec``), plus the channel census that ``model.in_channels: auto`` reads."""
    spec = Intensity(mode=mode, percentiles=tuple(percentiles))
    rng = np.random.default_rng(seed)
    s = _Sample()
    for _, raw in images:
        s.add(raw, rng, pixels_per_image)
    found = None
    if s.high_bit and not s.values:
        logger.warning(
            "no finite pixel in the %d sampled images of more than 8 bits: they are scaled "
            "per image",
            s.high_bit,
        )
    if s.values:
        values = np.concatenate(s.values)
        lo, hi = np.percentile(values, list(spec.percentiles))
        found = [s.found_min, s.found_max]
        if mode == "auto":
            if hi <= lo:  # nearly constant data: use the full range found rather than nothing
                lo, hi = s.found_min, s.found_max
            spec.low, spec.high = float(lo), float(hi)
    return {
        "spec": spec.to_dict(),
        "bit_depth": s.depth(),
        "dtypes": s.dtypes,
        "images_sampled": s.high_bit + s.eight_bit,
        "high_bit_images": s.high_bit,
        "range_found": found,
        "range_used": [spec.low, spec.high] if spec.low is not None else None,
        "scaling": _scaling(s, spec, mode),
        "channels": {"grey": s.grey, "colour": s.colour, "grey_as_rgb": s.grey_as_rgb},
    }


def _scaling(s: _Sample, spec: Intensity, mode: str) -> str:
    """How the pixels will be scaled, in words (``scaling`` in the report)."""
    if not s.high_bit:
        return "8-bit: value / 255"
    if mode == "fixed":
        return "fixed: 16-bit value / 257 to 8 bits; float clipped to [0, 1]"
    if mode == "per_image" or spec.low is None:
        return f"per image: percentiles {list(spec.percentiles)} of each image, clipped to [0, 1]"
    return (
        f"dataset range [{spec.low:g}, {spec.high:g}] (percentiles {list(spec.percentiles)}) "
        "-> [0, 1]"
    )


SETTINGS = {  # the `intensity` parameters (conf/base/parameters_data.yml) and their checks
    "mode": lambda v: v in MODES,
    "percentiles": lambda v: isinstance(v, list | tuple) and len(v) == 2,
    "sample_images": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "pixels_per_image": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "min_levels": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
}


def check_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Check the ``intensity`` parameters (every key known, every value of its type) before any
    image is read; a :class:`ConfigError` names the key."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown intensity setting(s) {unknown}; valid: {list(SETTINGS)}")
    for key, ok in SETTINGS.items():
        if key in settings and not ok(settings[key]):
            raise ConfigError(f"intensity.{key}: invalid value {settings[key]!r}")
    Intensity(
        mode=settings.get("mode", "auto"),
        percentiles=tuple(settings.get("percentiles", DEFAULT_PERCENTILES)),
    )
    return settings


def choose_in_channels(channels: dict[str, int] | None) -> tuple[int, str]:
    """``model.in_channels: auto``: 3 when the training images are colour, 1 when grey (RGB files
    whose three channels are equal count as grey), with the reason."""
    c = channels or {}
    colour, grey, grey_rgb = (
        int(c.get("colour", 0)),
        int(c.get("grey", 0)),
        int(c.get("grey_as_rgb", 0)),
    )
    total = colour + grey + grey_rgb
    if not total:
        return 1, "no image statistics available: 1 channel (gray)"
    if colour:
        return 3, (
            f"{colour} of {total} sampled training images are colour: 3 channels"
            + (" (grey images are repeated to 3 channels)" if colour < total else "")
        )
    extra = f" ({grey_rgb} are RGB files with R = G = B)" if grey_rgb else ""
    return 1, f"all {total} sampled training images are grey{extra}: 1 channel"
