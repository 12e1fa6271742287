"""2. Evaluation speed: the project's COCO evaluation
(``detection.evaluation.metrics.evaluate_detections``) versus pycocotools' ``COCOeval`` run as its
documentation shows, on the same 5,000 images of ground truth and predictions, and proof that the
numbers are equal.

The data are synthetic and seeded: 512 x 512 images holding 5-60 mostly small objects of two
categories; predictions are jittered copies of most objects (some with the wrong category) plus
false positives, at most 100 per image (so COCO's default maxDets of 100 applies to both and
pycocotools' ``summarize`` is comparable).

pycocotools is timed from building the ground-truth index to ``summarize()`` (loadRes, evaluate,
accumulate, summarize). The project is timed for its whole ``evaluate_detections`` call, which
also computes IoU per prediction / per ground truth, precision / recall, the PR curve and per-class
AP that pycocotools does not; the COCO part alone (faster-coco-eval) is timed too.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import common as C
import numpy as np

TITLE = "Evaluation speed"
NUM_IMAGES = {False: 5000, True: 200}
TARGET = 3.0
TOLERANCE = 1e-6
STAT_NAMES = [
    "AP@[.5:.95]",
    "AP@.5",
    "AP@.75",
    "AP small",
    "AP medium",
    "AP large",
    "AR@1",
    "AR@10",
    "AR@100",
    "AR small",
    "AR medium",
    "AR large",
]
PROJECT_KEYS = {
    0: "map",
    1: "map_50",
    2: "map_75",
    3: "map_small",
    4: "map_medium",
    5: "map_large",
    8: "ar_100",
}


def synthetic(
    num_images: int, seed: int = 0, size: int = 512
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    images, annotations, predictions = [], [], []
    for image_id in range(1, num_images + 1):
        images.append(
            {"id": image_id, "file_name": f"{image_id:05d}.png", "width": size, "height": size}
        )
        n = int(rng.integers(5, 61))
        sides = np.clip(np.exp(rng.normal(np.log(14.0), 0.7, size=(n, 2))), 3, 160)
        xy = rng.uniform(0, 1, size=(n, 2)) * (size - sides)
        cats = rng.integers(1, 3, size=n)
        for (x, y), (w, h), c in zip(xy, sides, cats, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(c),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        preds = []
        hit = rng.random(n) < 0.85
        for (x, y), (w, h), c, keep in zip(xy, sides, cats, hit, strict=True):
            if not keep:
                continue
            j = rng.normal(0, 0.12, size=4) * np.array([w, h, w, h])
            cat = int(c) if rng.random() < 0.95 else 3 - int(c)
            preds.append(
                (
                    float(rng.beta(5, 2)),
                    cat,
                    [
                        float(x + j[0]),
                        float(y + j[1]),
                        float(max(1.0, w + j[2])),
                        float(max(1.0, h + j[3])),
                    ],
                )
            )
        for _ in range(int(rng.integers(0, 30))):
            w, h = np.clip(np.exp(rng.normal(np.log(14.0), 0.7, size=2)), 3, 160)
            x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
            preds.append(
                (
                    float(rng.beta(2, 5)),
                    int(rng.integers(1, 3)),
                    [float(x), float(y), float(w), float(h)],
                )
            )
        preds.sort(key=lambda p: -p[0])
        for score, cat, bbox in preds[:100]:
            predictions.append(
                {"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score}
            )
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    return gt, predictions


def pycocotools_eval(gt: dict[str, Any], predictions: list[dict[str, Any]]) -> np.ndarray:
    """What a user writes with pycocotools (their README / the detection references)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(predictions)
    coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return np.asarray(coco_eval.stats, dtype=np.float64)


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    from smallobj_pipeline.detection.evaluation import metrics as M

    n = NUM_IMAGES[quick]
    t_gen = time.perf_counter()
    gt, predictions = synthetic(n)
    t_gen = time.perf_counter() - t_gen
    # pycocotools writes into the dicts it gets: each run gets its own copies, made before timing
    gt_copy, pred_copy = copy.deepcopy(gt), copy.deepcopy(predictions)

    # warm-up on a few images: imports and first-call costs are not part of either figure
    small_gt = {
        **gt,
        "images": gt["images"][:5],
        "annotations": [a for a in gt["annotations"] if a["image_id"] <= 5],
    }
    small_pred = [p for p in predictions if p["image_id"] <= 5]
    M.evaluate_detections(small_gt, small_pred)
    with C.quiet():
        pycocotools_eval(copy.deepcopy(small_gt), copy.deepcopy(small_pred))

    t: dict[str, float] = {}
    with C.timed(t, "project"):
        ours = M.evaluate_detections(gt, predictions, score_threshold=0.5, per_class=True)
    with C.quiet(), C.timed(t, "pycocotools"):
        ref = pycocotools_eval(gt_copy, pred_copy)
    # the project's COCO part alone, and its backend's 12 summary numbers
    with C.timed(t, "project_coco_part"):  # run_cocoeval silences the backend itself
        backend = M.run_cocoeval(M.normalise_gt(gt), predictions, [1, 10, 100], "faster_coco_eval")
    with C.quiet():
        backend.summarize()
    backend_stats = np.asarray(backend.stats[:12], dtype=np.float64)

    compared = []
    for i, name in enumerate(STAT_NAMES):
        ours_v = ours.get(PROJECT_KEYS[i]) if i in PROJECT_KEYS else None
        compared.append(
            {
                "stat": name,
                "pycocotools": float(ref[i]),
                "project": ours_v,
                "project_backend": float(backend_stats[i]),
                "diff": max(
                    abs(float(backend_stats[i]) - float(ref[i])),
                    abs(ours_v - float(ref[i])) if ours_v is not None else 0.0,
                ),
            }
        )
    max_diff = max(c["diff"] for c in compared)
    if max_diff > TOLERANCE:  # the section fails: a speed-up of different numbers means nothing
        raise AssertionError(
            f"project and pycocotools differ by {max_diff:g} (> {TOLERANCE:g}): {compared}"
        )
    ratio = t["pycocotools"] / t["project"]
    ratio_coco = t["pycocotools"] / t["project_coco_part"]
    met = ratio >= TARGET

    md = [
        f"{n:,} synthetic images (512 px, seeded): {len(gt['annotations']):,} ground-truth boxes "
        f"(median side 14 px), {len(predictions):,} predictions (at most 100 per image); generated "
        "in "
        f"{t_gen:.1f} s, not timed.",
        "",
        C.table(
            ["", "seconds", "pycocotools / this"],
            [
                [
                    "pycocotools COCOeval (index, loadRes, evaluate, accumulate, summarize)",
                    t["pycocotools"],
                    1.0,
                ],
                [
                    "project `evaluate_detections` (COCO numbers + IoU per prediction/gt, "
                    "precision/recall, PR curve, "
                    "per-class AP)",
                    t["project"],
                    ratio,
                ],
                [
                    "of which the COCO part alone (faster-coco-eval backend)",
                    t["project_coco_part"],
                    ratio_coco,
                ],
            ],
        ),
        "",
        "Equality: the 12 numbers of COCO's summary, pycocotools against the project's COCO "
        "backend and the "
        f"project's reported keys; largest absolute difference **{max_diff:.1e}** (tolerance "
        f"{TOLERANCE:g}).",
        "",
        C.table(
            ["COCO stat", "pycocotools", "project backend", "project key = value"],
            [
                [
                    c["stat"],
                    f"{c['pycocotools']:.6f}",
                    f"{c['project_backend']:.6f}",
                    f"`{PROJECT_KEYS[i]}` = {c['project']:.6f}"
                    if c["project"] is not None
                    else "-",
                ]
                for i, c in enumerate(compared)
            ],
        ),
        "",
    ]
    note = ""
    if not met:
        note = (
            f"missed by {TARGET - ratio:.2f}x; the COCO part alone is {ratio_coco:.1f}x faster: "
            "the rest is the "
            "project's extra metrics (IoU per prediction / per ground truth, greedy "
            "precision/recall matching, "
            "in Python per image)"
        )
    md.append(
        f"Speed-up **{ratio:.1f}x** (target at least {TARGET:g}x): "
        f"{'met' if met else 'missed; ' + note}."
    )
    summary = [
        C.target_row(
            f"evaluation speed-up vs pycocotools ({n:,} images)",
            f"{ratio:.1f}x",
            f">= {TARGET:g}x",
            met,
            note,
        ),
        C.target_row(
            "evaluation numbers equal to pycocotools",
            f"max diff {max_diff:.1e}",
            f"<= {TOLERANCE:g}",
            True,
        ),
    ]
    return {
        "title": TITLE,
        "summary": summary,
        "markdown": "\n".join(md),
        "data": {
            "images": n,
            "gt_boxes": len(gt["annotations"]),
            "predictions": len(predictions),
            "seconds": t,
            "ratio": ratio,
            "ratio_coco_part": ratio_coco,
            "max_diff": max_diff,
            "stats": compared,
        },
    }
