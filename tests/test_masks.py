"""Instance segmentation (Mask R-CNN): the factory, masks through reading, augmentation, tiles
and sliced prediction, the validation checks of segmentations, the segm metrics, and a short
training that learns masks."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from smallobj_pipeline.detection.checkpoint import save_checkpoint
from smallobj_pipeline.detection.data import masks as M
from smallobj_pipeline.detection.data.augment import apply_transform_with_masks, build_transform
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.dataset import DetectionDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset, mask_polygons
from smallobj_pipeline.detection.data.stats import compute_stats
from smallobj_pipeline.detection.data.tiling import clip_annotation
from smallobj_pipeline.detection.data.validation import apply_policy, validate_dataset
from smallobj_pipeline.detection.engine.experiment import (
    evaluate_experiment,
    resolve_experiment,
    train_experiment,
)
from smallobj_pipeline.detection.errors import WeightsError
from smallobj_pipeline.detection.evaluation.metrics import evaluate_detections
from smallobj_pipeline.detection.evaluation.predict import predict_folder
from smallobj_pipeline.detection.evaluation.sliced import SliceConfig, sliced_predict
from smallobj_pipeline.detection.modeling import weights as W
from smallobj_pipeline.detection.modeling.factory import build_model, count_parameters

MASKS = {"task": "instance_segmentation"}


def _square(h, w, x, y, side):
    m = np.zeros((h, w), np.uint8)
    m[y : y + side, x : x + side] = 1
    return m


# ------------------------------------------------------------------------------ the factory
@pytest.mark.parametrize(
    "variant,builder", [("v1", maskrcnn_resnet50_fpn), ("v2", maskrcnn_resnet50_fpn_v2)]
)
def test_resnet50_mask_rcnn_equals_torchvision_builder(variant, builder):
    ours = build_model({**MASKS, "variant": variant, "in_channels": 3, "norm": "bn"}, 90)
    ref = builder(weights=None, weights_backbone=None, num_classes=91)
    assert isinstance(ours, MaskRCNN)
    assert count_parameters(ours)["total"] == sum(p.numel() for p in ref.parameters())
    assert set(ours.state_dict()) == set(ref.state_dict())


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet101"])
def test_other_backbones_count_as_torchvision_mask_rcnn(backbone):
    ours = build_model({**MASKS, "backbone": backbone, "in_channels": 3, "norm": "bn"}, 3)
    ref = MaskRCNN(
        resnet_fpn_backbone(
            backbone_name=backbone, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
        ),
        num_classes=4,
    )
    assert count_parameters(ours)["total"] == sum(p.numel() for p in ref.parameters())


def test_a_lighter_mask_head_is_torchvision_heads_with_fewer_convs_and_channels():
    light = {"mask_head_convs": 2, "mask_head_dim": 128}
    ours = build_model(
        {**MASKS, **light, "backbone": "resnet18", "in_channels": 3, "norm": "bn"}, 3
    )
    ref = MaskRCNN(
        resnet_fpn_backbone(
            backbone_name="resnet18", weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
        ),
        num_classes=None,
        box_predictor=FastRCNNPredictor(1024, 4),
        mask_head=MaskRCNNHeads(256, [128, 128], 1),
        mask_predictor=MaskRCNNPredictor(128, 128, 4),
    )
    assert count_parameters(ours)["total"] == sum(p.numel() for p in ref.parameters())
    assert len(ours.roi_heads.mask_head) == 2


@pytest.mark.parametrize("variant", ["v1", "v2"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_variant_trains_and_predicts_masks(variant, channels):
    torch.manual_seed(0)
    model = build_model(
        {**MASKS, "variant": variant, "backbone": "resnet18", "in_channels": channels,
         "min_size": 64, "max_size": 64, "head_init": "xavier", "rpn_post_nms_top_n_test": 50,
         "box_batch_size_per_image": 32},
        2,
    )  # fmt: skip
    image = torch.rand(channels, 64, 64)
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]),
        "labels": torch.tensor([1]),
        "masks": torch.from_numpy(_square(64, 64, 10, 10, 20))[None],
    }
    model.train()
    losses = model([image], [target])
    assert {"loss_mask", "loss_classifier", "loss_box_reg"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    assert out["masks"].shape[1:] == (1, 64, 64)


def test_full_weights_load_from_the_maskrcnn_file_and_missing_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    name = W.torchvision_weight_filename("full", "resnet50", "v2", "instance_segmentation")
    assert name == "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"
    cfg = {**MASKS, "variant": "v2", "backbone": "resnet50", "pretrained": "full"}
    with pytest.raises(WeightsError, match=name):
        build_model({**cfg, "in_channels": 3}, 2)
    torch.manual_seed(1)
    coco = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(coco.state_dict(), tmp_path / "hub" / "checkpoints" / name)
    model = build_model({**cfg, "in_channels": 1}, 2)
    mine = model.state_dict()
    # the mask head comes from the file; the class-specific mask logits are new
    key = "roi_heads.mask_head.0.0.weight"
    assert torch.equal(mine[key], coco.state_dict()[key])
    assert mine["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == 3
    assert model.smallobj_weights["file"].endswith(name)


# ------------------------------------------------------------------------------ reading masks
def _forms(mask: np.ndarray) -> dict[str, object]:
    h, w = mask.shape
    compressed = M.encode(mask)
    flat = mask.flatten(order="F")
    runs, value, n = [], 0, 0
    for v in flat:
        if v != value:
            runs.append(n)
            value, n = v, 0
        n += 1
    runs.append(n)
    return {
        "polygon": mask_polygons(mask),
        "rle": compressed,
        "rle_uncompressed": {"size": [h, w], "counts": [int(r) for r in runs]},
    }


@pytest.mark.parametrize("form", ["polygon", "rle", "rle_uncompressed"])
def test_segmentation_round_trip_through_a_flip(form):
    h, w = 40, 48
    mask = np.zeros((h, w), np.uint8)
    mask[5:15, 3:20] = 1
    mask[8:12, 8:12] = 0  # a hole: polygons are cut into parts without
    seg = _forms(mask)[form]
    assert M.segmentation_kind(seg) == form
    decoded = M.decode(seg, h, w)
    assert np.array_equal(decoded, mask)
    flip = build_transform({"hflip": 1.0, "vflip": 0, "rotate90": 0, "brightness_contrast": 0,
                            "noise": 0}, seed=0)  # fmt: skip
    image = np.zeros((h, w), np.uint8)
    box = np.array([[3.0, 5.0, 20.0, 15.0]])
    _, boxes, labels, masks = apply_transform_with_masks(
        flip, image, box, np.array([1]), decoded[None]
    )
    assert np.array_equal(masks[0], mask[:, ::-1])
    assert boxes[0].tolist() == pytest.approx([w - 20.0, 5.0, w - 3.0, 15.0], abs=1e-4)
    assert labels.tolist() == [1]


def test_an_object_whose_box_is_dropped_loses_its_mask_and_others_keep_theirs():
    h, w = 64, 64
    masks = np.stack([_square(h, w, 2, 2, 10), _square(h, w, 40, 40, 12)])
    boxes = np.array([[2.0, 2.0, 12.0, 12.0], [40.0, 40.0, 52.0, 52.0]])
    # a random half-size crop around one object: the other one often leaves the image
    crop = {"p": 1.0, "scale": [0.5, 0.5]}
    off = {"hflip": 0, "vflip": 0, "rotate90": 0, "brightness_contrast": 0, "noise": 0}
    transform = build_transform({**off, "crop": crop}, seed=3)
    counts = set()
    for _ in range(10):
        _, out_boxes, labels, out_masks = apply_transform_with_masks(
            transform, np.zeros((h, w), np.uint8), boxes, np.array([1, 2]), masks
        )
        assert len(out_masks) == len(out_boxes) == len(labels)
        counts.add(len(labels))
        for box, m in zip(out_boxes, out_masks, strict=True):
            ys, xs = np.nonzero(m)
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1  # each mask under its box
    assert 1 in counts  # an object was dropped, its mask with it


def test_dataset_gives_masks_in_targets_and_names_an_object_without_one(tmp_path):
    generate_sample_dataset(tmp_path, num_images=2, image_size=64, min_objects=2, max_objects=3,
                            min_side=8, max_side=12, segmentation=True)  # fmt: skip
    coco = CocoDataset.from_dir(tmp_path)
    ds = DetectionDataset(coco, [1], in_channels=1, masks=True)
    image, target = ds[0]
    anns = coco.annotations_by_image[1]
    assert target["masks"].shape == (len(anns), 64, 64)
    assert int(target["masks"].sum()) == sum(a["area"] for a in anns)
    del coco.annotations_by_image[1][0]["segmentation"]
    with pytest.raises(Exception, match=f"image id 1: annotation id\\(s\\) \\[{anns[0]['id']}\\]"):
        ds[0]


def test_tiles_keep_the_masks_cut_to_the_window():
    h, w = 64, 64
    mask = np.zeros((h, w), np.uint8)
    mask[20:40, 25:50] = 1
    window = (32, 16, 32, 32)
    for seg in (mask_polygons(mask), M.encode(mask)):
        ann = {"id": 1, "bbox": [25, 20, 25, 20], "category_id": 1, "segmentation": seg}
        tile = clip_annotation(ann, window, 0.1)
        assert np.array_equal(M.decode(tile["segmentation"], 32, 32), mask[16:48, 32:64])


# ------------------------------------------------------------------------------ validation
def test_each_segmentation_check_fails_with_its_culprit_and_drop_removes_it(tmp_path):
    generate_sample_dataset(tmp_path, num_images=3, image_size=64, min_objects=4, max_objects=4,
                            min_side=8, max_side=12, segmentation=True)  # fmt: skip
    data = json.loads((tmp_path / "annotations.json").read_text())
    bad = {
        "segmentation is polygons or RLE": ([[1, 2, 3]], 1),  # odd coordinate count
        "polygon has at least 3 points": ([[10, 10, 12, 10, 11, 11], [1, 1, 5, 5]], 2),
        "polygon inside its image": ([[-20, 0, 10, 0, 10, 10]], 3),
        "RLE size is the image's": ({"size": [32, 32], "counts": [1024]}, 4),
        "mask is not empty": ({"size": [64, 64], "counts": [4096]}, 5),
        "bbox encloses the mask": ([[0, 0, 60, 0, 60, 60]], 6),
    }
    for seg, ann_id in bad.values():
        data["annotations"][ann_id - 1]["segmentation"] = seg
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    coco = CocoDataset.from_dir(tmp_path)
    outcome = validate_dataset(coco)
    for name, (_, ann_id) in bad.items():
        result = outcome.check(name)
        assert not result.success and ann_id in result.annotation_ids, name
        assert f"annotation id {ann_id}" in outcome.summary()
    kept, report = apply_policy(coco, outcome, "drop")
    assert {a["id"] for a in kept.annotations}.isdisjoint({i for _, i in bad.values()})
    assert len(kept.annotations) == len(coco.annotations) - len(bad)


# ------------------------------------------------------------------------------ metrics
def _segm_case():
    h = w = 32
    a, b = _square(h, w, 0, 0, 8), _square(h, w, 16, 16, 8)
    gt = {
        "images": [{"id": 1, "width": w, "height": h}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8], "area": 64,
             "iscrowd": 0, "segmentation": mask_polygons(a)},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [16, 16, 8, 8], "area": 64,
             "iscrowd": 0, "segmentation": M.encode(b)},
        ],
    }  # fmt: skip
    shifted = _square(h, w, 20, 16, 8)  # IoU with b: 32 / 96
    preds = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8], "score": 0.9,
         "segmentation": M.encode(a)},
        {"image_id": 1, "category_id": 1, "bbox": [20, 16, 8, 8], "score": 0.8,
         "segmentation": M.encode(shifted)},
    ]  # fmt: skip
    return gt, preds


def test_segm_metrics_known_answer_and_equal_to_pycocotools():
    gt, preds = _segm_case()
    ours = evaluate_detections(gt, preds, score_threshold=0.5, max_dets=100)
    # one object found exactly, the other at IoU 1/3: AP@.5 = 51 of COCO's 101 recall points
    assert ours["segm_map_50"] == pytest.approx(51 / 101, abs=1e-6)
    assert ours["segm_iou_per_prediction"] == pytest.approx((1 + 1 / 3) / 2)
    assert ours["segm_iou_per_gt"] == pytest.approx((1 + 1 / 3) / 2)
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes([{k: v for k, v in p.items() if k != "bbox"} for p in preds])
    ev = COCOeval(coco_gt, coco_dt, iouType="segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    for i, key in enumerate(["segm_map", "segm_map_50", "segm_map_75", "segm_map_small"]):
        assert ours[key] == pytest.approx(ev.stats[i], abs=1e-6), key
    pyc = evaluate_detections(gt, preds, max_dets=100, backend="pycocotools")
    assert pyc["segm_map"] == pytest.approx(ours["segm_map"], abs=1e-6)


def test_mask_metrics_judge_masks_not_boxes():
    gt, preds = _segm_case()
    preds[1]["bbox"] = [16, 16, 8, 8]  # the right box around a wrong mask
    out = evaluate_detections(gt, preds, max_dets=100)
    assert out["map_50"] == pytest.approx(1.0, abs=1e-6)
    assert out["segm_map_50"] == pytest.approx(51 / 101, abs=1e-6)


# ------------------------------------------------------------------------------ sliced masks
class _TileModel(nn.Module):
    """Finds the bright pixels of each tile as one detection with their mask; the more of the
    object a tile sees, the higher the score (so the whole view leads the merge)."""

    def forward(self, images):
        outs = []
        for im in images:
            m = im[0] > 0.5
            if not m.any():
                outs.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                             "labels": torch.zeros(0, dtype=torch.int64),
                             "masks": torch.zeros(0, 1, *m.shape)})  # fmt: skip
                continue
            ys, xs = torch.nonzero(m, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]).float()
            outs.append({"boxes": box, "scores": torch.tensor([0.5 + float(m.sum()) / 1000]),
                         "labels": torch.tensor([1]), "masks": m[None, None].float()})  # fmt: skip
        return outs


def test_sliced_prediction_pastes_tile_masks_into_one_object():
    image = torch.zeros(1, 64, 64)
    image[0, 20:30, 24:40] = 1.0  # one object cut by tile edges: parts seen by three tiles
    cfg = SliceConfig(enabled=True, tile_size=32, overlap=16, include_full_image=False,
                      iou_threshold=0.1)  # fmt: skip
    out = sliced_predict(_TileModel(), image, cfg)
    assert len(out["boxes"]) == 1 and len(out["rles"]) == 1
    assert out["boxes"][0].tolist() == [24.0, 20.0, 40.0, 30.0]
    assert np.array_equal(M.decode(out["rles"][0], 64, 64), (image[0] > 0.5).numpy())


# ------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    sample = {"min_objects": 3, "max_objects": 6, "min_side": 8, "max_side": 16}
    generate_sample_dataset(
        root, num_images=8, image_size=96, write_splits=True, segmentation=True, **sample
    )
    coco = CocoDataset.from_dir(root)
    defaults = yaml.safe_load(open("conf/base/parameters_experiments.yml"))["experiment_defaults"]
    cfg = resolve_experiment(
        "masks", defaults,
        {"training": {"epochs": 2, "batch_size": 2, "warmup_iters": 0}}, compute_stats(coco),
    )  # fmt: skip
    model_file, history = train_experiment(coco, cfg, root / "ckpt")
    metrics, predictions = evaluate_experiment(model_file, coco, cfg)
    return coco, cfg, history, metrics, predictions, model_file


def test_auto_task_trains_mask_rcnn_and_the_mask_loss_falls(trained):
    _, cfg, history, _, _, _ = trained
    assert cfg["model"]["task"] == "instance_segmentation"
    assert "every one of the" in cfg["derived"]["task"]["why"]
    assert history[1]["train_loss_mask"] < history[0]["train_loss_mask"]
    assert "segm_map_50" in history[-1]


def test_predictions_carry_rle_masks_that_pycocotools_loads(trained):
    coco, _, _, metrics, predictions, _ = trained
    assert predictions and all(p["segmentation"]["counts"] for p in predictions)
    for key in ("segm_map", "segm_map_50", "segm_map_small", "map_50"):
        assert key in metrics
    test_ids = coco.splits["test"]
    gt = COCO()
    gt.dataset = copy.deepcopy(coco.to_coco_dict(test_ids))
    gt.createIndex()
    loaded = gt.loadRes([{k: v for k, v in p.items() if k != "bbox"} for p in predictions])
    ann = loaded.anns[1]
    assert ann["area"] == mask_utils.area(ann["segmentation"]) > 0


def test_boxes_only_data_stays_detection():
    defaults = {"model": {}, "training": {}}
    cfg = resolve_experiment("b", defaults, None, {"masks": {"objects": 10, "with_mask": 7}})
    assert cfg["model"]["task"] == "detection"
    assert "7 of 10" in cfg["derived"]["task"]["why"]


@pytest.mark.parametrize("sliced", [False, True])
def test_predict_writes_rle_masks_whole_and_sliced(trained, tmp_path, sliced):
    coco, model_file = trained[0], trained[-1]
    path = tmp_path / "model.pt"
    save_checkpoint(model_file, path)
    slicing = {"enabled": sliced, "tile_size": 48, "overlap": 8}
    out = predict_folder(str(path), coco.root / "images", score_threshold=0.0, slicing=slicing)
    images = {img["id"]: img for img in out["images"]["images"]}
    assert out["predictions"] and all(img["sliced"] is sliced for img in images.values())
    for p in out["predictions"][:20]:
        img = images[p["image_id"]]
        assert p["segmentation"]["size"] == [img["height"], img["width"]]
        assert M.decode(p["segmentation"], img["height"], img["width"]).shape == (96, 96)
    assert out["drawings"]


# ------------------------------------------------------------------------------ bad inputs
BAD_SEGMENTATIONS = {
    "nan": ([[10, 10, float("nan"), 10, 30, 30]], "holds nan"),
    "inf": ([[10, 10, float("inf"), 10, 30, 30]], "holds inf"),
    "strings": ([["10", "10", "30", "10", "30", "30"]], "holds '10' \\(str\\)"),
    "bools": ([[True, 10, 30, 10, 30, 30]], "holds True \\(bool\\)"),
    "too deep": ([[[10, 10], [30, 10], [30, 30]]], "holds \\[10, 10\\] \\(list\\)"),
    "flat": ([10, 10, 30, 10, 30, 30], "part 0 is 10, not a list"),
    "huge coordinate": ([[1e12, 10, 30, 10, 30, 30]], "within \\+-1e\\+06 px"),  # segfaulted
    "corrupt string": ({"size": [64, 64], "counts": "!!garbage~~"}, "not a valid COCO RLE"),
    "short string": ({"size": [64, 64], "counts": "zz"}, "not a valid COCO RLE"),
    "counts sum": ({"size": [64, 64], "counts": [10, 20]}, "sum to 30, not"),
    "string sum": ({"size": [64, 64], "counts": "02"}, "compressed RLE counts sum to 2"),
    "float size": ({"size": [64.0, 64.0], "counts": [4096]}, "two non-negative integers"),
    "negative size": ({"size": [-64, 64], "counts": [0]}, "two non-negative integers"),
    "bool size": ({"size": [True, True], "counts": [1]}, "two non-negative integers"),
    "no counts": ({"size": [64, 64]}, "'counts' must be a string or a list"),
    "a string": ("abc", "polygons \\(a list\\) or RLE \\(a dict\\)"),
    "a number": (5, "polygons \\(a list\\) or RLE \\(a dict\\)"),
}


@pytest.mark.parametrize("case", BAD_SEGMENTATIONS)
def test_a_malformed_segmentation_is_named_never_decoded(case):
    seg, message = BAD_SEGMENTATIONS[case]
    with pytest.raises(ValueError, match=message):
        M.segmentation_kind(seg)
    assert M.mask_facts(seg, 64, 64, [10, 10, 20, 20])["error"]
    with pytest.raises(ValueError, match=f"annotation id 7: segmentation: .*{message}"):
        M.image_masks([{"id": 7, "segmentation": seg}], 64, 64)


def test_compressed_rle_strings_parse_as_pycocotools_writes_them():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        rle = M.encode(mask)
        runs = M._string_counts(rle["counts"])
        assert sum(runs) == h * w and sum(runs[1::2]) == mask.sum()
        assert M.segmentation_kind(rle) == M.RLE


def test_a_polygon_of_empty_parts_is_reported_not_a_crash():
    facts = M.mask_facts([[]], 64, 64, [0, 0, 4, 4])  # numpy's zero-size error before
    assert facts["min_points"] == 0 and facts["mask_area"] == 0 and facts["outside_px"] == 0.0
    assert M.mask_facts([[], [10, 10, 20, 10, 20, 20]], 64, 64, [10, 10, 10, 10])["mask_area"]


def test_validation_names_bad_segmentations_drop_removes_them_and_crowd_rle_stays(tmp_path):
    generate_sample_dataset(tmp_path, num_images=2, image_size=64, min_objects=4, max_objects=4,
                            min_side=8, max_side=12, segmentation=True)  # fmt: skip
    data = json.loads((tmp_path / "annotations.json").read_text())
    bad = {1: [[]], 2: BAD_SEGMENTATIONS["corrupt string"][0], 3: [[1e12, 10, 30, 10, 30, 30]],
           4: "abc", 5: {"size": [32, 128], "counts": [4096]}}  # fmt: skip
    for ann_id, seg in bad.items():
        data["annotations"][ann_id - 1]["segmentation"] = seg
    crowd = data["annotations"][5]
    crowd.update(iscrowd=1, bbox=[0, 0, 10, 10], segmentation=M.encode(_square(64, 64, 0, 0, 10)))
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    coco = CocoDataset.from_dir(tmp_path)
    outcome = validate_dataset(coco)
    failing = {i for c in outcome.failed for i in c.annotation_ids}
    assert failing == set(bad), outcome.summary()
    assert "annotation id 2 (image id 1): segmentation RLE 'counts' is not" in outcome.summary()
    kept, _ = apply_policy(coco, outcome, "drop")
    kept_ids = {a["id"] for a in kept.annotations}
    assert kept_ids.isdisjoint(bad) and crowd["id"] in kept_ids
    ds = DetectionDataset(kept, [img["id"] for img in kept.images], masks=True)
    for i in range(len(ds)):
        _, target = ds[i]
        assert len(target["masks"]) == len(target["boxes"])


def test_the_dataset_names_the_annotation_whose_segmentation_does_not_decode(tmp_path):
    generate_sample_dataset(tmp_path, num_images=1, image_size=64, min_objects=2, max_objects=2,
                            min_side=8, max_side=12, segmentation=True)  # fmt: skip
    coco = CocoDataset.from_dir(tmp_path)
    ann = coco.annotations_by_image[1][1]
    ann["segmentation"] = {"size": [64, 64], "counts": "zz"}
    with pytest.raises(
        Exception, match=f"image id 1, annotation id {ann['id']}: segmentation: RLE"
    ):
        DetectionDataset(coco, [1], masks=True)[0]


def test_explicit_masks_on_a_mixed_dataset_are_refused_when_resolved(tmp_path):
    generate_sample_dataset(tmp_path, num_images=6, image_size=64, min_objects=2, max_objects=2,
                            min_side=8, max_side=12, segmentation=True,
                            write_splits=True)  # fmt: skip
    coco = CocoDataset.from_dir(tmp_path)
    ann = coco.annotations_by_image[coco.splits["val"][0]][0]
    ann["segmentation"] = []  # a validation object without mask: training validates on masks
    stats = compute_stats(coco)
    defaults = {"model": {}, "training": {}}
    cfg = resolve_experiment("a", defaults, None, stats)
    assert cfg["model"]["task"] == "detection"
    assert f"(annotation ids [{ann['id']}])" in cfg["derived"]["task"]["why"]
    with pytest.raises(
        Exception, match=f"1 of 12 objects have none \\(annotation ids \\[{ann['id']}"
    ):
        resolve_experiment("a", {"model": MASKS, "training": {}}, None, stats)


def test_an_object_left_with_no_mask_pixel_is_dropped_by_a_crop_and_by_a_tile():
    import albumentations as A

    ell = np.zeros((64, 64), np.uint8)
    ell[10:13, 10:40] = 1
    ell[10:40, 10:13] = 1  # an L: its box's bottom-right corner holds none of it
    other = _square(64, 64, 44, 44, 8)
    crop = A.Compose(
        [A.Crop(x_min=30, y_min=30, x_max=64, y_max=64)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
    )
    boxes = np.array([[10, 10, 40, 40], [44, 44, 52, 52]], np.float32)
    _, boxes, labels, masks = apply_transform_with_masks(
        crop, np.zeros((64, 64), np.uint8), boxes, np.array([1, 2]), np.stack([ell, other])
    )
    assert labels.tolist() == [2] and masks.shape == (1, 34, 34) and masks[0].sum() == 64
    for seg in (mask_polygons(ell), M.encode(ell)):
        ann = {"id": 1, "bbox": [10, 10, 30, 30], "category_id": 1, "segmentation": seg}
        assert clip_annotation(ann, (30, 30, 32, 32), 0.0) is None
        assert clip_annotation({**ann, "iscrowd": 1}, (30, 30, 32, 32), 0.0) is not None
        assert clip_annotation(ann, (0, 0, 32, 32), 0.0) is not None


def test_zero_detections_give_no_masks_and_zero_segm_metrics():
    from smallobj_pipeline.detection.evaluation.metrics import predictions_to_coco

    empty = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0),
             "labels": torch.zeros(0, dtype=torch.int64)}  # fmt: skip
    assert predictions_to_coco([{**empty, "masks": torch.zeros((0, 1, 64, 64))}], [1], {1: 1}) == []

    class Nothing(nn.Module):
        def forward(self, images):
            return [{**empty, "masks": torch.zeros((0, 1, *i.shape[-2:]))} for i in images]

    out = sliced_predict(Nothing(), torch.zeros((1, 64, 64)), SliceConfig(tile_size=32, overlap=8))
    assert len(out["boxes"]) == 0 and predictions_to_coco([out], [1], {1: 1}) == []
    seg = M.encode(_square(64, 64, 0, 0, 8))
    gt = {"images": [{"id": 1, "width": 64, "height": 64}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8],
                           "area": 64, "segmentation": seg}]}  # fmt: skip
    metrics = evaluate_detections(gt, [], segm=True)
    assert metrics["segm_map"] == 0.0 and metrics["segm_iou_per_gt"] == 0.0
