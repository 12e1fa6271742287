"""Backbone pretraining without downloads: crops are cut correctly, the classification pipeline
runs on a tiny folder dataset, the backbone it saves loads into the detector (1-channel conv1 as
it is) and changes its weights; the from-scratch head init; experiments whose weight file is
missing are skipped by the registry with a clear warning."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from kedro_project import chdir, make_project, run_pipeline
from PIL import Image

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset
from smallobj_pipeline.detection.errors import ConfigError
from smallobj_pipeline.detection.modeling.factory import build_model
from smallobj_pipeline.detection.pretraining.config import PretrainConfig
from smallobj_pipeline.detection.pretraining.crops import crop_square, extract_crops, object_window
from smallobj_pipeline.detection.pretraining.io import load_backbone
from smallobj_pipeline.detection.pretraining.run import run_pretraining

SMALL = {"min_size": 96, "max_size": 96, "anchor_sizes": [8, 16, 32, 64, 128]}
TINY_SAMPLE = {
    "root": "data/01_raw/sample",
    "num_images": 8,
    "image_size": 96,
    "seed": 2,
    "min_objects": 3,
    "max_objects": 6,
}


def _hand_made_coco(root):
    """One 64x64 image: a bright 10x10 square in the middle, a 8x8 one in the bottom-left
    corner (its window must move inside the image), a crowd region to avoid."""
    (root / "images").mkdir(parents=True)
    arr = np.zeros((64, 64), np.uint8)
    arr[20:30, 24:34] = 255
    arr[56:64, 0:8] = 255
    Image.fromarray(arr).save(root / "images" / "a.png")
    coco = {
        "images": [{"id": 7, "file_name": "images/a.png", "width": 64, "height": 64}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "bbox": [24, 20, 10, 10],
                "area": 100,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 9,
                "bbox": [0, 56, 8, 8],
                "area": 64,
                "iscrowd": 0,
            },
            {
                "id": 3,
                "image_id": 7,
                "category_id": 3,
                "bbox": [48, 0, 16, 12],
                "area": 192,
                "iscrowd": 1,
            },
        ],
        "categories": [{"id": 3, "name": "square"}, {"id": 9, "name": "corner"}],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    return CocoDataset.from_dir(root)


def _intersection(window, box_xywh) -> float:
    x0, y0, x1, y1 = window
    bx, by, bw, bh = box_xywh
    return max(0.0, min(x1, bx + bw) - max(x0, bx)) * max(0.0, min(y1, by + bh) - max(y0, by))


def test_crops_contain_their_box_and_background_overlaps_no_box(tmp_path):
    coco = _hand_made_coco(tmp_path / "hand")
    crops = extract_crops(coco, crop_size=16, context=0.5, background_ratio=3.0, seed=0)
    assert crops.classes == ["background", "square", "corner"]
    objects = [i for i, k in enumerate(crops.kinds) if k == "object"]
    assert len(objects) == 2  # the crowd region gives no object crop
    middle, corner = objects
    # the middle square: window = 10 x (1 + 2 x 0.5) = 20 px, centred, the square fills its centre
    assert tuple(crops.windows[middle]) == (19, 15, 39, 35) and crops.labels[middle] == 1
    assert crops.images[middle].shape == (16, 16)
    assert crops.images[middle][8, 8] == 255 and crops.images[middle][0, 0] == 0
    # the corner square: its window is moved inside the image and still contains it
    assert tuple(crops.windows[corner][[0, 3]]) == (0, 64) and crops.labels[corner] == 2
    assert crops.images[corner][-2, 1] == 255

    backgrounds = [i for i, k in enumerate(crops.kinds) if k == "background"]
    assert len(backgrounds) >= 4 and all(crops.labels[i] == 0 for i in backgrounds)
    for i in backgrounds:
        window = crops.windows[i]
        assert window[0] >= 0 and window[1] >= 0 and window[2] <= 64 and window[3] <= 64
        assert all(_intersection(window, a["bbox"]) == 0 for a in coco.annotations), (
            window
        )  # crowd included
        assert crops.images[i].max() == 0  # nothing of a box in it

    # the generated sample: every object crop contains its box, no background crop overlaps one
    sample = CocoDataset.from_dir(
        generate_sample_dataset(
            tmp_path / "sample", num_images=4, image_size=96, seed=1, min_objects=6, max_objects=12
        )
    )
    crops = extract_crops(sample, crop_size=32, context=0.25, background_ratio=0.5, seed=3)
    anns = {a["id"]: a for a in sample.annotations}
    assert crops.kinds.count("object") == len(sample.annotations)
    assert crops.kinds.count("background") > 0
    for window, kind, ann_id, image_id, label, image in zip(
        crops.windows,
        crops.kinds,
        crops.ann_ids,
        crops.image_ids,
        crops.labels,
        crops.images,
        strict=True,
    ):
        assert image.shape == (32, 32) and image.dtype == np.uint8
        if kind == "object":
            x, y, w, h = anns[ann_id]["bbox"]
            assert window[0] <= x and window[1] <= y and window[2] >= x + w and window[3] >= y + h
            assert label == sample.label_of_category[anns[ann_id]["category_id"]]
        else:
            assert all(
                _intersection(window, a["bbox"]) == 0 for a in sample.annotations_by_image[image_id]
            )
    again = extract_crops(sample, crop_size=32, context=0.25, background_ratio=0.5, seed=3)
    assert np.array_equal(again.windows, crops.windows)  # seeded
    capped = extract_crops(sample, crop_size=32, crops_per_image=2, background_ratio=0.0, seed=3)
    assert capped.classes == ["ring", "cross"] and len(capped) == 2 * len(sample.images)


def test_window_and_crop_helpers():
    assert object_window([10, 10, 4, 4], 100, 100, context=0.0, min_side=8) == (8, 8, 8)
    # larger than the image: centred on the box, padded with zeros
    x0, y0, side = object_window([0, 0, 20, 20], 20, 20, context=0.5, min_side=8)
    assert side == 40 and x0 == -10 and x0 + side >= 20
    image = np.full((10, 10), 7, np.uint8)
    out = crop_square(image, -2, -2, 6, 6)
    assert (out[:2] == 0).all() and (out[:, :2] == 0).all() and (out[2:, 2:] == 7).all()
    with pytest.raises(ConfigError, match="at least 2 classes"):
        coco = CocoDataset(root=".", images=[], annotations=[], categories=[{"id": 1, "name": "a"}])
        extract_crops(coco, background_ratio=0.0)
    with pytest.raises(ConfigError, match="unknown setting"):
        PretrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="folder_root"):
        PretrainConfig.from_dict({"source": "folder"})


def test_crops_source_trains_and_saves(tmp_path):
    coco = CocoDataset.from_dir(
        generate_sample_dataset(
            tmp_path / "sample", num_images=3, image_size=64, seed=4, min_objects=4, max_objects=8
        )
    )
    history, summary = run_pretraining(
        {
            "name": "tiny",
            "crop_size": 16,
            "epochs": 1,
            "batch_size": 8,
            "output_dir": str(tmp_path / "bb"),
            "log_every": 100,
        },
        coco,
    )
    assert (
        len(history) == 1 and "val_accuracy" not in history[0]
    )  # no val split: training crops only
    assert summary["train_crops"]["background"] > 0 and summary["file"].endswith("tiny.pt")
    saved = load_backbone(tmp_path / "bb" / "tiny.pt")
    assert saved["classes"] == ["background", "ring", "cross"] and saved["in_channels"] == 1


def _folder_dataset(root):
    """Two classes, told apart by texture; sizes differ (resized to crop_size)."""
    rng = np.random.default_rng(0)
    for name, (lo, hi) in (("dark", (0, 90)), ("bright", (150, 255))):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(lo, hi, size=(20 + i, 24), dtype=np.uint8)).save(
                root / name / f"{i}.png"
            )
    (root / "bright" / "notes.txt").write_text("not an image")


def test_folder_pipeline_saves_a_backbone_that_loads_into_the_detector(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    folder = tmp_path / "folder"
    _folder_dataset(folder)
    project = make_project(
        tmp_path,
        {
            "dataset": {"root": "data/01_raw/sample", "sample": TINY_SAMPLE},
            "pretrain": {
                "name": "gray_r18",
                "arch": "resnet18",
                "in_channels": 1,
                "source": "folder",
                "folder_root": str(folder),
                "crop_size": 32,
                "epochs": 2,
                "batch_size": 4,
                "lr": 0.01,
                "val_fraction": 0.34,
                "log_every": 1,
                "output_dir": "data/06_models/backbones",
            },
        },
    )
    run_pipeline(project, "pretrain_backbone")

    history = pd.read_csv(project / "data/08_reporting/pretrain/history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert {
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "val_accuracy_bright",
    } <= set(history)
    assert history["val_accuracy"].between(0, 1).all()
    summary = json.loads((project / "data/08_reporting/pretrain/summary.json").read_text())
    assert summary["classes"] == ["bright", "dark"] and summary["train_images"] == {
        "bright": 4,
        "dark": 4,
    }
    assert (project / "data/08_reporting/plots/pretrain_history.png").stat().st_size > 1000

    path = project / "data/06_models/backbones/gray_r18.pt"
    saved = load_backbone(path)  # weights_only
    state = saved["model"]
    assert not any(k.startswith("fc.") for k in state) and "layer4.1.bn2.running_var" in state
    assert tuple(state["conv1.weight"].shape) == (64, 1, 7, 7)
    assert saved["arch"] == "resnet18" and len(saved["history"]) == 2

    torch.manual_seed(0)
    scratch = build_model({"backbone": "resnet18", "pretrained": "none", "norm": "bn", **SMALL}, 1)
    with chdir(project):  # found by bare name in data/06_models/backbones
        torch.manual_seed(0)
        model = build_model(
            {
                "backbone": "resnet18",
                "pretrained": "backbone",
                "weights_path": "gray_r18",
                "in_channels": 1,
                "norm": "bn",
                "trainable_layers": 5,
                **SMALL,
            },
            1,
        )
        frozen = build_model(
            {
                "backbone": "resnet18",
                "pretrained": "backbone",
                "weights_path": "gray_r18",
                "trainable_layers": 0,
                **SMALL,
            },
            1,
        )
    body = model.backbone.body.state_dict()
    for key, value in state.items():
        assert torch.equal(body[key], value), key
    assert model.smallobj_weights["conv1"] is None  # 1-channel conv1 loaded as it is, not adapted
    changed = [
        k
        for k, v in scratch.backbone.body.state_dict().items()
        if k in state and not k.endswith("num_batches_tracked") and not torch.equal(v, body[k])
    ]
    assert len(changed) > 50  # the pretrained weights replaced the random initialisation
    assert not frozen.backbone.body.conv1.weight.requires_grad  # not adapted: frozen like the rest
    assert torch.equal(
        frozen.backbone.body.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"]
    )


def test_normal_head_init():
    torch.manual_seed(0)
    model = build_model({"backbone": "resnet18", "norm": "gn", "head_init": "normal", **SMALL}, 2)
    predictor = model.roi_heads.box_predictor
    assert float(predictor.cls_score.weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    assert float(predictor.bbox_pred.weight.detach().std()) == pytest.approx(0.001, rel=0.1)
    assert torch.all(predictor.cls_score.bias == 0) and torch.all(predictor.bbox_pred.bias == 0)
    assert float(model.rpn.head.cls_logits.weight.detach().std()) == pytest.approx(0.01, rel=0.2)


def test_registry_skips_experiments_whose_weights_are_missing(tmp_path, monkeypatch, caplog):
    from smallobj_pipeline.experiments import experiment_names

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    project = make_project(
        tmp_path,
        {
            "experiments": {
                "full_missing": {"model": {"backbone": "resnet50", "pretrained": "full"}},
                "scratch": {"model": {"pretrained": "none"}},
                "named_missing_skip": {
                    "model": {"pretrained": "backbone", "weights_path": "nowhere"},
                    "skip_if_weights_missing": True,
                },
                "named_missing_fails_later": {
                    "model": {"pretrained": "backbone", "weights_path": "nowhere"}
                },
                "full_present": {
                    "model": {
                        "backbone": "resnet50",
                        "pretrained": "full",
                        "weights_path": "present",
                    }
                },
            }
        },
    )
    (project / "data/06_models/backbones").mkdir(parents=True)
    (project / "data/06_models/backbones/present.pt").write_bytes(b"x")
    with chdir(project), caplog.at_level(logging.WARNING, logger="smallobj_pipeline.experiments"):
        names = experiment_names()
    assert sorted(names) == ["full_present", "named_missing_fails_later", "scratch"]
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "'full_missing' skipped" in text and "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in text
    assert str((tmp_path / "torch_home" / "hub" / "checkpoints").resolve()) in text
    assert "'named_missing_skip' skipped" in text and "nowhere" in text


def test_report_embeds_the_pretraining_curve_and_keeps_the_listed_experiments(tmp_path):
    from smallobj_pipeline.datasets import FigureDataset, PartitionsDataset
    from smallobj_pipeline.detection.pretraining.plots import plot_history
    from smallobj_pipeline.detection.reporting.report import figure_png
    from smallobj_pipeline.pipelines.reporting.nodes import build_report, collect_experiments

    rdir = tmp_path / "08_reporting"
    for name in ("exp_a", "exp_b"):
        (rdir / name).mkdir(parents=True)
        pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.0], "map_50": [0.1, 0.3]}).to_csv(
            rdir / name / "history.csv", index=False
        )
        (rdir / name / "metrics.json").write_text(
            json.dumps({"map_50": 0.3, "params_total": 1, "params_trainable": 1})
        )
    curve = tmp_path / "pretrain_history.png"
    curve.write_bytes(
        figure_png(
            plot_history(
                [
                    {
                        "epoch": 1,
                        "train_loss": 1.0,
                        "train_accuracy": 0.5,
                        "val_loss": 0.9,
                        "val_accuracy": 0.6,
                    },
                    {
                        "epoch": 2,
                        "train_loss": 0.5,
                        "train_accuracy": 0.8,
                        "val_loss": 0.6,
                        "val_accuracy": float("nan"),
                    },
                ]
            )
        )
    )
    saved = [  # as the catalog's experiment_* entries load them
        PartitionsDataset(path=str(folder), dataset=f"smallobj_pipeline.datasets.{kind}",
                          filename_suffix=suffix).load()
        for folder, kind, suffix in (
            (rdir, "JSONDataset", "/metrics.json"), (rdir, "CSVDataset", "/history.csv"),
            (tmp_path / "06_models", "JSONDataset", "/config.json"),
            (tmp_path / "07_model_output", "JSONDataset", "/predictions.json"),
        )
    ]  # fmt: skip
    reporting = {"experiments": ["exp_b"]}
    runs = collect_experiments(reporting, *saved)
    empty = CocoDataset(root=str(tmp_path / "none"), images=[], annotations=[], categories=[])
    pretrain_plot = FigureDataset(filepath=str(curve)).load()
    table, html_text, _ = build_report(runs, reporting, {}, empty, None, None, pretrain_plot)
    assert list(table["experiment"]) == ["exp_b"]
    assert "id='pretraining'" in html_text and "Backbone pretraining" in html_text
