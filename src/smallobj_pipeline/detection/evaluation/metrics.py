"""The project's one implementation of the detection metrics (per-epoch validation and test).

:func:`evaluate_detections` takes a COCO ground-truth dict (``images``, ``annotations``,
``categories``) and COCO results (``image_id``, ``category_id``, ``bbox`` = ``[x, y, w, h]``,
``score``) and returns a flat dict.

What comes from the libraries: COCO's matching, accumulation and summary. ``COCOeval``
(``iouType="bbox"``, every prediction regardless of the score threshold, as COCO does) is run
by faster-coco-eval (``COCOeval_faster``, C++; default backend) or by pycocotools (the
cross-check: ``backend="pycocotools"``, same arrays to 1e-6, compared by the tests). The summary
numbers are faster-coco-eval's ``summarize()``, which, unlike pycocotools', summarises at
``params.maxDets[-1]`` (pycocotools looks up ``maxDets == 100`` for AP@[.5:.95] and gives -1
once that value is raised); with the pycocotools backend, faster-coco-eval summarises
pycocotools' accumulated arrays.

- ``map`` AP@[.5:.95], ``map_50`` AP@.5, ``map_75`` AP@.75, ``map_small`` / ``map_medium`` /
  ``map_large`` (area < 32^2, 32^2..96^2, > 96^2), all at the largest maxDets;
- ``ar_100``: AR@[.5:.95] at the largest maxDets (the key keeps COCO's usual name; the maxDets
  actually used is in ``ar_max_dets``).
- A value of ``-1.0`` means "undefined" exactly as in COCO: no ground truth in that area range
  (for example ``map_large`` on a dataset of small objects, or every AP on a split without
  annotations). Empty predictions give ``0.0`` wherever ground truth exists.

What this module adds, because neither library gives it:

- the maxDets choice: COCO's default ``[1, 10, 100]`` silently ignores detections beyond 100 per
  image and category, which under-counts recall on images holding many small objects. With
  ``max_dets=None`` the last value is raised to ``max(100, most ground-truth objects in an
  image, most predictions for an image)``; an int sets it explicitly. With
  ``maxDets = [1, 10, 100]`` the numbers equal pycocotools' ``COCOeval.summarize()``.
- With no non-crowd ground truth at all, the COCO keys are -1 (undefined), as pycocotools gives
  (faster-coco-eval 1.8 reports 1.0 for detections matched to crowd regions only).
- Project metrics (score >= ``score_threshold``; crowd ground truth, ``iscrowd=1``, is left out
  as it is of the training targets, and, by COCO's rule, a prediction that matches no object but
  lies on a crowd region of its category (intersection over its own area >= 0.5) is ignored:
  ``num_ignored_on_crowd`` counts them):

  - ``iou_per_prediction``: mean over predictions of the best IoU with any ground-truth box of
    the same image (any category); ``0.0`` when there are no predictions.
  - ``iou_per_gt``: mean over ground-truth boxes of the best IoU with any prediction of the same
    image (0 where none); ``0.0`` when there is no ground truth.
  - ``precision`` / ``recall`` at IoU 0.5: greedy one-to-one matching per image and category by
    descending score (a match needs IoU >= 0.5, as in COCO); ``0.0`` when the denominator is 0.
  - ``num_predictions`` (score >= threshold), ``num_predictions_all`` (all, as COCOeval saw
    them), ``num_gt`` (non-crowd ground-truth boxes), ``num_images``.

- ``pr_curve``: ``{"iou": 0.5, "recall": [0, 0.01, ..., 1] (101 points), "precision": [...]}``,
  COCO's interpolated precision at IoU 0.5, area "all", the largest maxDets, averaged over the
  categories that have ground truth. COCO's -1 (category without ground truth) is left out of
  the average; a recall point where no category is defined is stored as ``None`` (JSON null).
- ``per_class_ap``: ``{category name: {"ap": AP@[.5:.95], "ap_50": AP@.5}}``, only when
  ``per_class`` is set and the ground truth declares more than one category (-1.0: no ground
  truth of that category; faster-coco-eval's ``extended_metrics`` drops such classes).

Masks (Mask R-CNN; ``segm=True``, or predictions that carry ``segmentation`` in COCO RLE): the
same COCOeval run with ``iouType="segm"`` gives ``segm_map``, ``segm_map_50``, ... ``segm_ar_100``
(COCO rasterises the ground-truth polygons/RLE itself); ``segm_iou_per_prediction`` /
``segm_iou_per_gt`` are the IoU means above with mask IoU (pycocotools' ``maskUtils.iou``) in
place of box IoU, same image, any category, score >= threshold, crowd regions left out.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from faster_coco_eval import COCO as FastCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from ..constants import COCO_KEYS
from ..data.masks import encode, rle_iou, to_rle
from ..errors import ConfigError, DatasetError

BACKENDS = ("faster_coco_eval", "pycocotools")
MATCH_IOU = 0.5


def _silent(*_: Any) -> None:
    """faster-coco-eval's ``print_function``: its progress and summary lines are not wanted."""


