"""The data pipeline end to end through Kedro: sample creation, validation, split, statistics."""

import json

import pytest
from kedro_project import cli_params, make_project, run_pipeline

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset

SMALL_SAMPLE = {"root": "data/01_raw/sample", "num_images": 8, "image_size": 96, "seed": 3}


def _params(root="data/01_raw/sample", policy="fail"):
    return {
        "dataset": {"root": root, "sample": SMALL_SAMPLE},
        "validation": {"policy": policy, "allowed_channels": [1, 3], "bbox_tolerance": 0.5},
    }


def test_data_pipeline_creates_sample_validates_splits_and_reports(tmp_path):
    project = make_project(tmp_path, _params())
    run_pipeline(project, "data")

    assert (project / "data/01_raw/sample/annotations.json").is_file()
    model_input = CocoDataset.from_dir(project / "data/05_model_input/coco")
    assert sorted(model_input.splits) == ["test", "train", "val"]
    assert sum(len(v) for v in model_input.splits.values()) == 8
    report = json.loads((project / "data/08_reporting/validation.json").read_text())
    assert report["success"] is True
    stats = json.loads((project / "data/08_reporting/dataset_stats.json").read_text())
    assert stats["max_objects_per_image"] >= 1
    assert (project / "data/08_reporting/plots/dataset_stats.png").stat().st_size > 1000


def test_dataset_root_is_overridable_at_run_time(tmp_path):
    """--params dataset.root=... points the pipeline at any COCO directory, no file edited."""
    project = make_project(tmp_path, _params())
    other = tmp_path / "my_coco"
    generate_sample_dataset(other, num_images=5, image_size=80, seed=11)
    run_pipeline(project, "data", runtime_params=cli_params(f"dataset.root={other}"))

    assert not (project / "data/01_raw/sample").exists(), "the sample must not be generated"
    model_input = CocoDataset.from_dir(project / "data/05_model_input/coco")
    assert len(model_input.images) == 5
    assert model_input.annotations == CocoDataset.from_dir(other).annotations


def test_failed_validation_stops_the_run_and_writes_the_report(tmp_path):
    project = make_project(tmp_path, _params(root=str(tmp_path / "bad")))
    bad = tmp_path / "bad"
    generate_sample_dataset(bad, num_images=4, image_size=64, seed=5)
    data = json.loads((bad / "annotations.json").read_text())
    data["annotations"][0]["bbox"][2] = -3  # negative width
    bad_ann_id = data["annotations"][0]["id"]
    (bad / "annotations.json").write_text(json.dumps(data))

    with pytest.raises(Exception, match="width") as excinfo:
        run_pipeline(project, "data")
    assert str(bad_ann_id) in str(excinfo.value)
    report = json.loads((project / "data/08_reporting/validation.json").read_text())
    assert report["success"] is False
    assert not (project / "data/05_model_input/coco/annotations.json").exists()


def test_policy_drop_goes_on_and_lists_the_dropped_in_the_report(tmp_path):
    """The validation report is the catalog's validation_report: written with `dropped` under
    policy drop, and the run goes on without the offender."""
    bad = tmp_path / "bad"
    generate_sample_dataset(bad, num_images=6, image_size=64, seed=5)
    data = json.loads((bad / "annotations.json").read_text())
    data["annotations"][0]["bbox"][2] = -3  # negative width
    bad_ann_id = data["annotations"][0]["id"]
    (bad / "annotations.json").write_text(json.dumps(data))
    project = make_project(tmp_path, _params(root=str(bad), policy="drop"))
    run_pipeline(project, "data")

    report = json.loads((project / "data/08_reporting/validation.json").read_text())
    assert report["success"] is False and report["policy"] == "drop"
    assert [a["id"] for a in report["dropped"]["dropped_annotations"]] == [bad_ann_id]
    model_input = CocoDataset.from_dir(project / "data/05_model_input/coco")
    assert bad_ann_id not in {a["id"] for a in model_input.annotations}
