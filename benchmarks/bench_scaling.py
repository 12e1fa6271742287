"""6. Scaling: how the time per epoch grows with the number of images and with the image size, so a
study's cost can be estimated; and the cost of sliced inference versus whole-image inference on a
large image.

- Image count: one training epoch of the project's trainer (sample model config, batch 4, no
  validation, no checkpoints) on 8 / 16 / 32 generated sample images of 256 px; straight-line fit
  ``seconds = fixed + per_image x images``.
- Image size: one epoch on 16 images of 128 / 256 / 384 px (object density kept), model input =
  image size; power-law fit ``seconds per image ~ side^k``; plus the inference time per image.
- Sliced inference: one large generated image (2048 px, small objects), the sample's model at its
  training size: whole image as the model resizes it (down to the training size), whole image at
  native resolution, and the project's sliced inference (``detection.sliced``: tiles of the
  training size, 20 % overlap, plus a whole-image pass, merged by NMS). The weights are untrained:
  this measures cost only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common as C
import numpy as np

TITLE = "Scaling: image count, image size, sliced inference"
COUNTS = {False: [8, 16, 32], True: [1, 2, 3]}
SIZES = {False: [128, 256, 384], True: [64, 96, 128]}
SIZE_IMAGES = {False: 16, True: 1}
LARGE = {False: 2048, True: 256}
BATCH = 4


def _objects(side: int) -> dict[str, int]:
    scale = (side / 256) ** 2  # the sample's density: 10-40 objects per 256 px image
    return {"min_objects": max(1, round(10 * scale)), "max_objects": max(2, round(40 * scale))}


def _epoch_seconds(coco, ids, model_cfg, train_cfg) -> float:
    from smallobj_pipeline.detection.data.dataset import DetectionDataset
    from smallobj_pipeline.detection.engine.trainer import Trainer, seed_everything
    from smallobj_pipeline.detection.modeling.factory import build_model

    seed_everything(train_cfg.seed, train_cfg.deterministic)
    model = build_model(model_cfg, num_classes=coco.num_classes)
    dataset = DetectionDataset(coco, list(ids), int(model_cfg.get("in_channels", 1)), None)
    result = Trainer(model, dataset, None, train_cfg, checkpoint_dir=None, name="scaling").fit()
    return float(result.history[0]["train_seconds"])


def _train_cfg():
    from smallobj_pipeline.detection.engine.trainer import TrainConfig

    training = C.experiment_defaults()["training"]
    training.update(
        epochs=1,
        batch_size=BATCH,
        val_loss=False,
        early_stopping_patience=None,
        resume=False,
        log_every=10**6,
    )
    return TrainConfig.from_dict(training)


def _warm_up(coco, model_cfg, train_cfg) -> None:
    ids = [img["id"] for img in coco.images][:2]
    _epoch_seconds(coco, ids, model_cfg, train_cfg.model_copy(update={"batch_size": 2}))


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    import torch

    from smallobj_pipeline.detection.data.dataset import DetectionDataset, image_to_tensor
    from smallobj_pipeline.detection.data.tiling import tile_starts
    from smallobj_pipeline.detection.evaluation.inference import predict_dataset
    from smallobj_pipeline.detection.evaluation.sliced import SliceConfig, sliced_predict
    from smallobj_pipeline.detection.modeling.factory import build_model

    dev = C.device()
    train_cfg = _train_cfg()
    base_kwargs = C.sample_kwargs(quick)

    # ---- image count (at the sample's size)
    side = 256 if not quick else 96
    counts = COUNTS[quick]
    coco_n = C.generate(
        workdir / f"count_{side}", **{**base_kwargs, "num_images": max(counts), "image_size": side}
    )
    cfg_n = C.resolved_config("scaling", coco_n, {"model": {"min_size": side, "max_size": side}})[
        "model"
    ]
    _warm_up(coco_n, cfg_n, train_cfg)
    ids_all = [img["id"] for img in coco_n.images]
    by_count = [
        {"images": n, "seconds": _epoch_seconds(coco_n, ids_all[:n], cfg_n, train_cfg)}
        for n in counts
    ]
    fixed, per_image = C.linear_fit(
        [p["images"] for p in by_count], [p["seconds"] for p in by_count]
    )

    # ---- image size
    by_size = []
    for s in SIZES[quick]:
        coco_s = C.generate(
            workdir / f"size_{s}",
            **{**base_kwargs, **_objects(s), "num_images": SIZE_IMAGES[quick], "image_size": s},
        )
        cfg_s = C.resolved_config("scaling", coco_s, {"model": {"min_size": s, "max_size": s}})[
            "model"
        ]
        ids = [img["id"] for img in coco_s.images]
        seconds = _epoch_seconds(coco_s, ids, cfg_s, train_cfg)
        model = build_model(cfg_s, num_classes=coco_s.num_classes).to(dev)
        _, timing = predict_dataset(
            model, DetectionDataset(coco_s, ids[:4], 1, None), dev, batch_size=1, time_images=True
        )
        by_size.append(
            {
                "size": s,
                "images": len(ids),
                "seconds": seconds,
                "s_per_image": seconds / len(ids),
                "infer_ms_per_image": timing.get("ms_per_image"),
            }
        )
    _, k = C.linear_fit(
        np.log([p["size"] for p in by_size]), np.log([p["s_per_image"] for p in by_size])
    )

    # ---- sliced vs whole-image inference on a large image
    big = LARGE[quick]
    coco_big = C.generate(
        workdir / f"large_{big}",
        **{
            **base_kwargs,
            "num_images": 1,
            "image_size": big,
            "min_objects": 300 if not quick else 20,
            "max_objects": 400 if not quick else 30,
        },
    )
    sample = C.sample_dataset(workdir, quick)
    model_cfg = C.resolved_config("scaling", sample)[
        "model"
    ]  # the sample's model: trained at its own size
    train_side = int(sample.images[0]["width"])
    torch.manual_seed(0)
    model = build_model(model_cfg, num_classes=sample.num_classes).to(dev).eval()
    image = image_to_tensor(coco_big.read_image(coco_big.images[0]["id"])).to(dev)
    slice_cfg = SliceConfig(
        enabled=True, tile_size=train_side, overlap=0.2, include_full_image=True
    )
    n_tiles = len(tile_starts(big, slice_cfg.tile_size, slice_cfg.overlap)) ** 2
    t: dict[str, float] = {}
    with torch.inference_mode():
        model([image[:, :train_side, :train_side]])  # warm-up
        with C.timed(t, "whole_resized", dev):
            out_resized = model([image])[0]
        transform = model.transform
        old = (transform.min_size, transform.max_size)
        transform.min_size, transform.max_size = (big,), big
        with C.timed(t, "whole_native", dev):
            out_native = model([image])[0]
        transform.min_size, transform.max_size = old
        with C.timed(t, "sliced", dev):
            out_sliced = sliced_predict(model, image, slice_cfg)
    scale_resized = min(float(model_cfg["min_size"]) / big, float(model_cfg["max_size"]) / big)

    rows_n = [[p["images"], p["seconds"], p["seconds"] / p["images"]] for p in by_count]
    rows_s = [
        [f"{p['size']} px", p["images"], p["seconds"], p["s_per_image"], p["infer_ms_per_image"]]
        for p in by_size
    ]
    md = [
        f"Training epochs of the project's trainer (batch {BATCH}, ResNet18-FPN from the sample's "
        "config, no "
        f"validation), on generated sample-like images; device {dev}.",
        "",
        f"By image count ({side} px images):",
        "",
        C.table(["images", "s per epoch", "s per image"], rows_n),
        "",
        f"Fit: **seconds per epoch = {fixed:.2f} + {per_image:.3f} x images**.",
        "",
        f"By image size ({SIZE_IMAGES[quick]} images, same object density, model input = image "
        "size):",
        "",
        C.table(
            ["image size", "images", "s per epoch", "s per image", "inference ms per image"], rows_s
        ),
        "",
        f"Fit: **training seconds per image ~ side^{k:.2f}** (2 would be proportional to the pixel "
        "count; "
        "less means fixed per-image costs (proposals, box head) still weigh at these sizes). Above "
        "about 512 px the "
        "convolutions dominate and the cost grows with the pixel count: use the memory section's "
        "seconds per "
        "step (batch 2, 512 px and up) for large images.",
        "",
        f"Estimate for a study: seconds ~ experiments x epochs x (images x {per_image:.3f} x (side "
        f"/ {side})^{k:.2f} "
        f"+ {fixed:.1f}) for training up to about 384 px, plus validation (inference column) each "
        "epoch; on this "
        "machine.",
        "",
        f"Sliced versus whole-image inference on one {big} px image ({len(coco_big.annotations)} "
        "objects of "
        f"6-24 px), model trained at {train_side} px:",
        "",
        C.table(
            [
                "inference",
                "seconds",
                "x whole (resized)",
                "input seen by the network",
                "boxes kept",
            ],
            [
                [
                    "whole image, resized by the model (torchvision's transform)",
                    t["whole_resized"],
                    1.0,
                    f"{round(big * scale_resized)} px (objects shrink x{scale_resized:.2f})",
                    len(out_resized["boxes"]),
                ],
                [
                    "whole image at native resolution",
                    t["whole_native"],
                    t["whole_native"] / t["whole_resized"],
                    f"{big} px",
                    len(out_native["boxes"]),
                ],
                [
                    f"sliced: {n_tiles} tiles of {train_side} px, 20% overlap, + whole pass, NMS",
                    t["sliced"],
                    t["sliced"] / t["whole_resized"],
                    f"{n_tiles} x {train_side} px",
                    len(out_sliced["boxes"]),
                ],
            ],
        ),
        "",
        f"Sliced inference costs {t['sliced'] / t['whole_native']:.1f}x the native whole-image "
        "pass and "
        f"{t['sliced'] / t['whole_resized']:.0f}x the resized one; the resized pass is cheap "
        "because it shrinks "
        "small objects below what the detector can see. Untrained weights: the box counts reflect "
        "the cap of "
        f"{model_cfg.get('box_detections_per_img')} detections per pass, not accuracy.",
    ]
    summary = [
        C.target_row(
            "time per epoch vs images",
            f"{fixed:.1f} s + {per_image:.2f} s/image ({side} px)",
            "(report)",
            "report",
        ),
        C.target_row("time per image vs image side", f"~ side^{k:.2f}", "(report)", "report"),
        C.target_row(
            f"sliced / whole-image inference ({big} px)",
            f"{t['sliced'] / t['whole_native']:.1f}x native, "
            f"{t['sliced'] / t['whole_resized']:.0f}x resized",
            "(report)",
            "report",
        ),
    ]
    return {
        "title": TITLE,
        "summary": summary,
        "markdown": "\n".join(md),
        "data": {
            "by_count": by_count,
            "fit_count": {"fixed_s": fixed, "per_image_s": per_image},
            "by_size": by_size,
            "size_exponent": k,
            "sliced": {**t, "tiles": n_tiles, "image_px": big, "train_px": train_side},
        },
    }