# ---------------------------------------------------------------------------- public API
def evaluate_detections(
    gt: dict[str, Any],
    predictions: list[dict[str, Any]],
    score_threshold: float = 0.5,
    max_dets: int | None = None,
    per_class: bool = True,
    backend: str = "faster_coco_eval",
    segm: bool | None = None,
) -> dict[str, Any]:
    """COCO bbox metrics plus IoU per prediction / per ground truth and precision / recall;
    with ``segm`` (``None``: when the predictions carry masks) the mask metrics too.

    See the module docstring for every key and convention. Raises :class:`DatasetError` when a
    prediction names an image or category that ``gt`` lacks, :class:`ConfigError` for a bad
    ``backend`` or ``max_dets``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"evaluation backend must be one of {list(BACKENDS)}, got {backend!r}")
    gt = normalise_gt(gt)
    predictions = check_predictions(gt, predictions)
    largest = largest_max_dets(gt, predictions, max_dets)

    coco_eval = run_cocoeval(gt, predictions, max_dets_list(largest), backend)
    out: dict[str, Any] = coco_summary(coco_eval)
    if not any(not a.get("iscrowd", 0) for a in gt["annotations"]):
        # no object to find: COCO's AP is undefined (pycocotools: -1); faster-coco-eval 1.8
        # reports 1.0 for detections matched to crowd regions only
        out.update(dict.fromkeys(COCO_KEYS, -1.0))
    out["ar_max_dets"] = largest

    thresholded = [p for p in predictions if float(p["score"]) >= score_threshold]
    out.update(box_metrics(gt, thresholded))
    out["num_predictions_all"] = len(predictions)
    out["num_images"] = len(gt["images"])
    out["score_threshold"] = float(score_threshold)
    out["pr_curve"] = pr_curve(coco_eval.eval, coco_eval.params)

    if per_class and len(gt["categories"]) > 1:
        out["per_class_ap"] = per_class_ap(coco_eval.eval, coco_eval.params, gt["categories"])
    if segm is None:
        segm = bool(predictions) and all("segmentation" in p for p in predictions)
    if segm:
        out.update(segm_metrics(gt, predictions, score_threshold, largest, backend))
    return out


def segm_metrics(
    gt: dict[str, Any],
    predictions: list[dict[str, Any]],
    score_threshold: float,
    largest: int,
    backend: str = "faster_coco_eval",
) -> dict[str, float]:
    """The ``segm_*`` keys of the module docstring (``gt`` normalised, ``predictions`` checked)."""
    missing = [i for i, p in enumerate(predictions) if "segmentation" not in p]
    if missing:
        raise DatasetError(f"prediction(s) {missing[:10]} have no 'segmentation' for mask metrics")
    unmasked = [a["id"] for a in gt["annotations"] if not a.get("segmentation")]
    if unmasked:
        raise DatasetError(
            f"ground-truth annotation(s) {unmasked[:10]} have no segmentation: mask metrics "
            "need a mask for every object"
        )
    coco_eval = run_cocoeval(gt, predictions, max_dets_list(largest), backend, iou_type="segm")
    out = {f"segm_{k}": v for k, v in coco_summary(coco_eval).items()}
    if not any(not a.get("iscrowd", 0) for a in gt["annotations"]):
        out.update({f"segm_{k}": -1.0 for k in COCO_KEYS})
    kept = [p for p in predictions if float(p["score"]) >= score_threshold]
    out.update(mask_ious(gt, kept))
    return out


def mask_ious(gt: dict[str, Any], predictions: list[dict[str, Any]]) -> dict[str, float]:
    """``segm_iou_per_prediction`` / ``segm_iou_per_gt``: best mask IoU of each prediction
    with any object of its image, and of each object with any prediction (0 where none)."""
    sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in gt["images"]}
    gts = _by_image(a for a in gt["annotations"] if not a.get("iscrowd", 0))
    preds = _by_image(predictions)
    per_pred: list[np.ndarray] = []
    per_gt: list[np.ndarray] = []
    for image_id in set(gts) | set(preds):
        h, w = sizes[image_id]
        g = [to_rle(a["segmentation"], h, w) for a in gts.get(image_id, [])]
        iou = rle_iou([p["segmentation"] for p in preds.get(image_id, [])], g)
        per_pred.append(iou.max(axis=1) if g else np.zeros(iou.shape[0]))
        per_gt.append(iou.max(axis=0) if iou.shape[0] else np.zeros(len(g)))
    pp = np.concatenate(per_pred) if per_pred else np.zeros(0)
    pg = np.concatenate(per_gt) if per_gt else np.zeros(0)
    return {
        "segm_iou_per_prediction": float(pp.mean()) if pp.size else 0.0,
        "segm_iou_per_gt": float(pg.mean()) if pg.size else 0.0,
    }


def largest_max_dets(
    gt: dict[str, Any], predictions: list[dict[str, Any]], max_dets: int | None
) -> int:
    """COCO's last maxDets value: ``max_dets``, or with ``None`` the most of 100, the
    ground-truth objects of one image and the predictions for one image."""
    if max_dets is not None:
        if isinstance(max_dets, bool) or not isinstance(max_dets, int | np.integer) or max_dets < 1:
            raise ConfigError(f"max_dets must be a positive integer or null, got {max_dets!r}")
        return int(max_dets)
    gt_per_image: dict[Any, int] = defaultdict(int)
    for ann in gt["annotations"]:
        gt_per_image[ann["image_id"]] += 1
    pred_per_image: dict[Any, int] = defaultdict(int)
    for p in predictions:
        pred_per_image[p["image_id"]] += 1
    return max(100, max(gt_per_image.values(), default=0), max(pred_per_image.values(), default=0))


def max_dets_list(largest: int) -> list[int]:
    """COCO's ``[1, 10, largest]``, without the values not below ``largest``."""
    return [m for m in (1, 10) if m < largest] + [largest]


