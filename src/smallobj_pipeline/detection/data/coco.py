"""A COCO detection directory: annotations in memory, images read lazily from disk.

Layout (see SPEC.md): ``root/annotations.json`` in COCO detection format with ``file_name``
relative to ``root``; optional ``train.json`` / ``val.json`` / ``test.json`` fix the split.
Category ids may be any integers; they map to contiguous labels ``1..K`` (0 is background)
in sorted id order, and back to the original ids for output.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import DatasetError
from ..io import place_file, write_json
from .hashing import HashCache
from .intensity import normalize

logger = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.json"
SPLIT_NAMES = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
REQUIRED_KEYS = ("images", "annotations", "categories")
IMAGE_FIELDS = ("id", "file_name", "width", "height")
ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox")


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, turning every failure into a message that names the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig") as fh:  # -sig: a UTF-8 BOM (Windows tools) is fine
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected a JSON object at the top level, got {type(data).__name__}"
        )
    return data


def check_structure(data: dict[str, Any], path: str | Path) -> None:
    """Check the COCO structure (keys, field presence, field types) before anything uses it.

    Value checks (boxes inside images, unique ids, files readable...) belong to
    :mod:`smallobj_pipeline.detection.data.validation`; this only makes the data safe to tabulate.
    """
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DatasetError(
            f"{path}: missing top-level key(s) {missing}; a COCO detection file needs "
            f"{list(REQUIRED_KEYS)}"
        )
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    for i, img in enumerate(data["images"]):
        _require_fields(img, IMAGE_FIELDS, f"{path}: images[{i}]")
        _require_ids(img, ("id",), f"{path}: images[{i}]")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise DatasetError(
                f"{path}: image id {img['id']}: 'file_name' must be a non-empty string"
            )
        for f in ("width", "height"):
            if not _is_number(img[f]):
                raise DatasetError(
                    f"{path}: image id {img['id']}: '{f}' must be a number, got {img[f]!r}"
                )
    for i, ann in enumerate(data["annotations"]):
        _require_fields(ann, ANNOTATION_FIELDS, f"{path}: annotations[{i}]")
        _require_ids(ann, ("id", "image_id", "category_id"), f"{path}: annotations[{i}]")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DatasetError(
                f"{path}: annotation id {ann['id']} (image id {ann['image_id']}): "
                f"'bbox' must be [x, y, width, height] numbers, got {bbox!r}"
            )
    first_category: dict[int, int] = {}
    for i, cat in enumerate(data["categories"]):
        _require_fields(cat, ("id",), f"{path}: categories[{i}]")
        _require_ids(cat, ("id",), f"{path}: categories[{i}]")
        if cat["id"] in first_category:
            j = first_category[cat["id"]]
            raise DatasetError(
                f"{path}: duplicate category id {cat['id']}: categories[{j}] "
                f"{json.dumps(data['categories'][j])} and categories[{i}] {json.dumps(cat)}; "
                "each category needs its own id (which name should its boxes get?)"
            )
        first_category[cat["id"]] = i


def _require_fields(record: Any, fields: tuple[str, ...], where: str) -> None:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object, got {type(record).__name__}")
    missing = [f for f in fields if f not in record]
    if missing:
        ident = f" (id {record['id']})" if "id" in record else ""
        raise DatasetError(f"{where}{ident}: missing field(s) {missing}")


def _require_ids(record: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        v = record[key]
        if isinstance(v, bool) or not isinstance(v, int):
            ident = f" (id {record['id']!r})" if key != "id" and "id" in record else ""
            raise DatasetError(
                f"{where}{ident}: {key!r} must be an integer (COCO ids are integers), got {v!r}"
            )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def safe_join(root: Path, file_name: str) -> Path:
    """Join ``file_name`` under ``root``, refusing absolute paths and ``..`` escapes."""
    if os.path.isabs(file_name) or Path(file_name).is_absolute():
        raise DatasetError(
            f"file_name {file_name!r} is an absolute path; it must be relative to {root}"
        )
    candidate = (root / file_name).resolve()
    root_resolved = root.resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise DatasetError(f"file_name {file_name!r} escapes the dataset directory {root}")
    return candidate


DEFAULT_MAX_IMAGE_PIXELS = (
    50_000_000  # validation.max_image_pixels: larger images are refused unread
)

# PIL mode -> channels as read_image returns them (alpha dropped, palette/CMYK made RGB)
_MODE_CHANNELS = {
    "1": 1,
    "L": 1,
    "LA": 1,
    "La": 1,
    "I": 1,
    "I;16": 1,
    "I;16B": 1,
    "I;16L": 1,
    "I;16N": 1,
    "F": 1,
    "P": 3,
    "PA": 3,
    "RGB": 3,
    "RGBA": 3,
    "RGBa": 3,
    "RGBX": 3,
    "CMYK": 3,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
}


EXIF_ORIENTATION = 0x0112  # 1: as stored; 5-8: rotated by 90 degrees (width and height swap)


def read_header(path: str | Path) -> tuple[int, int, int]:
    """``(width, height, channels)`` from the file's header only: no pixel data is decoded, so
    this is cheap and safe on any image size. ``channels`` is what :func:`read_raw` returns
    (1 or 3; an alpha channel is not counted). Width and height are those of the image as
    displayed: an EXIF orientation of 5-8 (rotated by 90 degrees) swaps them, as
    :func:`read_raw` applies the orientation. A damaged header raises :class:`DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            # lazy: only TIFF files need tifffile (about 0.1 s to import)
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, axes = tuple(int(v) for v in series.shape), str(series.axes)
            h, w, c = _shape_hwc(tiff_hwc_shape(shape, axes, path), path)
            return w, h, c
        with warnings.catch_warnings():  # the size is checked against our own limit by the caller
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                mode = img.mode
                orientation = exif_orientation(img)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file for the user
        raise DatasetError(
            f"{path}: cannot read the image header ({_decoder_error(exc)})"
        ) from None
    if mode not in _MODE_CHANNELS:
        raise DatasetError(f"{path}: unsupported image mode {mode!r}")
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return int(w), int(h), _MODE_CHANNELS[mode]


def exif_orientation(img: Any) -> int:
    """The EXIF orientation tag of an open PIL image (1 when absent or unreadable)."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - a damaged EXIF block is no orientation
        return 1


def check_image_pixels(path: str | Path, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse an image larger than ``max_pixels`` (from its header, before any decoding)."""
    if max_pixels is not None and width * height > max_pixels:
        raise DatasetError(
            f"{path}: image of {width} x {height} pixels ({width * height / 1e6:.1f} megapixels) "
            "exceeds "
            f"validation.max_image_pixels ({max_pixels / 1e6:.1f} megapixels); it is refused "
            "without being "
            "decoded. Tile it into smaller images (with their boxes), or raise "
            "validation.max_image_pixels "
            "if the machine has the memory for it"
        )


def read_raw(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image's pixels faithfully: ``(H, W)`` for 1 channel, ``(H, W, 3)`` for colour, in
    the file's own type (``uint8``, ``uint16``, ``int32``, ``float32``...).

    Only the layout is changed (documented in the README): an alpha channel is dropped; palette
    and CMYK images become RGB; 2-channel (gray + alpha) keeps the gray; 1-bit becomes ``uint8``
    0/255; channel-first TIFFs become channel-last; an EXIF orientation tag is applied (as
    annotation tools display the image). Intensities are scaled by
    :func:`smallobj_pipeline.detection.data.intensity.normalize`, not here. With ``max_pixels`` the
    header is read first and a larger image is refused before decoding.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    if max_pixels is not None:
        w, h, _ = read_header(path)
        check_image_pixels(path, w, h, max_pixels)
    try:
        arr = _decode(path)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file for the user
        raise DatasetError(f"{path}: cannot decode image ({_decoder_error(exc)})") from None
    return gray_or_rgb(arr, path)


def read_image(
    path: str | Path, max_pixels: int | None = None, intensity: Any = None
) -> np.ndarray:
    """:func:`read_raw`, then intensities scaled by ``intensity`` (an
    :class:`~smallobj_pipeline.detection.data.intensity.Intensity` or its dict; ``None``: 8-bit
    kept,
    more bits scaled by the image's own percentiles): ``uint8``, or ``float32`` in [0, 1]."""
    return normalize(read_raw(path, max_pixels), intensity, path)


def _decoder_error(exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return (
            f"too large to decode safely: {exc} Tile it into smaller images, or check that the "
            "file "
            "is what it claims to be"
        )
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "truncated" in text.lower():
        extra = text.replace("image file is truncated", "").strip(" ()")
        return "the file is truncated" + (f" ({extra})" if extra else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


TIFF_CHANNEL_AXES = "SC"  # tifffile's axes codes: S samples (RGB), C channels (ImageJ)


def tiff_hwc_shape(
    shape: tuple[int, ...], axes: str, path: str | Path = "<tiff>"
) -> tuple[int, ...]:
    """The (H, W[, C]) shape of a TIFF series from tifffile's ``axes`` (``YX``, ``YXS``,
    ``SYX``, ``CYX``...): length-1 axes are dropped; a stack (Z, T, Q... longer than 1) is
    refused rather than read as colour channels."""
    kept = [(a, n) for a, n in zip(axes, shape, strict=True) if n > 1 or a in "YX"]
    extra = [f"{a}={n}" for a, n in kept if a not in "YX" + TIFF_CHANNEL_AXES]
    if extra or [a for a, _ in kept].count("Y") != 1 or [a for a, _ in kept].count("X") != 1:
        raise DatasetError(
            f"{path}: a TIFF of shape {shape} (axes {axes}) is a stack, not one image "
            f"({', '.join(extra) or 'no single Y and X axis'}); save one image per file (1 or 3 "
            "channels), e.g. each slice or a projection"
        )
    channels = [n for a, n in kept if a in TIFF_CHANNEL_AXES]
    h = next(n for a, n in kept if a == "Y")
    w = next(n for a, n in kept if a == "X")
    if len(channels) > 1:
        raise DatasetError(f"{path}: a TIFF of shape {shape} (axes {axes}) has two channel axes")
    return (h, w, channels[0]) if channels else (h, w)


def _tiff_to_hwc(arr: np.ndarray, axes: str, path: Path) -> np.ndarray:
    tiff_hwc_shape(tuple(arr.shape), axes, path)  # refuses stacks with a message naming the file
    keep = [i for i, (a, n) in enumerate(zip(axes, arr.shape, strict=True)) if n > 1 or a in "YX"]
    arr = arr.reshape([arr.shape[i] for i in keep])
    kept_axes = [axes[i] for i in keep]
    order = [kept_axes.index("Y"), kept_axes.index("X")]
    order += [i for i, a in enumerate(kept_axes) if a in TIFF_CHANNEL_AXES]
    return np.transpose(arr, order)


def _png_colour_type(path: Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG's IHDR chunk (``None`` for other files)."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2-8) to an (H, W[, C]) array, as PIL's ``exif_transpose``."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, -1)[:, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _decode(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return _tiff_to_hwc(np.asarray(series.asarray()), str(series.axes), path)
    png = _png_colour_type(path) if suffix == ".png" else None
    if png is not None and png[0] == 16 and png[1] in (2, 4, 6):
        # 16-bit colour or grey + alpha: PIL would keep only the high byte; OpenCV keeps 16 bits
        # (lazy: only these files need OpenCV, a dependency of albumentations, not declared here)
        import cv2

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise DatasetError(f"{path}: cannot decode image (16-bit PNG)")
        if png[1] == 4 or arr.ndim == 2:
            arr = arr if arr.ndim == 2 else arr[..., 0]  # grey (+ alpha, read as BGRA)
        else:
            arr = arr[..., [2, 1, 0]]  # BGR(A) -> RGB, alpha dropped
        with Image.open(path) as img:  # OpenCV ignores EXIF: apply it as for every other file
            return _orient(arr, exif_orientation(img))
    with Image.open(path) as img:
        img.load()  # forces full decode: truncated files fail here
        if exif_orientation(img) != 1:
            img = ImageOps.exif_transpose(img)
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode == "PA":
            img = img.convert("RGBA")
        elif img.mode == "CMYK":
            img = img.convert("RGB")
        elif img.mode == "1":
            img = img.convert("L")
        return np.asarray(img)


def _shape_hwc(shape: tuple[int, ...], path: str | Path = "<array>") -> tuple[int, int, int]:
    """(H, W, channels as returned by :func:`gray_or_rgb`) of an array shape."""
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) == 3 and shape[-1] in (1, 2):
        return shape[0], shape[1], 1
    if len(shape) == 3 and shape[-1] in (3, 4):
        return shape[0], shape[1], 3
    raise DatasetError(
        f"{path}: unsupported image shape {shape}; expected 1 or 3 channels (4 with alpha)"
    )


def gray_or_rgb(arr: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` of a decoded array, pixel type kept (``bool`` -> ``uint8``)."""
    _shape_hwc(arr.shape, path)  # refuses unsupported shapes with a message naming the file
    if arr.ndim == 3 and arr.shape[-1] in (1, 2):
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "uif" or arr.dtype.itemsize > 8:
        raise DatasetError(
            f"{path}: unsupported pixel type {arr.dtype}; use integer or float pixels"
        )
    return np.ascontiguousarray(arr)


def image_header(
    path: str | Path, max_pixels: int | None = None, decode: bool = True
) -> tuple[int, int, int]:
    """(width, height, channels) of an image file as :func:`read_raw` returns it.

    The header is read first and an image over ``max_pixels`` is refused without being decoded.
    ``decode=False`` stops there (size and channels from the header only); ``decode=True`` then
    decodes the whole image once (and releases it), which also catches truncated or corrupt
    pixel data and unsupported pixel types.
    """
    w, h, c = read_header(path)
    check_image_pixels(path, w, h, max_pixels)
    if not decode:
        return w, h, c
    arr = read_raw(path)
    h, w = arr.shape[:2]
    return w, h, 1 if arr.ndim == 2 else arr.shape[2]


@dataclass
class CocoDataset:
    """COCO annotations of one directory; images are read on demand, never all held."""

    root: Path
    images: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    splits: dict[str, list[int]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def from_dir(cls, root: str | Path) -> CocoDataset:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(
                f"{root}: dataset directory not found (set dataset.root to a COCO directory)"
            )
        ann_path = root / ANNOTATIONS_FILE
        data = load_json(ann_path)
        check_structure(data, ann_path)
        ids = {img["id"] for img in data["images"]}
        splits: dict[str, list[int]] = {}
        for name in SPLIT_NAMES:
            split_path = root / f"{name}.json"
            if not split_path.exists():
                continue
            split_data = load_json(split_path)
            if "images" not in split_data or not isinstance(split_data["images"], list):
                raise DatasetError(f"{split_path}: missing 'images' list")
            split_ids = []
            for i, img in enumerate(split_data["images"]):
                if not isinstance(img, dict) or "id" not in img:
                    raise DatasetError(f"{split_path}: images[{i}] has no 'id'")
                if img["id"] not in ids:
                    raise DatasetError(f"{split_path}: image id {img['id']} is not in {ann_path}")
                split_ids.append(img["id"])
            splits[name] = split_ids
        return cls(
            root=root,
            images=data["images"],
            annotations=data["annotations"],
            categories=data["categories"],
            splits=splits,
            info=data.get("info", {}) if isinstance(data.get("info", {}), dict) else {},
        )

    def to_coco_dict(self, image_ids: list[int] | None = None) -> dict[str, Any]:
        if image_ids is None:
            images, annotations = self.images, self.annotations
        else:
            keep = set(image_ids)
            images = [img for img in self.images if img["id"] in keep]
            annotations = [a for a in self.annotations if a["image_id"] in keep]
        return {
            "info": self.info,
            "images": images,
            "annotations": annotations,
            "categories": self.categories,
        }

    def to_dir(self, out_dir: str | Path, link_images: bool = True) -> Path:
        """Write a self-contained COCO directory that holds exactly this dataset: images
        (hard-linked where possible, else copied), ``annotations.json`` and one ``<split>.json``
        per split.

        An image already at its target is kept only when it is the same file (same inode) or has
        the same content (MD5, cached by :mod:`.hashing`): an equal size is not enough. Files of
        an earlier dataset that this one does not name are removed. Every file is placed by a
        rename of a uniquely named temporary file, so concurrent or interrupted runs never leave
        a half-written file."""
        out_dir = Path(out_dir)
        if out_dir.resolve() == self.root.resolve():
            raise DatasetError(
                f"{out_dir}: the output folder is the dataset folder itself; writing there would "
                "replace the dataset's own annotations.json. Point dataset.root at the original "
                "dataset, not at the pipeline's model input folder"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        wanted: set[Path] = {out_dir.resolve() / ANNOTATIONS_FILE}
        wanted |= {out_dir.resolve() / f"{name}.json" for name in SPLIT_NAMES}
        sources: set[Path] = set()
        relinked = 0
        with HashCache() as cache:
            for img in self.images:
                src = self.image_path(img)
                sources.add(src)
                dst = safe_join(out_dir, img["file_name"])
                wanted.add(dst)
                if _same_content(src, dst, cache):
                    continue
                place_file(src, dst, link=link_images)
                relinked += 1
        # the dataset inside the output folder is the user's: never touched; an output folder
        # inside the dataset is ours, except the dataset's own image files
        root, out = self.root.resolve(), out_dir.resolve()
        removed = _prune(
            out_dir, wanted, protect=None if root in out.parents else root, protect_files=sources
        )
        if relinked or removed:
            logger.info(
                "%s: %d image(s) placed, %d file(s) of an earlier dataset removed",
                out_dir,
                relinked,
                removed,
            )
        return self.write_annotations(out_dir)

    def write_annotations(self, out_dir: str | Path) -> Path:
        """Write ``annotations.json`` and one ``<split>.json`` per split (removing those of
        splits it lacks), each atomically; ``annotations.json`` last, so it marks a complete
        directory."""
        out_dir = Path(out_dir)
        for name in SPLIT_NAMES:
            if name not in self.splits:
                (out_dir / f"{name}.json").unlink(missing_ok=True)
        for name, ids in self.splits.items():
            write_json(out_dir / f"{name}.json", self.to_coco_dict(ids), indent=None)
        write_json(out_dir / ANNOTATIONS_FILE, self.to_coco_dict(), indent=None)
        return out_dir

    # ---------------------------------------------------------------- lookups
    @cached_property
    def images_by_id(self) -> dict[int, dict[str, Any]]:
        return {img["id"]: img for img in self.images}

    @cached_property
    def annotations_by_image(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in self.images}
        for ann in self.annotations:
            out.setdefault(ann["image_id"], []).append(ann)
        return out

    @cached_property
    def category_ids(self) -> list[int]:
        return sorted({c["id"] for c in self.categories})

    @cached_property
    def label_of_category(self) -> dict[int, int]:
        """Original category id -> contiguous label (1..K; 0 is background)."""
        return {cid: i + 1 for i, cid in enumerate(self.category_ids)}

    @cached_property
    def category_of_label(self) -> dict[int, int]:
        return {label: cid for cid, label in self.label_of_category.items()}

    @property
    def num_classes(self) -> int:
        """Number of object classes (without background)."""
        return len(self.category_ids)

    def category_names(self) -> dict[int, str]:
        return {c["id"]: str(c.get("name", c["id"])) for c in self.categories}

    def image_path(self, image: dict[str, Any] | int) -> Path:
        if not isinstance(image, dict):
            image = self.images_by_id[image]
        try:
            return safe_join(self.root, image["file_name"])
        except DatasetError as exc:
            raise DatasetError(f"image id {image['id']}: {exc}") from None

    def _source_raw(self, image: dict[str, Any]) -> np.ndarray:
        """The whole file's pixels: a tile's source is decoded once and cached (read-only)."""
        path = self.image_path(image)  # its errors name the image id already
        try:
            if "tile" not in image:
                return read_raw(path)
            stat = path.stat()
            return _cached_source(str(path), stat.st_mtime_ns, stat.st_size)
        except OSError as exc:
            raise DatasetError(f"image id {image['id']}: {path}: {exc.strerror}") from None
        except DatasetError as exc:
            raise DatasetError(f"image id {image['id']}: {exc}") from None

    def read_raw(self, image: dict[str, Any] | int) -> np.ndarray:
        """The image's pixels in the file's own type (see :func:`read_raw`); a tile's are its
        window of the source (see :mod:`.tiling`)."""
        if not isinstance(image, dict):
            image = self.images_by_id[image]
        return _window(self._source_raw(image), image)

    def read_image(self, image: dict[str, Any] | int, intensity: Any = None) -> np.ndarray:
        """The image as model input under ``intensity`` (see :func:`read_image`). A tile is cut
        after the scaling, so per-image scaling uses its whole source image."""
        if not isinstance(image, dict):
            image = self.images_by_id[image]
        raw = self._source_raw(image)
        try:
            return _window(normalize(raw, intensity, self.image_path(image)), image)
        except DatasetError as exc:
            raise DatasetError(f"image id {image['id']}: {exc}") from None

    # ---------------------------------------------------------------- subsets
    def subset(self, image_ids: list[int] | set[int]) -> CocoDataset:
        keep = set(image_ids)
        return CocoDataset(
            root=self.root,
            images=[img for img in self.images if img["id"] in keep],
            annotations=[a for a in self.annotations if a["image_id"] in keep],
            categories=self.categories,
            splits={k: [i for i in v if i in keep] for k, v in self.splits.items()},
            info=self.info,
        )

    def split(self, name: str) -> CocoDataset:
        if name not in self.splits:
            raise DatasetError(f"{self.root}: no '{name}' split (have {sorted(self.splits)})")
        sub = self.subset(self.splits[name])
        sub.splits = {name: list(self.splits[name])}
        return sub

    def fingerprint(self) -> str:
        """Hash of annotations, split membership and every image file's content (MD5, cached by
        file identity in :mod:`.hashing`, so an unchanged dataset is not re-read)."""
        h = hashlib.sha256()
        h.update(json.dumps(self.to_coco_dict(), sort_keys=True, default=str).encode())
        h.update(json.dumps(self.splits, sort_keys=True).encode())
        with HashCache() as cache:
            for img in sorted(self.images, key=lambda i: str(i["id"])):
                try:
                    h.update(f"{img['file_name']}:{cache.md5(self.image_path(img))}".encode())
                except (OSError, DatasetError):
                    h.update(f"{img['file_name']}:missing".encode())
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.images)


@functools.lru_cache(maxsize=1)
def _cached_source(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """One decoded tile source per process (keyed by the file's identity, so an edited file is
    read again): the tiles of an image are usually read one after another."""
    arr = read_raw(path)
    arr.flags.writeable = False
    return arr


def _window(arr: np.ndarray, image: dict[str, Any]) -> np.ndarray:
    """``image``'s window of ``arr`` (a copy) when it is a tile, else ``arr``."""
    tile = image.get("tile")
    if not tile:
        return arr
    x, y, w, h = int(tile["x"]), int(tile["y"]), int(image["width"]), int(image["height"])
    if y + h > arr.shape[0] or x + w > arr.shape[1]:
        raise DatasetError(
            f"image id {image['id']}: tile {w}x{h} at ({x}, {y}) lies outside its source "
            f"{image['file_name']} ({arr.shape[1]}x{arr.shape[0]}); re-run the data pipeline"
        )
    return np.array(arr[y : y + h, x : x + w], copy=True)


