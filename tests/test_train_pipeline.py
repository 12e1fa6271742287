"""The main job end to end through Kedro on a tiny generated dataset: every declared experiment
is trained and evaluated, and the per-experiment and cross-experiment outputs of the spec exist."""

import json

import pandas as pd
import pytest
from kedro_project import make_project, run_pipeline

from smallobj_pipeline.detection.checkpoint import load_checkpoint
from smallobj_pipeline.detection.engine.experiment import load_model

SPEC_METRICS = {
    "map",
    "map_50",
    "map_75",
    "map_small",
    "iou_per_prediction",
    "iou_per_gt",
    "precision",
    "recall",
    "params_total",
    "params_trainable",
    "best_epoch",
    "epochs_run",
    "train_seconds",
    "seconds_per_epoch",
    "infer_ms_per_image",
}

TINY = {
    "dataset": {
        "root": "data/01_raw/sample",
        "sample": {
            "root": "data/01_raw/sample",
            "num_images": 8,
            "image_size": 96,
            "seed": 2,
            "min_objects": 3,
            "max_objects": 6,
            "segmentation": True,  # polygons: tiny_a (task auto) trains Mask R-CNN
        },
    },
    "split": {"use_existing": True, "seed": 1, "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
    "experiments": {
        "tiny_a": {"training": {"epochs": 2}},
        "tiny_b": {
            "model": {"task": "detection", "variant": "v2"},
            "small_object_defaults": {"anchors": False},
        },
        "tiny_budget": {
            "model": {"task": "detection"},
            "training": {"epochs": 1, "time_budget": "15s"},
        },
    },
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("train"), TINY)
    # quick settings layered on the real defaults (local env overrides base key by key below)
    defaults = __import__("yaml").safe_load(
        (project / "conf/base/parameters_experiments.yml").read_text()
    )
    defaults["experiment_defaults"]["training"].update(
        {"epochs": 1, "batch_size": 2, "warmup_iters": 0, "log_every": 1}
    )
    defaults["experiment_defaults"]["model"].update(
        {"box_batch_size_per_image": 32, "rpn_post_nms_top_n_test": 100}
    )
    defaults.pop("experiments")
    local = project / "conf/local/parameters.yml"
    merged = {**__import__("yaml").safe_load(local.read_text()), **defaults}
    local.write_text(__import__("yaml").safe_dump(merged))
    run_pipeline(project, "train")
    return project


def test_each_experiment_has_its_outputs(trained):
    for name, epochs in (("tiny_a", 2), ("tiny_b", 1)):
        metrics = json.loads((trained / f"data/08_reporting/{name}/metrics.json").read_text())
        assert SPEC_METRICS <= set(metrics), SPEC_METRICS - set(metrics)
        assert metrics["epochs_run"] == epochs and metrics["params_total"] > 1e7
        history = pd.read_csv(trained / f"data/08_reporting/{name}/history.csv")
        assert list(history["epoch"]) == list(range(1, epochs + 1))
        assert {"train_loss", "val_loss", "map_50", "iou_per_prediction", "iou_per_gt"} <= set(
            history.columns
        )
        preds = json.loads((trained / f"data/07_model_output/{name}/predictions.json").read_text())
        assert isinstance(preds, list)
        assert all(p["category_id"] in (1, 2) for p in preds)
        model_file = load_checkpoint(trained / f"data/06_models/{name}/model.pt")  # weights_only
        model = load_model(model_file)
        assert model_file["model_config"]["variant"] == ("v2" if name == "tiny_b" else "v1")
        assert sum(p.numel() for p in model.parameters()) == metrics["params_total"]


def test_polygons_train_mask_rcnn_with_no_setting_changed(trained):
    config = json.loads((trained / "data/06_models/tiny_a/config.json").read_text())
    assert config["model"]["task"] == "instance_segmentation"
    assert config["derived"]["task"]["value"] == "instance_segmentation"
    metrics = json.loads((trained / "data/08_reporting/tiny_a/metrics.json").read_text())
    assert {"segm_map", "segm_map_50", "segm_map_small", "map", "map_50"} <= set(metrics)
    history = pd.read_csv(trained / "data/08_reporting/tiny_a/history.csv")
    assert {"train_loss_mask", "segm_map_50"} <= set(history.columns)
    preds = json.loads((trained / "data/07_model_output/tiny_a/predictions.json").read_text())
    assert preds and all(set(p["segmentation"]) == {"size", "counts"} for p in preds)
    table = pd.read_csv(trained / "data/08_reporting/experiments.csv").set_index("experiment")
    assert table.loc["tiny_a", "task"] == "instance_segmentation"
    assert table.loc["tiny_b", "task"] == "detection" and pd.isna(
        table.loc["tiny_b", "test_segm_map"]
    )
    assert table.loc["tiny_a", "test_segm_map_50"] == metrics["segm_map_50"]
    assert (trained / "data/08_reporting/plots/curve_segm_map_50.png").is_file()


def test_time_budget_trains_that_long_and_no_longer(trained):
    metrics = json.loads((trained / "data/08_reporting/tiny_budget/metrics.json").read_text())
    history = pd.read_csv(trained / "data/08_reporting/tiny_budget/history.csv")
    assert metrics["stopped_by"] == "time_budget" and metrics["time_budget"] == 15
    assert metrics["epochs_run"] > 1  # `epochs: 1` is ignored: the budget decides
    # stops before a step (and the last validation) that would end past the budget
    assert 15 - history["epoch_seconds"].max() <= metrics["train_seconds"] <= 15 + 2.0
    table = pd.read_csv(trained / "data/08_reporting/experiments.csv").set_index("experiment")
    assert table.loc["tiny_budget", "stopped_by"] == "time_budget"


def test_derived_small_object_defaults_are_saved(trained):
    a = json.loads((trained / "data/06_models/tiny_a/config.json").read_text())
    b = json.loads((trained / "data/06_models/tiny_b/config.json").read_text())
    assert "anchor_sizes" in a["derived"] and a["model"]["anchor_sizes"] != [32, 64, 128, 256, 512]
    assert "anchor_sizes" not in b["derived"]


def test_cross_experiment_table_and_report(trained):
    table = pd.read_csv(trained / "data/08_reporting/experiments.csv")
    assert sorted(table["experiment"]) == ["tiny_a", "tiny_b", "tiny_budget"]
    html_text = (trained / "data/08_reporting/report.html").read_text()
    for section in ("comparison", "curves", "pr", "predictions", "dataset", "augmentation"):
        assert f"id='{section}'" in html_text, section
    assert (trained / "data/08_reporting/plots/curve_map_50.png").is_file()


def test_one_namespace_reruns_alone_and_report_rebuilds(trained):
    before = (trained / "data/08_reporting/tiny_b/metrics.json").stat().st_mtime_ns
    before_a = (trained / "data/08_reporting/tiny_a/metrics.json").stat().st_mtime_ns
    run_pipeline(trained, "train", namespaces=["tiny_a"])
    assert (trained / "data/08_reporting/tiny_b/metrics.json").stat().st_mtime_ns == before
    assert (trained / "data/08_reporting/tiny_a/metrics.json").stat().st_mtime_ns > before_a
    (trained / "data/08_reporting/report.html").unlink()
    run_pipeline(trained, "report")
    assert "tiny_a" in (trained / "data/08_reporting/report.html").read_text()