def coco_summary(coco_eval: Any) -> dict[str, float]:
    """COCO's summary numbers at ``params.maxDets[-1]``, by faster-coco-eval's ``summarize()``.

    ``coco_eval`` is an evaluated and accumulated ``COCOeval`` of either backend; a pycocotools
    one is summarised by a faster-coco-eval evaluator given its ``params`` and ``eval`` arrays.
    Read from ``stats``, whose layout is AP, AP@.5, AP@.75, AP per area range, AR per maxDets:
    ``stats_as_dict`` names AR at maxDets 50 or 75 ``AR_50`` / ``AR_75``, which the AR at IoU
    0.5 / 0.75 then overwrite.
    """
    if not isinstance(coco_eval, COCOeval_faster):
        summariser = COCOeval_faster(iouType="bbox", print_function=_silent)
        summariser.params, summariser.eval = coco_eval.params, coco_eval.eval
        coco_eval = summariser
    coco_eval.summarize()
    stats = [float(v) for v in coco_eval.stats]
    areas = list(coco_eval.params.areaRngLbl)[1:]  # after "all"
    out = {"map": stats[0], "map_50": stats[1], "map_75": stats[2]}
    out.update({f"map_{area}": stats[3 + i] for i, area in enumerate(areas)})
    out["ar_100"] = stats[3 + len(areas) + len(coco_eval.params.maxDets) - 1]
    return out


