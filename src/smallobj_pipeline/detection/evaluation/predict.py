"""Predicting a folder of images with a trained model file (an experiment's or the champion).

Every image goes through :func:`load_image_for_model`: its header is checked against
``predict.max_image_pixels`` before any decoding, then it is decoded and given the model's
channel count. An image that cannot be used (unreadable, corrupt, too large, empty) is a *bad
image*: with ``on_error="skip"`` it is logged at WARNING and listed under ``skipped`` in the
image index while the others are predicted; with ``on_error="fail"`` the run stops at it with a
:class:`DatasetError` naming the file and the reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ..checkpoint import load_checkpoint
from ..data.coco import (
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_SUFFIXES,
    check_image_pixels,
    read_header,
    read_image,
)
from ..data.dataset import image_to_tensor, to_channels
from ..engine.experiment import load_model, model_intensity
from ..engine.registry import champion_file, load_registry
from ..errors import ConfigError, DatasetError
from ..reporting.draw import item_masks, show_boxes
from ..reporting.report import figure_png
from .inference import select_device
from .metrics import predictions_to_coco
from .sliced import SliceConfig, parse_slicing, should_slice, sliced_predict

logger = logging.getLogger(__name__)

ON_ERROR = ("skip", "fail")


def resolve_model_path(spec: str, models_dir: str | Path, registry_path: str | Path) -> Path:
    """``champion`` -> the registry's champion (``<models_dir>/champions/<version>/model.pt``,
    or an older layout, see :func:`..engine.registry.champion_file`); an experiment name ->
    ``<models_dir>/<name>/model.pt``; otherwise a path to a model file."""
    models_dir, registry_path = Path(models_dir), Path(registry_path)
    if spec == "champion":
        if not registry_path.is_file():
            raise ConfigError(
                f"no champion model yet ({registry_path} does not exist): run `make retrain`, "
                "or set predict.model to an experiment name or a model.pt path"
            )
        path = champion_file(load_registry(registry_path), models_dir / "champion", registry_path)
    elif spec.endswith(".pt"):
        path = Path(spec)
    else:
        path = models_dir / spec / "model.pt"
    if not path.is_file():
        raise ConfigError(
            f"model file {path} not found (predict.model = {spec!r}); train that experiment first"
        )
    return path


def list_images(input_dir: str | Path) -> list[Path]:
    """The image files under ``input_dir`` (recursively), sorted. A dangling link with an image
    suffix is listed too, so that it is reported as a bad image rather than silently ignored."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DatasetError(f"{input_dir}: input folder not found (set predict.input_dir)")
    files = sorted(
        p
        for p in input_dir.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink())
    )
    if not files:
        raise DatasetError(f"{input_dir}: no PNG/JPEG/TIFF images found")
    return files


