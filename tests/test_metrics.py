"""The project's metrics against pycocotools (run directly here) and hand-computed cases."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch

from smallobj_pipeline.detection.errors import ConfigError, DatasetError
from smallobj_pipeline.detection.evaluation.metrics import (
    evaluate_detections,
    iou_per_gt,
    iou_per_prediction,
    precision_recall,
    predictions_to_coco,
)

BACKENDS = ["faster_coco_eval", "pycocotools"]
CATEGORIES = [{"id": 3, "name": "cell"}, {"id": 8, "name": "debris"}]


def _ann(ann_id, image_id, cat, bbox, **extra):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": [float(v) for v in bbox],
        "area": float(bbox[2] * bbox[3]),
        "iscrowd": 0,
        **extra,
    }


def _pred(image_id, cat, bbox, score):
    return {
        "image_id": image_id,
        "category_id": cat,
        "bbox": [float(v) for v in bbox],
        "score": float(score),
    }


def build_case(with_crowded_image: bool = True):
    """Ground truth and predictions with every situation the evaluation must get right:
    image 1 mixed hits / a shifted box / a false positive (small, medium and large objects);
    image 2 ground truth without predictions; image 3 predictions without ground truth;
    image 4 the second category, with one prediction of the wrong category; image 5 (optional)
    150 small objects, all detected, scores interleaving with the false positives; image 6 empty.
    """
    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"{i}.png", "width": 640, "height": 480} for i in range(1, 7)]
    anns, preds = [], []
    anns += [
        _ann(1, 1, 3, [10, 10, 20, 20]),
        _ann(2, 1, 3, [100, 100, 50, 40]),
        _ann(3, 1, 3, [300, 200, 150, 120]),
    ]
    preds += [
        _pred(1, 3, [10, 10, 20, 20], 0.95),
        _pred(1, 3, [110, 104, 50, 40], 0.8),
        _pred(1, 3, [305, 190, 150, 130], 0.6),
        _pred(1, 3, [500, 400, 30, 30], 0.7),
    ]
    anns += [_ann(4, 2, 3, [50, 50, 12, 12]), _ann(5, 2, 8, [200, 60, 40, 40])]
    preds += [_pred(3, 3, [5, 5, 20, 20], 0.9), _pred(3, 8, [80, 80, 60, 60], 0.4)]
    anns += [_ann(6, 4, 8, [20, 30, 40, 35]), _ann(7, 4, 8, [400, 300, 100, 90])]
    preds += [
        _pred(4, 8, [22, 31, 40, 35], 0.85),
        _pred(4, 3, [400, 300, 100, 90], 0.75),
        _pred(4, 8, [398, 305, 100, 90], 0.3),
    ]
    if with_crowded_image:
        k = 7
        for r in range(10):
            for c in range(15):
                k += 1
                x, y = 20 + 40 * c, 20 + 40 * r
                anns.append(_ann(k, 5, 3, [x, y, 14, 12]))
                jitter = rng.uniform(-3, 3, size=2)
                preds.append(
                    _pred(5, 3, [x + jitter[0], y + jitter[1], 14, 12], rng.uniform(0.05, 0.99))
                )
    gt = {"images": images, "annotations": anns, "categories": CATEGORIES}
    return gt, preds


def pycocotools_reference(gt, preds, max_dets):
    """pycocotools' COCOeval run by the book on copies, with maxDets set to ``max_dets``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(preds))
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _mean_defined(a):
    a = np.asarray(a)
    a = a[a > -1]
    return float(a.mean()) if a.size else -1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_numbers_equal_pycocotools_with_default_max_dets(backend):
    gt, preds = build_case(with_crowded_image=False)
    result = evaluate_detections(gt, preds, backend=backend)
    ref = pycocotools_reference(gt, preds, [1, 10, 100]).stats
    assert result["ar_max_dets"] == 100
    expected = dict(
        zip(
            ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"],
            ref[:6],
            strict=True,
        )
    )
    expected["ar_100"] = ref[8]
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key
    assert 0 < result["map"] < 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_numbers_equal_pycocotools_with_raised_max_dets(backend):
    gt, preds = build_case(with_crowded_image=True)
    result = evaluate_detections(gt, preds, backend=backend)
    assert result["ar_max_dets"] == 150
    ev = pycocotools_reference(gt, preds, [1, 10, 150])
    prec, rec = ev.eval["precision"], ev.eval["recall"]  # [T,R,K,A,M], [T,K,A,M]
    # summarize() uses maxDets[2] for these ...
    for key, i in [
        ("map_50", 1),
        ("map_75", 2),
        ("map_small", 3),
        ("map_medium", 4),
        ("map_large", 5),
        ("ar_100", 8),
    ]:
        assert result[key] == pytest.approx(ev.stats[i], abs=1e-6), key
    # ... but looks up maxDets == 100 for AP@[.5:.95] (it reports -1 here): COCO's formula instead
    assert ev.stats[0] == -1
    assert result["map"] == pytest.approx(_mean_defined(prec[:, :, :, 0, -1]), abs=1e-6)
    assert result["ar_100"] == pytest.approx(_mean_defined(rec[:, :, 0, -1]), abs=1e-6)
    # per class and PR curve from the same arrays
    assert set(result["per_class_ap"]) == {"cell", "debris"}
    for k, name in enumerate(["cell", "debris"]):
        assert result["per_class_ap"][name]["ap"] == pytest.approx(
            _mean_defined(prec[:, :, k, 0, -1]), abs=1e-6
        )
        assert result["per_class_ap"][name]["ap_50"] == pytest.approx(
            _mean_defined(prec[0, :, k, 0, -1]), abs=1e-6
        )
    curve = result["pr_curve"]
    assert len(curve["recall"]) == len(curve["precision"]) == 101
    np.testing.assert_allclose(curve["precision"], prec[0, :, :, 0, -1].mean(axis=1), atol=1e-9)
    # the raised maxDets matters: COCO's default drops 50 of the 150 detections of image 5
    default = evaluate_detections(gt, preds, max_dets=100, backend=backend)
    assert default["ar_max_dets"] == 100
    assert default["ar_100"] < result["ar_100"] - 0.05
    assert default["map_small"] < result["map_small"]