def iou_per_prediction(
    gt: dict[str, Any], predictions: list[dict[str, Any]], score_threshold: float = 0.5
) -> float:
    """Mean over predictions (score >= threshold) of the best IoU with any ground-truth box of
    the same image, any category; 0.0 when there is no such prediction."""
    gt = normalise_gt(gt)
    kept = [p for p in check_predictions(gt, predictions) if float(p["score"]) >= score_threshold]
    return box_metrics(gt, kept)["iou_per_prediction"]


def iou_per_gt(
    gt: dict[str, Any], predictions: list[dict[str, Any]], score_threshold: float = 0.5
) -> float:
    """Mean over ground-truth boxes of the best IoU with any prediction (score >= threshold) of
    the same image, 0 where there is none; 0.0 when there is no ground truth."""
    gt = normalise_gt(gt)
    kept = [p for p in check_predictions(gt, predictions) if float(p["score"]) >= score_threshold]
    return box_metrics(gt, kept)["iou_per_gt"]


def precision_recall(
    gt: dict[str, Any],
    predictions: list[dict[str, Any]],
    score_threshold: float = 0.5,
    iou: float = MATCH_IOU,
) -> dict[str, float]:
    """Precision and recall at ``iou`` (greedy one-to-one matching per image and category by
    descending score) over predictions with score >= threshold; keys ``precision``, ``recall``,
    ``true_positives``."""
    gt = normalise_gt(gt)
    kept = [p for p in check_predictions(gt, predictions) if float(p["score"]) >= score_threshold]
    m = box_metrics(gt, kept, match_iou=iou)
    return {k: m[k] for k in ("precision", "recall", "true_positives")}


def predictions_to_coco(
    outputs: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    category_of_label: Mapping[int, int],
) -> list[dict[str, Any]]:
    """torchvision detector outputs -> COCO results.

    ``outputs[i]`` has ``boxes`` (N, 4) ``x1, y1, x2, y2`` pixels, ``scores`` (N,) and ``labels``
    (N,) (tensors or arrays) for image ``image_ids[i]``; labels map back to the original
    category ids through ``category_of_label``. Coordinates keep full float precision.
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs for {len(image_ids)} image ids")
    mapping = {int(k): int(v) for k, v in category_of_label.items()}
    results: list[dict[str, Any]] = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        results.extend(_image_results(out, image_id, mapping))
    return results


def _image_results(
    out: Mapping[str, Any], image_id: Any, mapping: dict[int, int]
) -> list[dict[str, Any]]:
    """One image's detector output as COCO results (see :func:`predictions_to_coco`)."""
    boxes = _to_numpy(out["boxes"]).astype(np.float64).reshape(-1, 4)
    scores = _to_numpy(out["scores"]).astype(np.float64).reshape(-1)
    labels = _to_numpy(out["labels"]).astype(np.int64).reshape(-1)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(
            f"image id {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
        )
    unknown = sorted({int(v) for v in labels} - mapping.keys())
    if unknown:
        raise DatasetError(
            f"image id {image_id}: predicted label(s) {unknown} have no category id "
            f"(known labels {sorted(mapping)})"
        )
    image_id = int(image_id) if isinstance(image_id, int | np.integer) else image_id
    wh = boxes[:, 2:] - boxes[:, :2]
    results = [
        {
            "image_id": image_id,
            "category_id": mapping[int(label)],
            "bbox": [float(x1), float(y1), float(w), float(h)],
            "score": float(score),
        }
        for (x1, y1), (w, h), score, label in zip(boxes[:, :2], wh, scores, labels, strict=True)
    ]
    rles = _output_rles(out)
    if rles is not None:
        if len(rles) != len(results):
            raise ValueError(f"image id {image_id}: {len(rles)} masks for {len(results)} boxes")
        for result, rle in zip(results, rles, strict=True):
            result["segmentation"] = rle
    return results