def _same_content(src: Path, dst: Path, cache: Any) -> bool:
    """``dst`` already holds ``src``'s bytes: the same file, or an equal MD5."""
    try:
        if not dst.is_file() or dst.is_symlink():
            return False
        if os.path.samefile(src, dst):
            return True
        if src.stat().st_size != dst.stat().st_size:
            return False
        return cache.md5(src) == cache.md5(dst)
    except OSError:
        return False


def _prune(out_dir: Path, keep: set[Path], protect: Path | None, protect_files: set[Path]) -> int:
    """Remove files under ``out_dir`` not in ``keep`` (resolved paths), then empty folders.
    Nothing under ``protect`` (the source dataset, should it lie inside ``out_dir``, also when
    reached through a symlink), none of ``protect_files`` and no temporary file of a running
    writer (``.NAME.*.tmp``, see :mod:`.io`) is touched."""
    removed = 0
    for path in sorted(out_dir.rglob("*"), reverse=True):
        try:
            resolved = (
                path.resolve() if not path.is_symlink() else path.parent.resolve() / path.name
            )
            target = path.resolve()  # where a symlink leads
        except OSError:
            continue
        if protect is not None and any(
            p == protect or protect in p.parents for p in (resolved, target)
        ):
            continue
        if target in protect_files or resolved in protect_files:
            continue
        if path.is_dir() and not path.is_symlink():
            try:
                path.rmdir()  # only when empty
            except OSError:
                pass
            continue
        if resolved in keep or (path.name.startswith(".") and path.name.endswith(".tmp")):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed
