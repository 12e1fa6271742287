"""Thin node over :mod:`smallobj_pipeline.detection.evaluation.predict`."""

from __future__ import annotations

from typing import Any

from smallobj_pipeline.detection.data.coco import DEFAULT_MAX_IMAGE_PIXELS
from smallobj_pipeline.detection.evaluation.predict import predict_folder


def predict_images(predict: dict[str, Any]) -> dict[str, Any]:
    """``{"predictions", "images", "drawings"}`` for the ``predict_output`` dataset."""
    return predict_folder(
        model_spec=predict["model"],
        input_dir=predict["input_dir"],
        models_dir=predict.get("models_dir", "data/06_models"),
        registry_path=predict.get("registry", "data/06_models/registry.json"),
        score_threshold=float(predict.get("score_threshold", 0.5)),
        slicing=predict.get("slicing") or {},
        draw=bool(predict.get("draw", True)),
        device=predict.get("device", "auto"),
        max_image_pixels=predict.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS),
        on_error=predict.get("on_error", "skip"),
    )