def _output_rles(out: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """A Mask R-CNN output's masks as COCO RLE: ``rles`` as they are (sliced prediction), or
    ``masks`` ``(N, 1, H, W)`` probabilities thresholded at 0.5, as torchvision's reference
    evaluation does; ``None`` for a box-only output."""
    if "rles" in out:
        return list(out["rles"])
    if "masks" not in out:
        return None
    masks = _to_numpy(out["masks"])
    masks = masks.reshape(len(masks), *masks.shape[-2:]) > 0.5
    return [encode(m) for m in masks]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of ``x1, y1, x2, y2`` boxes (continuous coordinates, as COCO)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


# ---------------------------------------------------------------------------- COCOeval
def run_cocoeval(
    gt: dict[str, Any],
    predictions: list[dict[str, Any]],
    max_dets: list[int],
    backend: str,
    iou_type: str = "bbox",
) -> Any:
    """An evaluated and accumulated ``COCOeval`` of ``backend`` with ``params.maxDets =
    max_dets`` and ``iou_type`` (``bbox`` or ``segm``); ``gt`` as :func:`normalise_gt` returns
    it (COCOeval writes into its dicts)."""
    fast = backend == "faster_coco_eval"
    coco_cls = FastCOCO if fast else PyCOCO
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = _coco_index(coco_cls, gt)
        if predictions:
            # copies: loadRes writes id/area/iscrowd/segmentation into the dicts it gets
            coco_dt = coco_gt.loadRes([_result_copy(p, iou_type) for p in predictions])
        else:  # pycocotools' loadRes fails on an empty list; an empty result set is valid
            empty = {"images": list(gt["images"]), "categories": list(gt["categories"])}
            coco_dt = _coco_index(coco_cls, {**empty, "annotations": []})
        if fast:
            coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=_silent)
        else:
            coco_eval = PyCOCOeval(coco_gt, coco_dt, iouType=iou_type)
        coco_eval.params.maxDets = list(max_dets)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def _result_copy(p: dict[str, Any], iou_type: str) -> dict[str, Any]:
    """A prediction for ``loadRes`` (which writes into the dicts it gets): for ``bbox`` without
    its mask (loadRes would score the mask), for ``segm`` with its RLE and without its box."""
    out = {k: v for k, v in p.items() if k not in ("bbox", "segmentation")}
    if iou_type == "segm":
        seg = p["segmentation"]
        out["segmentation"] = {"size": list(seg["size"]), "counts": seg["counts"]}
    else:
        out["bbox"] = list(p["bbox"])
    return out


def _coco_index(coco_cls: type, dataset: dict[str, Any]) -> Any:
    coco = coco_cls()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _mean_defined(s: np.ndarray) -> float:
    """COCO's summary rule: the mean of the entries > -1, or -1.0 when there is none."""
    s = np.asarray(s)
    s = s[s > -1]
    return float(np.mean(s)) if s.size else -1.0


def _iou_and_area_index(params: Any) -> tuple[int, int]:
    """Indices of IoU 0.5 and of the area range "all" in COCOeval's arrays."""
    t = int(np.flatnonzero(np.isclose(np.asarray(params.iouThrs), MATCH_IOU))[0])
    return t, list(params.areaRngLbl).index("all")


def pr_curve(eval_: Mapping[str, Any], params: Any) -> dict[str, Any]:
    """COCO's interpolated precision at IoU 0.5, area "all", the largest maxDets, averaged over
    the categories with ground truth (``None`` where none is defined)."""
    precision = np.asarray(eval_["precision"], dtype=np.float64)
    t, a = _iou_and_area_index(params)
    s = precision[t, :, :, a, -1]  # (R, K)
    s = np.where(s > -1, s, np.nan)
    defined = ~np.isnan(s)
    counts = defined.sum(axis=1)
    sums = np.where(defined, s, 0.0).sum(axis=1)
    curve = [float(v / c) if c else None for v, c in zip(sums, counts, strict=True)]
    return {"iou": MATCH_IOU, "recall": [float(r) for r in params.recThrs], "precision": curve}


