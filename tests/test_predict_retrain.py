"""Prediction on a folder (with sliced inference on a large image) and champion/challenger
retraining."""

import json

import numpy as np
import pytest
import torch
from kedro_project import cli_params, make_project, run_pipeline
from PIL import Image

from smallobj_pipeline.detection.checkpoint import load_checkpoint
from smallobj_pipeline.detection.data.tiling import tile_starts
from smallobj_pipeline.detection.engine.registry import decide
from smallobj_pipeline.detection.evaluation.sliced import SliceConfig, sliced_predict

TINY = {
    "dataset": {
        "root": "data/01_raw/sample",
        "sample": {
            "root": "data/01_raw/sample",
            "num_images": 8,
            "image_size": 96,
            "seed": 4,
            "min_objects": 3,
            "max_objects": 6,
        },
    },
    "split": {"use_existing": True, "seed": 1, "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
}


def _quick_project(tmp_path, extra=None):
    import yaml

    project = make_project(tmp_path, TINY)
    params = yaml.safe_load((project / "conf/base/parameters_experiments.yml").read_text())
    params["experiment_defaults"]["training"].update(
        {"epochs": 1, "batch_size": 2, "warmup_iters": 0}
    )
    params["experiment_defaults"]["model"].update(
        {"box_batch_size_per_image": 32, "rpn_post_nms_top_n_test": 100}
    )
    params["experiments"] = {"prod": {}}
    local = project / "conf/local/parameters.yml"
    local.write_text(
        yaml.safe_dump({**yaml.safe_load(local.read_text()), **params, **(extra or {})})
    )
    return project


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    project = _quick_project(
        tmp_path_factory.mktemp("retrain"),
        {
            "retrain": {
                "experiment": "prod",
                "metric": "map_50",
                "margin": 0.0,
                "challenger_dir": "data/06_models/challenger",
            }
        },
    )
    run_pipeline(project, "retrain")
    return project


def _champion(project):
    """The champion's file: the version registry.json names of the versioned champion model."""
    registry = json.loads((project / "data/06_models/registry.json").read_text())
    return (
        project / "data/06_models/champion/model.pt" / registry["champion"]["version"] / "model.pt"
    )


def _versions(project):
    return sorted(p.name for p in (project / "data/06_models/champion/model.pt").iterdir())


def test_first_retrain_promotes_a_champion(retrained):
    registry = json.loads((retrained / "data/06_models/registry.json").read_text())
    assert _versions(retrained) == [registry["champion"]["version"]]
    assert _champion(retrained).is_file()
    first = registry["decisions"][0]
    assert first["promoted"] is True and first["champion"] is None
    assert len(first["dataset_fingerprint"]) == 16


def test_second_retrain_on_unchanged_data_keeps_the_champion(retrained):
    champion = _champion(retrained)
    versions = _versions(retrained)
    before = champion.read_bytes()
    run_pipeline(retrained, "retrain")
    registry = json.loads((retrained / "data/06_models/registry.json").read_text())
    second = registry["decisions"][-1]
    assert len(registry["decisions"]) == 2
    assert second["promoted"] is False, second["reason"]
    assert second["challenger"]["map_50"] == pytest.approx(
        second["champion"]["map_50"]
    )  # same seed, same data
    assert champion.read_bytes() == before and _versions(retrained) == versions  # no new version


def test_failed_validation_leaves_the_champion_untouched(retrained, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "annotations.json").write_text('{"images": [], "annotations": []')  # truncated JSON
    champion = _champion(retrained)
    versions = _versions(retrained)
    before = champion.read_bytes()
    with pytest.raises(Exception, match="invalid JSON"):
        run_pipeline(retrained, "retrain", runtime_params=cli_params(f"dataset.root={bad}"))
    assert champion.read_bytes() == before and _versions(retrained) == versions


def test_predict_folder_with_champion_and_sliced_large_image(retrained, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    src = sorted((retrained / "data/01_raw/sample/images").glob("*.png"))
    Image.open(src[0]).save(folder / "small.png")
    big = np.tile(np.asarray(Image.open(src[1])), (4, 4))  # 384 px: 4x the training size -> sliced
    Image.fromarray(big).save(folder / "large.png")
    run_pipeline(
        retrained,
        "predict",
        runtime_params=cli_params(f"predict.input_dir={folder}", "predict.model=champion"),
    )
    out = retrained / "data/07_model_output/predict"
    index = json.loads((out / "images.json").read_text())
    by_name = {img["file_name"]: img for img in index["images"]}
    assert by_name["large.png"]["sliced"] is True and by_name["small.png"]["sliced"] is False
    results = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in results} <= {1, 2}
    assert {p.name for p in (out / "drawn").glob("*.png")} == {"large.png.png", "small.png.png"}


def test_a_promotion_adds_a_champion_version_and_keeps_the_older_loadable(retrained):
    """retrain.champion_model is `versioned: true`: a promotion saves a new version, the catalog
    then loads it as the champion, and the earlier champion still loads by its version."""
    [old] = _versions(retrained)
    old_bytes = _champion(retrained).read_bytes()
    run_pipeline(retrained, "retrain", runtime_params=cli_params("retrain.margin=-1.0"))  # promote
    registry = json.loads((retrained / "data/06_models/registry.json").read_text())
    assert registry["decisions"][-1]["promoted"] is True
    new = registry["champion"]["version"]
    assert _versions(retrained) == sorted([old, new]) and new > old

    latest = _load_from_catalog(retrained, "retrain.champion_model")  # the latest version
    assert torch.equal(_first_tensor(latest), _first_tensor(load_checkpoint(_champion(retrained))))
    earlier = _load_from_catalog(retrained, "retrain.champion_model", version=old)
    old_file = retrained / "data/06_models/champion/model.pt" / old / "model.pt"
    assert old_file.read_bytes() == old_bytes
    assert torch.equal(_first_tensor(earlier), _first_tensor(load_checkpoint(old_file)))


def _load_from_catalog(project, name, version=None):
    """``name`` as the project's catalog loads it; ``version`` as `--load-versions` pins it."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro_project import chdir

    with chdir(project):
        bootstrap_project(project)
        with KedroSession.create(project_path=project) as session:
            return session.load_context().catalog.load(name, version=version)


def _first_tensor(model_file):
    return next(iter(model_file["model"].values()))


def test_decision_rule_needs_strictly_more_than_the_margin():
    assert decide({"map_50": 0.5}, None, "map_50", 0.0)[0] is True
    assert decide({"map_50": 0.5}, {"map_50": 0.5}, "map_50", 0.0)[0] is False
    assert decide({"map_50": 0.55}, {"map_50": 0.5}, "map_50", 0.1)[0] is False
    assert decide({"map_50": 0.61}, {"map_50": 0.5}, "map_50", 0.1)[0] is True


def test_tiles_cover_the_image_and_merge_duplicates():
    assert tile_starts(100, 64, 0.25) == [0, 36]
    assert tile_starts(50, 64, 0.25) == [0]

    class BrightBox(torch.nn.Module):  # "detects" the bright pixels of each tile
        def forward(self, tiles):
            outs = []
            for t in tiles:
                ys, xs = torch.nonzero(t[0] > 0.5, as_tuple=True)
                if len(xs) == 0:
                    outs.append(
                        {
                            "boxes": torch.zeros(0, 4),
                            "scores": torch.zeros(0),
                            "labels": torch.zeros(0, dtype=torch.long),
                        }
                    )
                    continue
                box = torch.tensor(
                    [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32
                )
                outs.append(
                    {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
                )
            return outs

    image = torch.zeros(1, 128, 128)
    image[0, 40:50, 70:80] = (
        1.0  # one object, inside 4 of the 9 overlapping tiles (x 70-80 spans two columns)
    )
    out = sliced_predict(
        BrightBox(), image, SliceConfig(tile_size=64, overlap=0.5, include_full_image=False)
    )
    assert out["num_tiles"] == 9
    # its detections from every tile land on the same image coordinates and merge into one
    assert out["boxes"].tolist() == [[70.0, 40.0, 80.0, 50.0]]
