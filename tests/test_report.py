"""The report builds from fabricated outputs (read as the catalog reads them), contains every
section, and fails clearly on bad files."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError as KedroDatasetError
from PIL import Image

from smallobj_pipeline.datasets import FigureDataset, PartitionsDataset
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.errors import DatasetError
from smallobj_pipeline.detection.reporting import report as rep
from smallobj_pipeline.pipelines.reporting.nodes import build_report, collect_experiments


def _tiny_coco(root):
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(1, 4):
        arr = np.full((64, 64), 40, np.uint8)
        arr[10:20, 10:20] = 220
        Image.fromarray(arr).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"images/{i}.png", "width": 64, "height": 64})
        anns.append(
            {
                "id": i,
                "image_id": i,
                "category_id": 5,
                "bbox": [10, 10, 10, 10],
                "area": 100,
                "iscrowd": 0,
            }
        )
    coco = {"images": images, "annotations": anns, "categories": [{"id": 5, "name": "dot"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    (root / "test.json").write_text(json.dumps({**coco, "images": images[1:]}))
    (root / "train.json").write_text(json.dumps({**coco, "images": images[:1]}))


def _fabricate(tmp_path):
    rdir, mdir, pdir = (
        tmp_path / "08_reporting",
        tmp_path / "06_models",
        tmp_path / "07_model_output",
    )
    for name, with_val_loss in (("exp_a", True), ("exp_b", False)):
        (rdir / name).mkdir(parents=True)
        (mdir / name).mkdir(parents=True)
        (pdir / name).mkdir(parents=True)
        hist = pd.DataFrame(
            {
                "epoch": [1, 2, 3],
                "train_loss": [2.0, 1.5, 1.2],
                "map_50": [0.1, 0.4, 0.3],
                "map": [0.05, 0.2, 0.15],
                "iou_per_prediction": [0.3, 0.5, 0.55],
                "iou_per_gt": [0.2, 0.4, 0.45],
            }
        )
        if with_val_loss:
            hist["val_loss"] = [2.1, 1.7, 1.6]
        hist.to_csv(rdir / name / "history.csv", index=False)
        metrics = {
            "map": 0.2,
            "map_50": 0.45,
            "map_small": 0.1,
            "params_total": 28_270_000,
            "params_trainable": 28_000_000,
            "epochs_run": 3,
            "seconds_per_epoch": 1.5,
            "pr_curve": {"recall": [0.0, 0.5, 1.0], "precision": [1.0, 0.8, None]},
        }
        (rdir / name / "metrics.json").write_text(json.dumps(metrics))
        (mdir / name / "config.json").write_text(
            json.dumps({"model": {"backbone": "resnet18", "variant": "v1"}})
        )
        (pdir / name / "predictions.json").write_text(
            json.dumps([{"image_id": 2, "category_id": 5, "bbox": [11, 10, 10, 10], "score": 0.9}])
        )
    return rdir, mdir, pdir


def _saved(rdir, mdir, pdir):
    """The experiments' saved outputs as the catalog's experiment_* entries load them (lazily)."""

    def parts(path, dataset, suffix):
        return PartitionsDataset(path=str(path), dataset=dataset, filename_suffix=suffix).load()

    return [
        parts(rdir, "smallobj_pipeline.datasets.JSONDataset", "/metrics.json"),
        parts(rdir, "smallobj_pipeline.datasets.CSVDataset", "/history.csv"),
        parts(mdir, "smallobj_pipeline.datasets.JSONDataset", "/config.json"),
        parts(pdir, "smallobj_pipeline.datasets.JSONDataset", "/predictions.json"),
    ]


def _report(tmp_path, rdir, mdir, pdir, plots=None, fresh=None):
    """collect_experiments + build_report as the report pipeline runs them."""
    reporting = {"example_images": 2, "score_threshold": 0.5}
    names = tuple(fresh or {})
    values = [v for name in names for v in fresh[name]]
    runs = collect_experiments(reporting, *_saved(rdir, mdir, pdir), *values, names=names)
    coco_dir = tmp_path / "coco"
    coco = (
        CocoDataset.from_dir(coco_dir)
        if coco_dir.is_dir()
        else CocoDataset(root=str(coco_dir), images=[], annotations=[], categories=[])
    )
    plots = {
        "dataset_stats": None,
        "augmentation_preview": None,
        "pretrain_history": None,
        **(plots or {}),
    }
    return build_report(runs, reporting, {}, coco, *plots.values())


def test_report_from_two_experiments_one_without_val_loss(tmp_path):
    rdir, mdir, pdir = _fabricate(tmp_path)
    _tiny_coco(tmp_path / "coco")
    aug = tmp_path / "aug.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(aug)
    preview = FigureDataset(filepath=str(aug)).load()
    table, html_text, plots = _report(tmp_path, rdir, mdir, pdir, {"augmentation_preview": preview})

    assert list(table["experiment"]) == ["exp_a", "exp_b"]
    # best validation map_50 is the max over epochs (0.4 at epoch 2), not the last value
    assert (
        table.loc[0, "best_val_map_50"] == pytest.approx(0.4)
        and table.loc[0, "best_val_epoch"] == 2
    )
    assert table.loc[0, "params_total_M"] == pytest.approx(28.27)
    for section in ("comparison", "curves", "pr", "predictions", "augmentation"):
        assert f"id='{section}'" in html_text, section
    # every metric curve is there; val_loss notes the experiment that did not record it
    assert {
        f"curve_{k}"
        for k in ("train_loss", "val_loss", "map_50", "map", "iou_per_prediction", "iou_per_gt")
    } <= set(plots)
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html_text).replace(
        "charset", ""
    )
    assert html_text.count("data:image/png;base64,") >= 9


def test_this_runs_outputs_replace_their_saved_copies_and_text_is_escaped(tmp_path):
    """The train pipeline hands its experiments' outputs in directly; saved ones fill the rest.
    Every text reaches the page escaped (the template's autoescape)."""
    rdir, mdir, pdir = _fabricate(tmp_path)
    history = pd.DataFrame({"epoch": [1], "train_loss": [9.0], "map_50": [0.9]})
    fresh = {"exp_b": ({"map_50": 0.9}, history, {"model": {"backbone": "<b>x</b>"}}, [])}
    table, html_text, _ = _report(tmp_path, rdir, mdir, pdir, fresh=fresh)
    assert list(table["experiment"]) == ["exp_a", "exp_b"]
    assert table.loc[1, "test_map_50"] == 0.9 and table.loc[1, "backbone"] == "<b>x</b>"
    assert "&lt;b&gt;x&lt;/b&gt;" in html_text and "<b>x</b>" not in html_text


def test_report_skips_missing_experiment_and_errors_when_none(tmp_path, caplog):
    rdir, mdir, pdir = _fabricate(tmp_path)
    (rdir / "exp_b" / "metrics.json").unlink()
    runs = rep.collect_runs(*_saved(rdir, mdir, pdir), experiments=["exp_a", "exp_b"])
    assert [r.name for r in runs] == ["exp_a"]
    assert "exp_b" in caplog.text and "metrics.json" in caplog.text
    with pytest.raises(DatasetError, match="no experiment outputs found under"):
        rep.collect_runs(*_saved(tmp_path / "empty", mdir, pdir))


def test_broken_png_is_named_in_the_error(tmp_path):
    broken = tmp_path / "stats.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(KedroDatasetError, match=r"stats\.png: not a valid PNG"):
        FigureDataset(filepath=str(broken)).load()  # as the report's embedded plots are loaded


def test_broken_history_csv_is_named(tmp_path):
    rdir, mdir, pdir = _fabricate(tmp_path)
    (rdir / "exp_a" / "history.csv").write_text("")
    with pytest.raises(DatasetError, match=r"exp_a/history\.csv"):
        rep.collect_runs(*_saved(rdir, mdir, pdir))
