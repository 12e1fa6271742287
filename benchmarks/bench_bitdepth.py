"""7. Bit depth: a 12-bit instrument dataset trained as it is versus converted to 8-bit by the user.

The bundled sample's images are turned into 12-bit TIFFs the way a microscope camera records
them: a dark offset of 100, the signal spread over a part of the 0..4095 range (gain 6, so the
brightest pixel is about 1,630), and shot noise. The user's 8-bit conversion is what Fiji's
"8-bit" does with the dataset's display range: ``round((v - min) / (max - min) * 255)``.

Three arms, the same experiment (``r18_small_object``: the project's defaults), the same split,
seeds and epochs, all through the project's own API (statistics -> ``resolve_experiment`` ->
``train_experiment`` -> ``evaluate_experiment`` on the test split):

- ``12-bit, intensity auto``: the TIFFs, scaled by the dataset range of the training split;
- ``8-bit by the user``: the converted PNGs;
- ``12-bit, intensity fixed``: the TIFFs under the former ``v / 257`` (about 7 grey levels left).

Target (issue 12): the first within 0.05 test map_50 of the second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import common as C
import numpy as np

TITLE = "Bit depth: 12-bit TIFFs vs the user's 8-bit conversion"
TARGET = 0.05
OFFSET, GAIN = 100.0, 6.0


def _convert(src, out: Path, seed: int = 0) -> tuple[Path, Path]:
    """12-bit TIFF and 8-bit PNG copies of the dataset ``src`` (same ids, boxes and split)."""
    import tifffile
    from PIL import Image

    from smallobj_pipeline.detection.data.coco import read_raw

    d12, d8 = out / "d12", out / "d8"
    for d in (d12, d8):
        if d.exists():
            shutil.rmtree(d)
        (d / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    raw12 = {}
    for img in src.images:
        v8 = read_raw(src.image_path(img)).astype(np.float64)
        signal = OFFSET + GAIN * v8
        raw12[img["id"]] = np.clip(np.round(rng.poisson(signal)), 0, 4095).astype(np.uint16)
    lo = min(float(a.min()) for a in raw12.values())
    hi = max(float(a.max()) for a in raw12.values())
    data = json.loads((src.root / "annotations.json").read_text())
    images12, images8 = [], []
    for img in data["images"]:
        a = raw12[img["id"]]
        stem = Path(img["file_name"]).stem
        tifffile.imwrite(d12 / "images" / f"{stem}.tif", a)
        Image.fromarray(np.round((a - lo) / (hi - lo) * 255).astype(np.uint8)).save(
            d8 / "images" / f"{stem}.png"
        )
        images12.append({**img, "file_name": f"images/{stem}.tif"})
        images8.append({**img, "file_name": f"images/{stem}.png"})
    for d, images in ((d12, images12), (d8, images8)):
        (d / "annotations.json").write_text(json.dumps({**data, "images": images}))
    return d12, d8


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    from smallobj_pipeline.detection.data.coco import CocoDataset
    from smallobj_pipeline.detection.data.split import assign_splits
    from smallobj_pipeline.detection.data.stats import compute_stats
    from smallobj_pipeline.detection.engine.experiment import (
        evaluate_experiment,
        resolve_experiment,
        train_experiment,
    )

    sample = C.sample_dataset(workdir, quick)
    d12, d8 = _convert(sample, workdir / ("bitdepth_quick" if quick else "bitdepth"))
    split = C.data_params()["split"]
    intensity = C.data_params()["intensity"]
    overrides = C.base_experiments()["r18_small_object"]
    overrides = {k: v for k, v in overrides.items() if k != "description"}
    if quick:
        overrides["training"] = {"epochs": 1}
    arms = {
        "12-bit, intensity auto": (d12, {**intensity, "mode": "auto"}),
        "8-bit by the user": (d8, {**intensity, "mode": "auto"}),
        "12-bit, intensity fixed (v / 257)": (d12, {**intensity, "mode": "fixed"}),
    }
    results: dict[str, dict[str, Any]] = {}
    for arm, (root, settings) in arms.items():
        coco = assign_splits(CocoDataset.from_dir(root), split["ratios"], int(split["seed"]), True)
        coco.splits = {k: list(sample.splits[k]) for k in sample.splits}  # the very same split
        stats = compute_stats(coco, settings)
        cfg = resolve_experiment("bitdepth", C.experiment_defaults(), overrides, stats)
        cfg["training"]["resume"] = False
        model_file, history = train_experiment(coco, cfg, checkpoint_dir=None)
        metrics, _ = evaluate_experiment(model_file, coco, cfg)
        info = stats["intensity"]
        results[arm] = {
            "bit_depth": info["bit_depth"],
            "range_found": info["range_found"],
            "scaling": info["scaling"],
            "test_map_50": float(metrics["map_50"]),
            "test_map": float(metrics["map"]),
            "best_val_map_50": max((float(r.get("map_50", 0.0)) for r in history), default=0.0),
            "train_s": float(model_file["train_seconds"]),
            "test_objects": int(metrics["num_gt"]),
        }
    faithful, user = results["12-bit, intensity auto"], results["8-bit by the user"]
    gap = user["test_map_50"] - faithful["test_map_50"]
    met = gap <= TARGET
    rows = [
        [
            arm,
            r["bit_depth"],
            r["scaling"],
            r["test_map_50"],
            r["test_map"],
            r["best_val_map_50"],
            r["train_s"],
        ]
        for arm, r in results.items()
    ]
    md = [
        f"The bundled sample ({len(sample.images)} images, {faithful['test_objects']} test "
        "objects) recorded "
        f"as 12-bit TIFFs (offset {OFFSET:g}, gain {GAIN:g}, shot noise: values "
        f"{faithful['range_found'][0]:g}..{faithful['range_found'][1]:g} of 0..4095) and converted "
        "to 8-bit "
        "by the dataset's display range, as Fiji does. Experiment `r18_small_object` (the "
        "defaults), "
        f"{'1 epoch' if quick else 'its epochs'}, same split and seeds; test metrics of the best "
        "checkpoint.",
        "",
        C.table(
            ["arm", "pixels", "scaling", "test map_50", "test map", "best val map_50", "train s"],
            rows,
        ),
        "",
        f"- 8-bit conversion minus 12-bit auto: **{gap:+.3f}** test map_50 (target <= {TARGET:g}).",
    ]
    summary = [
        C.target_row(
            "12-bit dataset vs its 8-bit conversion, test map_50 gap",
            f"{gap:+.3f}",
            f"<= {TARGET:g}",
            met if not quick else "report",
        )
    ]
    return {
        "title": TITLE,
        "summary": summary,
        "markdown": "\n".join(md),
        "data": {"results": results},
    }
