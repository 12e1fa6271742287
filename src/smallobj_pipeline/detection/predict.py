"""Predicting a folder of images with a trained model file (an experiment's or the champion)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .checkpoint import load_checkpoint
from .coco import IMAGE_SUFFIXES, read_image
from .data import image_to_tensor, to_channels
from .errors import ConfigError, DatasetError
from .experiment import load_model
from .inference import select_device
from .metrics import predictions_to_coco
from .report import figure_png
from .sliced import SliceConfig, should_slice, sliced_predict

logger = logging.getLogger(__name__)


def resolve_model_path(spec: str, models_dir: str | Path, registry_path: str | Path) -> Path:
    """``champion`` -> the registry's champion; an experiment name -> ``<models_dir>/<name>/model.pt``;
    otherwise a path to a model file."""
    models_dir, registry_path = Path(models_dir), Path(registry_path)
    if spec == "champion":
        if not registry_path.is_file():
            raise ConfigError(
                f"no champion model yet ({registry_path} does not exist): run `make retrain`, or set "
                "predict.model to an experiment name or a model.pt path"
            )
        registry = json.loads(registry_path.read_text())
        champion = registry.get("champion")
        if not champion:
            raise ConfigError(f"{registry_path} names no champion yet: run `make retrain` first")
        path = Path(champion["model_path"])
    elif spec.endswith(".pt"):
        path = Path(spec)
    else:
        path = models_dir / spec / "model.pt"
    if not path.is_file():
        raise ConfigError(f"model file {path} not found (predict.model = {spec!r}); train that experiment first")
    return path


def list_images(input_dir: str | Path) -> list[Path]:
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DatasetError(f"{input_dir}: input folder not found (set predict.input_dir)")
    files = sorted(p for p in input_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"{input_dir}: no PNG/JPEG/TIFF images found")
    return files


def draw_predictions(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, title: str) -> Figure:
    from matplotlib.patches import Rectangle

    h, w = image.shape[:2]
    fig = Figure(figsize=(max(3.0, w / 100), max(3.0, h / 100)))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    for (x1, y1, x2, y2), s in zip(boxes, scores, strict=True):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=0.8))
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return fig


def predict_folder(
    model_spec: str,
    input_dir: str | Path,
    models_dir: str | Path = "data/06_models",
    registry_path: str | Path = "data/06_models/registry.json",
    score_threshold: float = 0.5,
    slicing: dict[str, Any] | None = None,
    draw: bool = True,
    device: str = "auto",
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, bytes]]:
    """Returns ``(results, index, drawings)``: COCO results (image ids index ``index['images']``),
    the image index, and PNG bytes with boxes drawn, keyed by the image's relative path stem."""
    model_path = resolve_model_path(model_spec, models_dir, registry_path)
    model_file = load_checkpoint(model_path)
    dev = select_device(device)
    model = load_model(model_file, dev)
    in_channels = int(model_file["model_config"].get("in_channels", 1))
    slicing = dict(slicing or {})
    train_size = int(model_file.get("train_image_size") or 512)
    if slicing.get("tile_size") is None:
        slicing["tile_size"] = train_size
    slice_cfg = SliceConfig(**slicing)
    category_of_label = {int(k): int(v) for k, v in model_file["category_of_label"].items()}
    input_dir = Path(input_dir)
    files = list_images(input_dir)
    results: list[dict[str, Any]] = []
    index: dict[str, Any] = {"model": str(model_path), "images": []}
    drawings: dict[str, bytes] = {}
    start = time.perf_counter()
    for image_id, path in enumerate(files, start=1):
        raw = read_image(path)
        image = to_channels(raw, in_channels)
        tensor = image_to_tensor(image).to(dev)
        h, w = image.shape[:2]
        sliced = should_slice(h, w, train_size, slice_cfg)
        with torch.inference_mode():
            out = sliced_predict(model, tensor, slice_cfg) if sliced else model([tensor])[0]
        out = {k: v.detach().cpu() for k, v in out.items() if isinstance(v, torch.Tensor)}
        keep = out["scores"] >= score_threshold
        out = {k: v[keep] for k, v in out.items()}
        results.extend(predictions_to_coco([out], [image_id], category_of_label))
        rel = path.relative_to(input_dir)
        index["images"].append({"id": image_id, "file_name": str(rel), "width": w, "height": h,
                                "sliced": bool(sliced), "detections": int(len(out["scores"]))})
        if draw:
            fig = draw_predictions(raw, out["boxes"].numpy(), out["scores"].numpy(),
                                   f"{rel}: {len(out['scores'])} detections" + (" (sliced)" if sliced else ""))
            drawings[str(rel.with_suffix("")).replace("/", "__")] = figure_png(fig)
        logger.info("predict %d/%d %s: %d detections%s", image_id, len(files), rel, len(out["scores"]),
                    " (sliced)" if sliced else "")
    index["seconds"] = time.perf_counter() - start
    return results, index, drawings
