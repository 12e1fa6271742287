"""Running a detector over a dataset: predictions in COCO results format, with timing."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..data.dataset import DetectionDataset, collate
from .metrics import predictions_to_coco
from .sliced import SliceConfig, sliced_predict


def select_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. An explicit ``cuda`` without a GPU is an error."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device '{requested}' was requested but CUDA is not available on this machine"
        )
    return device


@torch.inference_mode()
def predict_dataset(
    model: torch.nn.Module,
    dataset: DetectionDataset,
    device: torch.device,
    batch_size: int = 2,
    num_workers: int = 0,
    amp: bool = False,
    time_images: bool = False,
    slicing: SliceConfig | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Predict every image of ``dataset``; with ``slicing`` (enabled), each image tile by tile
    (:func:`.sliced.sliced_predict`, the evaluation of an experiment trained on tiles).

    Returns ``(results, timing)``: ``results`` in COCO results format (original image and
    category ids, ``bbox`` as ``[x, y, w, h]``, a Mask R-CNN's ``segmentation`` as RLE), and
    ``timing`` with ``ms_per_image`` (median over batches after the first, i.e. warm) when
    ``time_images`` is set.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    results: list[dict[str, Any]] = []
    per_image_ms: list[float] = []
    use_amp = amp and device.type == "cuda"
    for images, targets in loader:
        if slicing is not None and slicing.enabled is True:
            outputs, elapsed = _timed_sliced(model, images, device, slicing)
        else:
            outputs, elapsed = timed_forward(model, images, device, use_amp)
        if time_images:
            per_image_ms.append(elapsed / len(images))
        outputs = [_to_cpu(out) for out in outputs]
        image_ids = [int(t["image_id"]) for t in targets]
        results.extend(predictions_to_coco(outputs, image_ids, dataset.coco.category_of_label))
    model.train(was_training)
    timing: dict[str, float] = {}
    if per_image_ms:
        warm = per_image_ms[1:] if len(per_image_ms) > 1 else per_image_ms
        timing["ms_per_image"] = float(statistics.median(warm))
    return results, timing


def _to_cpu(out: dict[str, Any]) -> dict[str, Any]:
    """A model output's tensors as float CPU tensors; a sliced output's mask RLEs kept."""
    cpu: dict[str, Any] = {
        k: v.detach().float().cpu() for k, v in out.items() if isinstance(v, torch.Tensor)
    }
    if "rles" in out:
        cpu["rles"] = out["rles"]
    return cpu


def _timed_sliced(
    model: torch.nn.Module, images: list[torch.Tensor], device: torch.device, cfg: SliceConfig
) -> tuple[list[dict[str, torch.Tensor]], float]:
    """Sliced predictions of a batch of whole images, and the milliseconds they took."""
    start = time.perf_counter()
    outputs = [sliced_predict(model, image.to(device), cfg) for image in images]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return outputs, (time.perf_counter() - start) * 1000.0


def timed_forward(
    model: torch.nn.Module, images: list[torch.Tensor], device: torch.device, amp: bool
) -> tuple[list[dict[str, torch.Tensor]], float]:
    """``model(images)`` on ``device`` (autocast when ``amp``) and its wall time in ms, the GPU
    synchronised before and after so that the time is the forward pass's."""
    images = [im.to(device, non_blocking=True) for im in images]
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device_type=device.type, enabled=amp):
        outputs = model(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return outputs, (time.perf_counter() - start) * 1000.0