def test_backends_agree_and_inputs_are_not_modified():
    gt, preds = build_case()
    gt_before, preds_before = copy.deepcopy(gt), copy.deepcopy(preds)
    a = evaluate_detections(gt, preds, backend="faster_coco_eval")
    b = evaluate_detections(gt, preds, backend="pycocotools")
    for key in (
        "map",
        "map_50",
        "map_75",
        "map_small",
        "map_medium",
        "map_large",
        "ar_100",
        "iou_per_prediction",
        "iou_per_gt",
        "precision",
        "recall",
    ):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    assert gt == gt_before and preds == preds_before


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_predictions(backend):
    gt, _ = build_case()
    preds = [_pred(a["image_id"], a["category_id"], a["bbox"], 1.0) for a in gt["annotations"]]
    r = evaluate_detections(gt, preds, backend=backend)
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "ar_100"):
        assert r[key] == pytest.approx(1.0), key
    assert r["iou_per_prediction"] == pytest.approx(1.0)
    assert r["iou_per_gt"] == pytest.approx(1.0)
    assert r["precision"] == r["recall"] == 1.0
    assert r["pr_curve"]["precision"] == pytest.approx([1.0] * 101)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_predictions(backend):
    gt, _ = build_case(with_crowded_image=False)
    r = evaluate_detections(gt, [], backend=backend)
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "ar_100"):
        assert r[key] == 0.0, key
    assert r["iou_per_prediction"] == r["iou_per_gt"] == r["precision"] == r["recall"] == 0.0
    assert r["num_predictions"] == 0 and r["num_gt"] == len(gt["annotations"])
    assert r["pr_curve"]["precision"] == [0.0] * 101
    # an area range without ground truth is undefined (-1), as in COCO
    small_only = {**gt, "annotations": [a for a in gt["annotations"] if a["area"] < 32**2]}
    r = evaluate_detections(small_only, [], backend=backend)
    assert r["map_small"] == 0.0 and r["map_large"] == -1.0


def test_iou_per_prediction_and_per_gt_hand_computed():
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": [
            _ann(1, 1, 3, [0, 0, 10, 10]),
            _ann(2, 1, 3, [50, 50, 10, 10]),
            _ann(3, 2, 3, [0, 0, 20, 20]),
        ],
        "categories": CATEGORIES,
    }
    preds = [
        _pred(1, 3, [5, 0, 10, 10], 0.9),  # shifted by half its width: IoU 1/3 with box 1
        _pred(1, 8, [50, 50, 10, 10], 0.8),  # other category, exact on box 2: IoU 1 (any category)
        _pred(1, 3, [50, 50, 10, 10], 0.1),  # below the threshold: ignored
        _pred(2, 3, [0, 0, 10, 20], 0.7),  # half of box 3: IoU 1/2
        _pred(2, 3, [70, 70, 10, 10], 0.6),  # touches nothing: IoU 0
    ]
    assert iou_per_prediction(gt, preds, 0.5) == pytest.approx((1 / 3 + 1 + 1 / 2 + 0) / 4)
    assert iou_per_gt(gt, preds, 0.5) == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    # with the low-score prediction included nothing changes for the GT side's best, and it adds a
    # 1.0
    assert iou_per_prediction(gt, preds, 0.0) == pytest.approx((1 / 3 + 1 + 1 + 1 / 2 + 0) / 5)
    assert iou_per_gt(gt, preds[:1], 0.5) == pytest.approx((1 / 3 + 0 + 0) / 3)
    assert iou_per_prediction(gt, [], 0.5) == 0.0
    assert iou_per_gt(gt, [], 0.5) == 0.0


