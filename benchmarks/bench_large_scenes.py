"""8. Large scenes: whole-image training versus slice-aided training (the data pipeline's
``tiling``), at the same wall time, both scored on the same whole test images.

A generated large-scene set (by default 12 images of 2,048 px holding 150-300 objects of 6-20 px
each) is split on whole images (8 train / 2 val / 2 test). Both arms use the project's
``experiment_defaults`` with ``training.time_budget`` set to the same budget:

- **whole images**: ``tiling: off``; the input size is the small-object default (upscaled until
  the median object reaches 16 px, capped at a 2,048 px long side: the largest input the
  defaults allow), one image per forward pass;
- **tiles**: ``tiling: on`` with the automatic tile size and overlap; validation and test images
  are predicted tile by tile and merged.

Each arm runs in its own process (``python benchmarks/bench_large_scenes.py --arm ...``), so its
peak resident memory is its own (see ``common.run_child``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import common as C

TITLE = "Large scenes: slice-aided training vs whole images at equal wall time"

SETTINGS = {
    ("cpu", False): {"images": 12, "image_size": 2048, "objects": (150, 300), "budget": 360},
    ("cpu", True): {"images": 5, "image_size": 384, "objects": (20, 40), "budget": 8},
    ("cuda", False): {"images": 12, "image_size": 2048, "objects": (150, 300), "budget": 600},
    ("cuda", True): {"images": 5, "image_size": 384, "objects": (20, 40), "budget": 8},
}
SCENE = {"min_side": 6, "max_side": 20, "classes": ["ring", "cross", "disc"], "seed": 13}
ARMS = {"whole images": {"mode": "off"}, "tiles": {"mode": "on"}}
BATCH = {"whole images": 1, "tiles": 4}  # the defaults' batch of 4 large images would not fit


def dataset(workdir: Path, s: dict[str, Any]):
    lo, hi = s["objects"]
    coco = C.generate(
        workdir / "scenes", num_images=s["images"], image_size=s["image_size"],
        min_objects=lo, max_objects=hi, **SCENE,
    )  # fmt: skip
    ids = [img["id"] for img in coco.images]
    n_test = max(1, len(ids) // 6)
    return C.with_splits(coco, ids[: -2 * n_test], ids[-2 * n_test : -n_test], ids[-n_test:])


def train_arm(arm: str, data_dir: Path, budget: float, n_test: int) -> dict[str, Any]:
    """One arm, in this process: tile (or not), resolve, train for ``budget`` s, evaluate."""
    from smallobj_pipeline.detection.data.coco import CocoDataset
    from smallobj_pipeline.detection.data.stats import compute_stats
    from smallobj_pipeline.detection.data.tiling import tile_dataset
    from smallobj_pipeline.detection.engine.experiment import (
        evaluate_experiment,
        resolve_experiment,
        train_experiment,
    )

    coco = CocoDataset.from_dir(data_dir)
    ids = [img["id"] for img in coco.images]
    coco = C.with_splits(coco, ids[: -2 * n_test], ids[-2 * n_test : -n_test], ids[-n_test:])
    model_input, plan = tile_dataset(coco, ARMS[arm])
    overrides = {"training": {"time_budget": budget, "batch_size": BATCH[arm], "val_loss": False}}
    cfg = resolve_experiment(
        arm.replace(" ", "_"), C.experiment_defaults(), overrides, compute_stats(model_input)
    )
    start = time.perf_counter()
    model_file, _history = train_experiment(model_input, cfg, None)
    train_s = time.perf_counter() - start
    metrics, _ = evaluate_experiment(model_file, model_input, cfg)
    return {
        "arm": arm,
        "train_s": train_s,
        "epochs": model_file["epochs_run"],
        "map_50": metrics["map_50"],
        "map": metrics["map"],
        "map_small": metrics["map_small"],
        "evaluated_on": metrics["evaluated_on"],
        "input_px": [cfg["model"]["min_size"], cfg["model"]["max_size"]],
        "train_images": len(model_input.splits["train"]),
        "tile_size": plan["tile_size"] if plan["tiled"] else None,
        "overlap_px": plan["overlap_px"] if plan["tiled"] else None,
        "infer_ms_per_image": metrics["infer_ms_per_image"],
        "peak_rss_bytes": C.vm_hwm_bytes(),
    }


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    dev = C.device()
    s = SETTINGS[(dev.type, quick)]
    coco = dataset(workdir, s)
    n_test = len(coco.splits["test"])
    results = {}
    for arm in ARMS:
        out = workdir / f"{arm.replace(' ', '_')}.json"
        child = C.run_child(
            [sys.executable, __file__, "--arm", arm, "--data", str(coco.root),
             "--budget", str(s["budget"]), "--n-test", str(n_test), "--out", str(out)],
            workdir / f"{arm.replace(' ', '_')}.log",
        )  # fmt: skip
        if child["returncode"] != 0:
            raise RuntimeError(f"arm {arm!r} failed:\n{C.tail(child['log'])}")
        results[arm] = {**json.loads(out.read_text()), "wall_s": child["wall_s"]}
        results[arm]["peak_rss_bytes"] = max(
            results[arm].get("peak_rss_bytes") or 0, child["peak_rss_bytes"]
        )
    whole, tiles = results["whole images"], results["tiles"]
    gain = tiles["map_50"] - whole["map_50"]
    rows = [
        [
            arm, r["map_50"], r["map_small"], r["map"], r["train_s"], r["epochs"],
            r["train_images"], f"{r['input_px'][1]} px" + (
                f" (tiles of {r['tile_size']} px, overlap {r['overlap_px']})"
                if r["tile_size"] else ""),
            r["evaluated_on"], C.gib(r["peak_rss_bytes"]), r["infer_ms_per_image"],
        ]
        for arm, r in results.items()
    ]  # fmt: skip
    st = coco.images[0]
    md = [
        f"{s['images']} generated scenes of {st['width']} px ({s['objects'][0]}-{s['objects'][1]} "
        f"objects of {SCENE['min_side']}-{SCENE['max_side']} px each, {len(SCENE['classes'])} "
        f"classes), split on whole images {len(coco.splits['train'])}/{len(coco.splits['val'])}/"
        f"{n_test}; the project's defaults, `training.time_budget` {s['budget']} s for both arms, "
        f"device {dev}; both scored on the same whole test images.",
        "",
        C.table(
            [
                "arm",
                "test map_50",
                "test map_small",
                "test map",
                "train s",
                "epochs",
                "training images",
                "network input",
                "evaluated on",
                "peak memory",
                "ms per test image",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"- Slice-aided training minus whole images: map_50 **{gain:+.3f}**.",
    ]
    summary = [
        C.target_row(
            "map_50 gain of tiled over whole-image training, large scenes, same time",
            f"{gain:+.3f}",
            "> 0",
            gain > 0,
        )
    ]
    return {
        "title": TITLE,
        "summary": summary,
        "markdown": "\n".join(md),
        "data": {"settings": s, "scene": SCENE, "results": results},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="one arm of the large-scene benchmark")
    parser.add_argument("--arm", choices=list(ARMS), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--n-test", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    res = train_arm(args.arm, args.data, args.budget, args.n_test)
    args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
