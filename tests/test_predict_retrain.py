"""Prediction on a folder (with sliced inference on a large image) and champion/challenger
retraining: every promoted champion kept under data/06_models/champions/<version>/, rollback to
the previous one, a retrain killed while writing the registry leaves the champion as it was."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from kedro_project import cli_params, make_project, run_pipeline
from PIL import Image
from test_champions import KILLED_AT_RENAME, env

from smallobj_pipeline.detection.checkpoint import load_checkpoint
from smallobj_pipeline.detection.data.tiling import tile_starts
from smallobj_pipeline.detection.engine.registry import NoPreviousChampion, decide
from smallobj_pipeline.detection.evaluation.predict import resolve_model_path
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
                "lock_dir": "data/06_models",
                "rollback_reason": "manual rollback",
            }
        },
    )
    run_pipeline(project, "retrain")
    return project


def _registry(project):
    return json.loads((project / "data/06_models/registry.json").read_text())


def _champion(project):
    """The champion's file: champions/<the version registry.json names>/model.pt."""
    version = _registry(project)["champion"]["version"]
    return project / "data/06_models/champions" / version / "model.pt"


def _versions(project):
    return sorted(p.name for p in (project / "data/06_models/champions").iterdir() if p.is_dir())


def test_first_retrain_promotes_a_champion(retrained):
    registry = json.loads((retrained / "data/06_models/registry.json").read_text())
    assert _versions(retrained) == [registry["champion"]["version"]]
    assert _champion(retrained).is_file()
    record = json.loads((_champion(retrained).parent / "metrics.json").read_text())
    assert record["version"] == registry["champion"]["version"]
    assert record["metrics"]["map_50"] == registry["decisions"][0]["challenger"]["map_50"]
    assert record["dataset_fingerprint"] == registry["decisions"][0]["dataset_fingerprint"]
    assert [c["version"] for c in registry["history"]] == [registry["champion"]["version"]]
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
    """A promotion saves champions/<new version>/, the registry names it, and the earlier
    champion still loads by its version from the catalog's retrain.champions."""
    [old] = _versions(retrained)
    old_bytes = _champion(retrained).read_bytes()
    run_pipeline(retrained, "retrain", runtime_params=cli_params("retrain.margin=-1.0"))  # promote
    registry = _registry(retrained)
    assert registry["decisions"][-1]["promoted"] is True
    new = registry["champion"]["version"]
    assert _versions(retrained) == sorted([old, new]) and new > old
    assert [c["version"] for c in registry["history"]] == [old, new]

    champions = _load_from_catalog(retrained, "retrain.champions")  # version -> loader
    assert sorted(champions) == [old, new]
    current = load_checkpoint(_champion(retrained))
    assert torch.equal(_first_tensor(champions[new]()), _first_tensor(current))
    old_file = retrained / "data/06_models/champions" / old / "model.pt"
    assert old_file.read_bytes() == old_bytes
    assert torch.equal(_first_tensor(champions[old]()), _first_tensor(load_checkpoint(old_file)))


def test_a_retrain_killed_while_writing_the_registry_leaves_the_champion(retrained):
    """Fault injection as in tests/test_interruptions.py: the process dies at the registry's
    atomic rename, after the new champion's files are saved. The registry (and so the champion
    `make predict` loads) is the previous one, byte for byte, and the next run goes on."""
    before = (retrained / "data/06_models/registry.json").read_bytes()
    champion, champion_bytes = _champion(retrained), _champion(retrained).read_bytes()
    proc = subprocess.run(
        [
            *(sys.executable, "-c", KILLED_AT_RENAME, str(retrained), "retrain"),
            *("registry.json", "retrain.margin=-1.0"),  # a promotion: files, then the registry
        ],
        env=env(),
        cwd=retrained,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 9, proc.stderr[-3000:]
    assert (retrained / "data/06_models/registry.json").read_bytes() == before
    assert _champion(retrained) == champion and champion.read_bytes() == champion_bytes
    assert (
        resolve_model_path(
            "champion", retrained / "data/06_models", retrained / "data/06_models/registry.json"
        )
        == champion
    )
    load_checkpoint(champion)
    # the killed run's champion folder is saved but named by no registry entry: never used
    assert len(_versions(retrained)) == 3


def test_rollback_restores_the_previous_champion(retrained):
    registry = _registry(retrained)
    [*_, old, new] = [c["version"] for c in registry["history"]]
    old_file = retrained / "data/06_models/champions" / old / "model.pt"
    run_pipeline(
        retrained, "rollback", runtime_params=cli_params("retrain.rollback_reason=bad batch")
    )
    after = _registry(retrained)
    assert after["champion"]["version"] == old
    assert [c["version"] for c in after["history"]] == [old]
    rollback = after["decisions"][-1]
    assert {k: rollback[k] for k in ("kind", "from_version", "to_version", "reason")} == {
        "kind": "rollback",
        "from_version": new,
        "to_version": old,
        "reason": "bad batch",
    }
    assert rollback["time"] >= registry["decisions"][-1]["time"]
    # what `make predict` (predict.model: champion) loads is now the earlier file
    path = resolve_model_path(
        "champion", retrained / "data/06_models", retrained / "data/06_models/registry.json"
    )
    assert path == old_file
    assert torch.equal(
        _first_tensor(load_checkpoint(path)), _first_tensor(load_checkpoint(old_file))
    )
    # no earlier champion left: a second rollback stops and says why
    with pytest.raises(NoPreviousChampion, match="only one in the history"):
        run_pipeline(retrained, "rollback")
    assert _registry(retrained) == after  # a refused rollback changes nothing


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