def per_class_ap(
    eval_: Mapping[str, Any], params: Any, categories: list[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """``{category name: {"ap", "ap_50"}}`` from COCOeval's arrays; a name shared by several
    categories gets `` (id N)`` appended; -1.0 where the category has no ground truth."""
    precision = np.asarray(eval_["precision"])
    t, a = _iou_and_area_index(params)
    names = {c["id"]: str(c.get("name", c["id"])) for c in categories}
    counts: dict[str, int] = defaultdict(int)
    for name in names.values():
        counts[name] += 1
    out: dict[str, dict[str, float]] = {}
    for k, cat_id in enumerate(params.catIds):
        name = names.get(cat_id, str(cat_id))
        if counts[name] > 1:
            name = f"{name} (id {cat_id})"
        s = precision[:, :, k, a, -1]
        out[name] = {"ap": _mean_defined(s), "ap_50": _mean_defined(s[t])}
    return out


# ------------------------------------------------------------------------ IoU, precision, recall
def _xywh_to_xyxy(boxes: Iterable[Sequence[float]]) -> np.ndarray:
    b = np.asarray(list(boxes), dtype=np.float64).reshape(-1, 4)
    b[:, 2:] += b[:, :2]
    return b


def _by_image(items: Iterable[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        out[item["image_id"]].append(item)
    return out


def _same_category(anns: list[dict[str, Any]], category_id: Any) -> list[dict[str, Any]]:
    return [a for a in anns if a["category_id"] == category_id]


def crowd_ignored(
    gt: dict[str, Any], predictions: list[dict[str, Any]], match_iou: float
) -> tuple[list[dict[str, Any]], int]:
    """COCO's crowd rule, for the project metrics: a prediction that does not match an object
    but covers a crowd region of its category (intersection over the prediction's own area >=
    ``match_iou``) is ignored: neither a true nor a false positive. Returns the predictions
    kept and how many were ignored."""
    crowds = _by_image(a for a in gt["annotations"] if a.get("iscrowd", 0))
    objects = _by_image(a for a in gt["annotations"] if not a.get("iscrowd", 0))
    if not crowds:
        return predictions, 0
    kept, ignored = [], 0
    for p in predictions:
        regions = _same_category(crowds.get(p["image_id"], []), p["category_id"])
        if regions:
            pb = _xywh_to_xyxy([p["bbox"]])
            same = _same_category(objects.get(p["image_id"], []), p["category_id"])
            matches_object = (
                same and box_iou(pb, _xywh_to_xyxy(a["bbox"] for a in same)).max() >= match_iou
            )
            on_crowd = _iof(pb[0], _xywh_to_xyxy(a["bbox"] for a in regions)).max() >= match_iou
            if not matches_object and on_crowd:
                ignored += 1
                continue
        kept.append(p)
    return kept, ignored


def _iof(box: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Intersection of ``box`` with each region over ``box``'s own area (COCO's crowd IoU)."""
    w = np.clip(np.minimum(box[2], regions[:, 2]) - np.maximum(box[0], regions[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], regions[:, 3]) - np.maximum(box[1], regions[:, 1]), 0, None)
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-12)
    return w * h / area


def _greedy_true_positives(
    d: list[dict[str, Any]], g: list[dict[str, Any]], iou: np.ndarray, match_iou: float
) -> int:
    """One-to-one matches per category, predictions ``d`` in descending score order."""
    same_cat = np.equal.outer([p["category_id"] for p in d], [a["category_id"] for a in g])
    cand = np.where(same_cat, iou, -1.0)
    taken = np.zeros(len(g), dtype=bool)
    tp = 0
    for i in range(len(d)):
        row = np.where(taken, -1.0, cand[i])
        j = int(np.argmax(row))
        if row[j] >= match_iou:
            taken[j] = True
            tp += 1
    return tp


def box_metrics(
    gt: dict[str, Any], predictions: list[dict[str, Any]], match_iou: float = MATCH_IOU
) -> dict[str, Any]:
    """The project metrics of the module docstring over ``predictions`` (already thresholded)."""
    predictions, ignored = crowd_ignored(gt, predictions, match_iou)
    gts = _by_image(a for a in gt["annotations"] if not a.get("iscrowd", 0))
    preds = _by_image(predictions)
    best_per_pred: list[np.ndarray] = []
    best_per_gt: list[np.ndarray] = []
    tp = 0
    for image_id in set(gts) | set(preds):
        g, d = gts.get(image_id, []), preds.get(image_id, [])
        if not d:  # every box of the image missed
            best_per_gt.append(np.zeros(len(g)))
            continue
        if not g:  # every prediction of the image is a false positive
            best_per_pred.append(np.zeros(len(d)))
            continue
        order = np.argsort([-float(p["score"]) for p in d], kind="stable")
        d = [d[i] for i in order]
        iou = box_iou(_xywh_to_xyxy(p["bbox"] for p in d), _xywh_to_xyxy(a["bbox"] for a in g))
        best_per_pred.append(iou.max(axis=1))
        best_per_gt.append(iou.max(axis=0))
        tp += _greedy_true_positives(d, g, iou, match_iou)
    per_pred = np.concatenate(best_per_pred) if best_per_pred else np.zeros(0)
    per_gt = np.concatenate(best_per_gt) if best_per_gt else np.zeros(0)
    n_pred, num_gt = len(predictions), sum(len(v) for v in gts.values())
    return {
        "iou_per_prediction": float(per_pred.mean()) if per_pred.size else 0.0,
        "iou_per_gt": float(per_gt.mean()) if per_gt.size else 0.0,
        "precision": tp / n_pred if n_pred else 0.0,
        "recall": tp / num_gt if num_gt else 0.0,
        "true_positives": tp,
        "num_predictions": n_pred,
        "num_ignored_on_crowd": ignored,
        "num_gt": num_gt,
    }


# ---------------------------------------------------------------------------- input checks
def normalise_gt(gt: dict[str, Any]) -> dict[str, Any]:
    """A copy COCOeval may annotate (it writes ``ignore`` into ground-truth dicts), with
    ``area`` (bbox w*h) and ``iscrowd`` (0) filled in where absent and annotation ids
    renumbered 1..N (unique and non-zero, as COCOeval's matching needs)."""
    missing = [k for k in ("images", "annotations", "categories") if k not in gt]
    if missing:
        raise DatasetError(
            f"ground truth lacks key(s) {missing}; "
            "a COCO dict needs images, annotations, categories"
        )
    annotations = []
    for ann in gt["annotations"]:
        a = dict(ann)
        bbox = a.get("bbox")
        if bbox is None or len(bbox) != 4:
            raise DatasetError(
                f"ground-truth annotation id {a.get('id')}: "
                f"'bbox' must be [x, y, w, h], got {bbox!r}"
            )
        a.setdefault("area", float(bbox[2]) * float(bbox[3]))
        a.setdefault("iscrowd", 0)
        annotations.append(a)
    for i, a in enumerate(annotations):
        # COCO indexes annotations by id, and pycocotools treats a matched id 0 as "unmatched"
        a["id"] = i + 1
    out = {k: v for k, v in gt.items() if k not in ("annotations",)}
    out["images"] = list(gt["images"])
    out["categories"] = list(gt["categories"])
    out["annotations"] = annotations
    return out


def check_predictions(
    gt: dict[str, Any], predictions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``predictions`` as a list, after checking their fields and that every image and
    category id is one of ``gt``'s (:class:`DatasetError` naming the first offenders)."""
    image_ids = {img["id"] for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    bad_images: set[Any] = set()
    bad_cats: set[Any] = set()
    for i, p in enumerate(predictions):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in p]
        if missing:
            raise DatasetError(f"prediction {i}: missing field(s) {missing}")
        if len(p["bbox"]) != 4:
            raise DatasetError(
                f"prediction {i} (image id {p['image_id']}): 'bbox' must be [x, y, w, h], "
                f"got {p['bbox']!r}"
            )
        if p["image_id"] not in image_ids:
            bad_images.add(p["image_id"])
        if p["category_id"] not in cat_ids:
            bad_cats.add(p["category_id"])
    if bad_images:
        shown = sorted(bad_images, key=str)
        raise DatasetError(
            f"predictions refer to {len(shown)} image id(s) not in the ground truth: {shown[:20]}"
            + (" ..." if len(shown) > 20 else "")
        )
    if bad_cats:
        raise DatasetError(
            f"predictions refer to category id(s) {sorted(bad_cats, key=str)} not in the ground "
            f"truth (categories {sorted(cat_ids, key=str)})"
        )
    return list(predictions)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