def load_image_for_model(
    path: str | Path, model_file: dict[str, Any], max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Read one image for prediction: ``(raw, model_input)``.

    ``raw`` is the image with its intensities scaled as the model's training scaled them (the
    model file's ``intensity``, see :mod:`.intensity`): ``uint8``, or ``float32`` in [0, 1];
    ``model_input`` is ``raw`` given the model's channel count. The size is
    checked from the header against ``max_pixels`` (``None``: no limit) before anything is
    decoded. Every problem is a :class:`DatasetError` whose message starts with ``path``.
    """
    path = Path(path)
    width, height, _ = read_header(path)
    if width < 1 or height < 1:
        raise DatasetError(f"{path}: empty image ({width} x {height} pixels)")
    try:
        check_image_pixels(path, width, height, max_pixels)
    except DatasetError as exc:  # the shared message names the validation setting
        message = str(exc).replace("validation.max_image_pixels", "predict.max_image_pixels")
        raise DatasetError(message) from None
    raw = read_image(path, intensity=model_intensity(model_file))
    in_channels = int(model_file["model_config"].get("in_channels", 1))
    return raw, to_channels(raw, in_channels)


def draw_predictions(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    title: str,
    masks: np.ndarray | None = None,
) -> Figure:
    """``image`` with the predicted ``boxes`` (``x1, y1, x2, y2``) in red, and their ``masks``
    (``N x H x W``, instance segmentation) filled, titled, about one figure pixel per image
    pixel. ``scores`` are the boxes' (kept for callers; not drawn)."""
    h, w = image.shape[:2]
    fig = Figure(figsize=(max(3.0, w / 100), max(3.0, h / 100)))
    show_boxes(fig.add_axes((0, 0, 1, 1)), image, boxes, title=title, colors="red", masks=masks)
    return fig


def _reason(exc: DatasetError, path: Path, rel: str) -> str:
    """The message of a bad image without its leading ``path: `` (and with ``rel`` for ``path``
    where a decoder's message quotes it)."""
    text = str(exc)
    prefix = f"{path}: "
    text = text[len(prefix) :] if text.startswith(prefix) else text
    return text.replace(str(path), rel)


def _mmss(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _check_settings(on_error: str, max_image_pixels: int | None) -> None:
    if on_error not in ON_ERROR:
        raise ConfigError(
            f"predict.on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}"
        )
    limit = max_image_pixels
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(
            f"predict.max_image_pixels must be a positive integer or null, got {limit!r}"
        )


@dataclass
class _Predictor:
    """A loaded model file and how it predicts one image (device, slicing, threshold)."""

    path: Path
    model_file: dict[str, Any]
    model: torch.nn.Module
    device: torch.device
    slicing: SliceConfig
    train_size: int
    score_threshold: float

    @classmethod
    def load(cls, path: Path, device: str, slicing: dict[str, Any], score_threshold: float):
        model_file = load_checkpoint(path)
        dev = select_device(device)
        train_size = int(model_file.get("train_image_size") or 512)
        slicing = dict(slicing)
        if slicing.get("tile_size") is None:
            slicing["tile_size"] = train_size
        model = load_model(model_file, dev)
        return cls(
            path, model_file, model, dev, parse_slicing(slicing), train_size, score_threshold
        )

    @property
    def category_of_label(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.model_file["category_of_label"].items()}

    def __call__(self, image: np.ndarray) -> tuple[dict[str, torch.Tensor], bool]:
        """The detections above the threshold (on the CPU), and whether the image was sliced."""
        h, w = image.shape[:2]
        tensor = image_to_tensor(image).to(self.device)
        sliced = should_slice(h, w, self.train_size, self.slicing)
        with torch.inference_mode():
            out = (
                sliced_predict(self.model, tensor, self.slicing)
                if sliced
                else self.model([tensor])[0]
            )
        rles = out.get("rles")
        out = {key: v.detach().cpu() for key, v in out.items() if isinstance(v, torch.Tensor)}
        keep = out["scores"] >= self.score_threshold
        kept: dict[str, Any] = {key: v[keep] for key, v in out.items()}
        if rles is not None:  # a sliced Mask R-CNN's masks, already COCO RLE
            kept["rles"] = [rle for rle, k in zip(rles, keep.tolist(), strict=True) if k]
        return kept, bool(sliced)


@dataclass
class _FolderRun:
    """What a prediction run over a folder collects: COCO results, the image index, drawings."""

    predictor: _Predictor
    total: int
    draw: bool
    results: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    drawings: dict[str, bytes] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    def skip(self, k: int, rel: str, reason: str) -> None:
        self.skipped.append({"file_name": rel, "reason": reason})
        logger.warning("predict %d/%d %s: skipped: %s", k, self.total, rel, reason)

    def add(self, k: int, rel: str, raw: np.ndarray, image: np.ndarray) -> None:
        out, sliced = self.predictor(image)
        h, w = image.shape[:2]
        image_id, detections = len(self.images) + 1, int(len(out["scores"]))
        categories = self.predictor.category_of_label
        results = predictions_to_coco([out], [image_id], categories)
        self.results.extend(results)
        self.images.append({"id": image_id, "file_name": rel, "width": w, "height": h,
                            "sliced": sliced, "detections": detections})  # fmt: skip
        note = " (sliced)" if sliced else ""
        if self.draw:
            title = f"{rel}: {detections} detections{note}"
            masks = item_masks(results, h, w)
            fig = draw_predictions(raw, out["boxes"].numpy(), out["scores"].numpy(), title, masks)
            self.drawings[rel] = figure_png(fig)
        eta = (time.perf_counter() - self.start) / k * (self.total - k)
        logger.info("predict %d/%d %s: %d detections, ETA %s%s",
                    k, self.total, rel, detections, _mmss(eta), note)  # fmt: skip

    def output(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.start
        logger.log(
            logging.WARNING if self.skipped else logging.INFO,
            "predict done: %d of %d images predicted in %.1f s, %d skipped%s",
            len(self.images), self.total, seconds, len(self.skipped),
            " (listed with their reasons under 'skipped' in images.json)" if self.skipped else "",
        )  # fmt: skip
        index = {"model": str(self.predictor.path), "images": self.images,
                 "skipped": self.skipped, "seconds": seconds}  # fmt: skip
        return {"predictions": self.results, "images": index, "drawings": self.drawings}


def predict_folder(
    model_spec: str,
    input_dir: str | Path,
    models_dir: str | Path = "data/06_models",
    registry_path: str | Path = "data/06_models/registry.json",
    score_threshold: float = 0.5,
    slicing: dict[str, Any] | None = None,
    draw: bool = True,
    device: str = "auto",
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    on_error: str = "skip",
) -> dict[str, Any]:
    """Predict every image under ``input_dir``. Returns ``{"predictions", "images", "drawings"}``:

    - ``predictions``: COCO results; their image ids index ``images["images"]``;
    - ``images``: the model path, one entry per predicted image (``id``, ``file_name`` relative
      to ``input_dir``, size, ``sliced``, ``detections``), ``skipped``: ``[{file_name, reason}]``
      of the bad images, and ``seconds``;
    - ``drawings``: PNG bytes with the boxes drawn, keyed by the image's relative path (with its
      suffix, ``/``-separated), empty unless ``draw``.

    A bad image is skipped (``on_error="skip"``) or stops the run with a :class:`DatasetError`
    (``on_error="fail"``); see the module docstring.
    """
    _check_settings(on_error, max_image_pixels)
    model_path = resolve_model_path(model_spec, models_dir, registry_path)
    predictor = _Predictor.load(model_path, device, slicing or {}, score_threshold)
    input_dir = Path(input_dir)
    files = list_images(input_dir)
    run = _FolderRun(predictor, total=len(files), draw=draw)
    for k, path in enumerate(files, start=1):
        rel = path.relative_to(input_dir).as_posix()
        try:
            raw, image = load_image_for_model(path, predictor.model_file, max_image_pixels)
        except DatasetError as exc:
            reason = _reason(exc, path, rel)
            if on_error == "fail":
                raise DatasetError(
                    f"{path}: {reason} (predict.on_error=fail stops at the first bad image; "
                    "predict.on_error=skip predicts the others and lists this one in images.json)"
                ) from None
            run.skip(k, rel, reason)
            continue
        run.add(k, rel, raw, image)
    return run.output()
