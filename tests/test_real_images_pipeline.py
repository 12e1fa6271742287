"""A 16-bit colour TIFF dataset through the real Kedro pipelines: statistics, config, model file,
report and prediction all agree on what the model saw (range, channels), with no setting changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from kedro_project import make_project, run_pipeline

from smallobj_pipeline.detection.checkpoint import load_checkpoint

SIZE = 96


def _dataset(root: Path, n: int = 8) -> Path:
    """Colour 16-bit TIFFs whose signal uses only 300..3300 (a 12-bit camera): bright squares on a
    noisy background, one box each."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(1, n + 1):
        arr = rng.normal(600, 60, (SIZE, SIZE, 3))
        boxes = []
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(4, SIZE - 16, 2))
            arr[y : y + 10, x : x + 10] = rng.normal([3000, 1500, 800], 80, (10, 10, 3))
            boxes.append([x, y, 10, 10])
        tifffile.imwrite(root / f"images/{i}.tif", np.clip(arr, 300, 3300).astype(np.uint16))
        images.append({"id": i, "file_name": f"images/{i}.tif", "width": SIZE, "height": SIZE})
        for b in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": 5,
                    "bbox": b,
                    "area": 100,
                    "iscrowd": 0,
                }
            )
    data = {"images": images, "annotations": annotations, "categories": [{"id": 5, "name": "spot"}]}
    (root / "annotations.json").write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    root = _dataset(tmp / "tiffs")
    project = make_project(
        tmp,
        {
            "dataset": {"root": str(root)},
            "split": {
                "use_existing": True,
                "seed": 1,
                "ratios": {"train": 0.5, "val": 0.25, "test": 0.25},
            },
            "experiments": {"tiny": {}},
        },
    )
    defaults = yaml.safe_load((project / "conf/base/parameters_experiments.yml").read_text())
    defaults["experiment_defaults"]["training"].update(
        {"epochs": 1, "batch_size": 2, "warmup_iters": 0}
    )
    defaults["experiment_defaults"]["model"].update(
        {"box_batch_size_per_image": 32, "rpn_post_nms_top_n_test": 100}
    )
    defaults.pop("experiments")
    local = project / "conf/local/parameters.yml"
    local.write_text(yaml.safe_dump({**yaml.safe_load(local.read_text()), **defaults}))
    run_pipeline(project, "train")
    return project


def test_statistics_config_and_model_agree_on_pixels(project):
    stats = json.loads((project / "data/08_reporting/dataset_stats.json").read_text())
    info = stats["intensity"]
    assert info["bit_depth"] == "12-bit (uint16)" and info["channels"]["colour"] == 4
    low, high = info["range_used"]
    assert 300 <= low < 700 and 2500 < high <= 3300  # the data's range, not 0..65535
    config = json.loads((project / "data/06_models/tiny/config.json").read_text())
    assert (
        config["model"]["in_channels"] == 3 and "colour" in config["derived"]["in_channels"]["why"]
    )
    model_file = load_checkpoint(project / "data/06_models/tiny/model.pt")
    assert model_file["intensity"]["mode"] == "auto"
    assert (model_file["intensity"]["low"], model_file["intensity"]["high"]) == (low, high)
    html = (project / "data/08_reporting/report.html").read_text()
    assert "12-bit (uint16)" in html and "dataset range" in html


def test_predict_reproduces_the_evaluation_pixels(project, tmp_path):
    """Predicting the test images with the saved model gives the evaluation's detections: the
    intensity range and channels travel in model.pt (a different scaling would move them)."""
    from kedro_project import cli_params

    coco = json.loads((project / "data/05_model_input/coco/test.json").read_text())
    folder = tmp_path / "to_predict"
    folder.mkdir()
    names = {}
    for img in coco["images"]:
        src = project / "data/05_model_input/coco" / img["file_name"]
        (folder / src.name).write_bytes(src.read_bytes())
        names[img["id"]] = src.name
    run_pipeline(
        project,
        "predict",
        cli_params(
            "predict.model=tiny",
            f"predict.input_dir={folder}",
            "predict.score_threshold=0.0",
            "predict.draw=false",
        ),
    )
    out = project / "data/07_model_output/predict"
    index = {
        img["id"]: img["file_name"]
        for img in json.loads((out / "images.json").read_text())["images"]
    }
    predicted = sorted(
        (index[p["image_id"]], [round(v, 2) for v in p["bbox"]], round(p["score"], 4))
        for p in json.loads((out / "predictions.json").read_text())
    )
    evaluated = sorted(
        (names[p["image_id"]], [round(v, 2) for v in p["bbox"]], round(p["score"], 4))
        for p in json.loads((project / "data/07_model_output/tiny/predictions.json").read_text())
    )
    assert evaluated and predicted == evaluated