def test_precision_recall_greedy_one_to_one():
    gt = {
        "images": [{"id": 1, "width": 200, "height": 200}, {"id": 2, "width": 200, "height": 200}],
        "annotations": [
            _ann(1, 1, 3, [0, 0, 10, 10]),
            _ann(2, 1, 3, [20, 0, 10, 10]),
            _ann(3, 1, 3, [40, 0, 10, 10]),
            _ann(4, 2, 8, [0, 0, 10, 10]),
        ],
        "categories": CATEGORIES,
    }
    preds = [
        _pred(1, 3, [0, 0, 10, 10], 0.9),  # TP on box 1
        _pred(1, 3, [1, 0, 10, 10], 0.8),  # duplicate of box 1 (IoU .82): FP, one-to-one
        _pred(1, 3, [22, 0, 10, 10], 0.7),  # IoU 2/3 with box 2: TP
        _pred(1, 3, [100, 100, 5, 5], 0.6),  # FP
        _pred(1, 3, [40, 0, 10, 10], 0.3),  # below threshold: not counted
        _pred(2, 3, [0, 0, 10, 10], 0.95),  # right place, wrong category: FP
    ]
    pr = precision_recall(gt, preds, 0.5)
    assert pr["true_positives"] == 2
    assert pr["precision"] == pytest.approx(2 / 5)
    assert pr["recall"] == pytest.approx(2 / 4)
    r = evaluate_detections(gt, preds, score_threshold=0.5)
    assert (r["precision"], r["recall"], r["num_predictions"], r["num_gt"]) == (
        pytest.approx(0.4),
        pytest.approx(0.5),
        5,
        4,
    )
    assert r["num_predictions_all"] == 6
    # greedy by score: the higher-scored, worse-overlapping prediction takes the box first
    greedy = [
        _pred(2, 8, [0, 0, 10, 16], 0.9),
        _pred(2, 8, [0, 0, 10, 11], 0.8),
    ]  # IoU .625 and .909
    assert precision_recall(gt, greedy, 0.5) == {
        "precision": 0.5,
        "recall": 0.25,
        "true_positives": 1,
    }


def test_unknown_image_or_category_and_bad_options():
    gt, preds = build_case(with_crowded_image=False)
    with pytest.raises(DatasetError, match=r"\[77, 99\]"):
        evaluate_detections(
            gt, preds + [_pred(99, 3, [0, 0, 5, 5], 0.9), _pred(77, 3, [0, 0, 5, 5], 0.9)]
        )
    with pytest.raises(DatasetError, match="category id"):
        evaluate_detections(gt, [_pred(1, 42, [0, 0, 5, 5], 0.9)])
    with pytest.raises(ConfigError, match="backend"):
        evaluate_detections(gt, preds, backend="torchmetrics")
    with pytest.raises(ConfigError, match="max_dets"):
        evaluate_detections(gt, preds, max_dets=0)


def test_single_category_has_no_per_class_and_missing_area_is_filled():
    gt = {
        "images": [{"id": 0, "width": 50, "height": 50}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 1, "bbox": [5, 5, 10, 10]}
        ],  # no area/iscrowd, id 0
        "categories": [{"id": 1, "name": "spot"}],
    }
    r = evaluate_detections(gt, [_pred(0, 1, [5, 5, 10, 10], 0.9)])
    assert "per_class_ap" not in r
    assert r["map"] == pytest.approx(1.0) and r["map_small"] == pytest.approx(1.0)


def test_predictions_to_coco():
    outputs = [
        {
            "boxes": torch.tensor([[1.25, 2.5, 11.125, 22.0], [0.0, 0.0, 3.0, 4.0]]),
            "scores": torch.tensor([0.9, 0.2]),
            "labels": torch.tensor([1, 2]),
        },
        {
            "boxes": torch.zeros((0, 4)),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        },
    ]
    res = predictions_to_coco(outputs, [10, 11], {1: 3, 2: 8})
    assert len(res) == 2
    assert res[0] == {
        "image_id": 10,
        "category_id": 3,
        "bbox": [1.25, 2.5, 9.875, 19.5],
        "score": pytest.approx(0.9),
    }
    assert res[1]["category_id"] == 8 and res[1]["bbox"] == [0.0, 0.0, 3.0, 4.0]
    assert all(isinstance(v, float) for v in res[0]["bbox"])
    with pytest.raises(DatasetError, match=r"\[5\]"):
        predictions_to_coco(
            [{"boxes": np.zeros((1, 4)), "scores": np.ones(1), "labels": np.array([5])}],
            [1],
            {1: 3},
        )
