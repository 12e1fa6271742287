"""`kedro run --pipeline=predict` on folders with bad images, and its output folder.

A bad image (corrupt, not an image, over ``predict.max_image_pixels``) is skipped and reported
(``predict.on_error=skip``) or stops the run with our own :class:`DatasetError`
(``on_error=fail``); the pixel limit is applied from the header, before decoding; progress is
logged with an ETA; drawings are named by the image's relative path with its suffix; the output
folder holds exactly one run's results, swapped in as a whole by ``PredictionOutputDataset``.

The model is an untrained ResNet18 detector (``interrupt_run.MODEL``, 64 px): these tests are
about files, not about what it detects.
"""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import interrupt_run as R
import numpy as np
import pytest
import torch
import yaml
from kedro.io import DatasetError as KedroDatasetError
from kedro_project import REPO, cli_params, make_project, run_pipeline
from PIL import Image
from test_bad_inputs import PACKAGE_DIR, write_big_png

from smallobj_pipeline.datasets import PredictionOutputDataset
from smallobj_pipeline.datasets import prediction_output as output_module
from smallobj_pipeline.detection.checkpoint import save_checkpoint
from smallobj_pipeline.detection.data import coco as coco_module
from smallobj_pipeline.detection.data.coco import read_image
from smallobj_pipeline.detection.data.dataset import to_channels
from smallobj_pipeline.detection.errors import DatasetError
from smallobj_pipeline.detection.evaluation import predict as P
from smallobj_pipeline.detection.io import HOST
from smallobj_pipeline.detection.modeling.factory import build_model

OUT = "data/07_model_output/predict"
PREDICT_LOGGER = "smallobj_pipeline.detection.evaluation.predict"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(R.MODEL, num_classes=1)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(
        {
            "model": model.state_dict(),
            "model_config": dict(model.smallobj_config),
            "num_classes": 1,
            "category_of_label": {1: 1},
            "train_image_size": 64,
        },
        path,
    )
    return path


@pytest.fixture
def predict_log(monkeypatch):
    """The records the predict module logs. Taken at its logger's ``handle``, since a Kedro
    session re-configures logging, which removes the handlers of caplog and of the package's
    loggers."""
    logger, records = logging.getLogger(PREDICT_LOGGER), []
    handle = logger.handle

    def recording_handle(record):
        records.append(record)
        return handle(record)

    monkeypatch.setattr(logger, "handle", recording_handle)
    return records


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("predict"))


def _predict(project, model_path, folder, *params):
    return run_pipeline(
        project,
        "predict",
        runtime_params=cli_params(
            f"predict.input_dir={folder}", f"predict.model={model_path}", *params
        ),
    )


def _image(path, size=64, rgb=False, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if rgb else (size, size)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _truncated(path):
    data = _image(path.with_name("whole.png"), seed=1).read_bytes()
    path.with_name("whole.png").unlink()
    path.write_bytes(data[: len(data) // 2])  # the header is intact, the pixel data cut off
    return path


def _files(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _leftovers(out):
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_bad_images_are_skipped_reported_and_the_others_predicted(
    project, model_path, tmp_path, predict_log
):
    folder = tmp_path / "incoming"
    _image(folder / "a.png")
    _image(folder / "sub/b.png", seed=2)
    _truncated(folder / "broken.png")
    (folder / "sub").joinpath("notes.jpg").write_text("not an image")
    _predict(project, model_path, folder)  # on_error: skip (the default)

    out = project / OUT
    index = json.loads((out / "images.json").read_text())
    assert [img["file_name"] for img in index["images"]] == ["a.png", "sub/b.png"]
    skipped = {s["file_name"]: s["reason"] for s in index["skipped"]}
    assert list(skipped) == ["broken.png", "sub/notes.jpg"]
    assert "truncated" in skipped["broken.png"]
    assert "cannot read the image header" in skipped["sub/notes.jpg"]
    assert "'sub/notes.jpg'" in skipped["sub/notes.jpg"]  # PIL quotes the path: made relative
    assert not any(str(folder) in reason for reason in skipped.values())
    predictions = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in predictions} <= {1, 2}
    assert _files(out / "drawn") == {"a.png.png", "sub/b.png.png"}

    warnings = [r.getMessage() for r in predict_log if r.levelno == logging.WARNING]
    assert any("broken.png: skipped" in w and "truncated" in w for w in warnings), warnings
    assert any("sub/notes.jpg: skipped" in w for w in warnings), warnings
    progress = [r.getMessage() for r in predict_log if r.levelno == logging.INFO]
    assert re.fullmatch(r"predict 1/4 a\.png: \d+ detections, ETA \d\d:\d\d", progress[0])
    assert re.fullmatch(r"predict 3/4 sub/b\.png: \d+ detections, ETA \d\d:\d\d", progress[-1])
    assert re.match(
        r"predict done: 2 of 4 images predicted in [\d.]+ s, 2 skipped",
        predict_log[-1].getMessage(),
    )


def test_on_error_fail_stops_at_the_first_bad_image_and_keeps_the_previous_output(
    project, model_path, tmp_path
):
    good = tmp_path / "good"
    _image(good / "a.png")
    _predict(project, model_path, good)
    out = project / OUT
    before = {name: (out / name).read_bytes() for name in _files(out)}

    bad = tmp_path / "bad"
    _image(bad / "a.png")
    _truncated(bad / "broken.png")
    _image(bad / "c.png")
    with pytest.raises(DatasetError, match=r"broken\.png: .*truncated.*on_error=fail") as exc:
        _predict(project, model_path, bad, "predict.on_error=fail")
    err = exc.value
    assert str(bad / "broken.png") in str(err)
    # our message, raised by our code, with no PIL exception chained to it
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert Path(exc.traceback[-1].path).resolve().is_relative_to(PACKAGE_DIR)
    # nothing of the failed run was written
    assert {name: (out / name).read_bytes() for name in _files(out)} == before


def test_pixel_limit_is_applied_from_the_header_before_decoding(
    project, model_path, tmp_path, monkeypatch
):
    folder = tmp_path / "incoming"
    _image(folder / "a.png", size=64)
    _image(folder / "b.png", size=80)
    write_big_png(folder / "huge.png", 10_000, 10_000)  # a few kB declaring 100 megapixels
    decoded = []
    decode = coco_module._decode

    def recording_decode(path):
        decoded.append(Path(path).name)
        if Path(path).name == "huge.png":  # decoding it would take minutes and gigabytes
            raise AssertionError(f"{path} was decoded")
        return decode(path)

    monkeypatch.setattr(coco_module, "_decode", recording_decode)
    _predict(project, model_path, folder, "predict.max_image_pixels=5000")  # 64^2 < 5000 < 80^2

    index = json.loads((project / OUT / "images.json").read_text())
    assert [img["file_name"] for img in index["images"]] == ["a.png"]
    reasons = {s["file_name"]: s["reason"] for s in index["skipped"]}
    assert list(reasons) == ["b.png", "huge.png"]
    assert re.match(
        r"image of 10000 x 10000 pixels \(100\.0 megapixels\) exceeds "
        r"predict\.max_image_pixels \(0\.0 megapixels\); it is refused without being "
        r"decoded",
        reasons["huge.png"],
    )
    assert "80 x 80 pixels" in reasons["b.png"]
    assert decoded == ["a.png"]  # the others were refused from their header

    # the default limit is validation's 50 megapixels; the huge image still fails on_error=fail
    params = yaml.safe_load((REPO / "conf/base/parameters_predict.yml").read_text())["predict"]
    assert params["max_image_pixels"] == 50_000_000 and params["on_error"] == "skip"
    with pytest.raises(DatasetError, match=r"huge\.png: image of 10000 x 10000 pixels"):
        _predict(project, model_path, folder, "predict.on_error=fail")
    assert "huge.png" not in decoded


def test_drawings_are_named_by_relative_path_and_the_folder_holds_only_this_run(
    project, model_path, tmp_path
):
    folder = tmp_path / "incoming"
    for i, name in enumerate(["x.png", "x.tif", "sub/y.png", "sub__y.png"]):
        _image(folder / name, seed=i)
    out = project / OUT
    (out / "drawn/sub").mkdir(parents=True, exist_ok=True)
    (out / "drawn/old.png").write_bytes(b"an earlier run's drawing")
    (out / "drawn/sub/older.png").write_bytes(b"and another")
    (out / "notes.txt").write_text("not from this run")

    _predict(project, model_path, folder)

    assert _files(out) == {
        "predictions.json",
        "images.json",
        "drawn/x.png.png",
        "drawn/x.tif.png",
        "drawn/sub/y.png.png",
        "drawn/sub__y.png.png",
    }
    assert _leftovers(out) == []
    loaded = PredictionOutputDataset(path=str(out)).load()
    names = sorted(img["file_name"] for img in loaded["images"]["images"])
    assert sorted(loaded["drawings"]) == names  # each drawing maps back to its image
    for png in loaded["drawings"].values():
        assert png.startswith(b"\x89PNG")


def _output(tag, drawings):
    return {
        "predictions": [{"image_id": 1, "score": 0.9, "tag": tag}],
        "images": {"images": [{"id": 1, "file_name": tag}], "skipped": []},
        "drawings": drawings,
    }


def test_output_dataset_round_trips_and_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "predict"
    ds = PredictionOutputDataset(path=str(out))
    first = _output("first", {"a/b.tif": b"\x89PNG 1", "a.png": b"\x89PNG 2"})
    ds.save(first)
    assert ds.load() == first
    assert _files(out) == {
        "predictions.json",
        "images.json",
        "drawn/a/b.tif.png",
        "drawn/a.png.png",
    }

    stale = tmp_path / f".predict.{HOST}.999999999.0000.tmp"  # left by a writer that is gone
    stale.mkdir()
    second = _output("second", {"c.jpg": b"\x89PNG 3"})
    ds.save(second)
    assert ds.load() == second
    assert _files(out) == {"predictions.json", "images.json", "drawn/c.jpg.png"}
    assert _leftovers(out) == []


def test_a_failed_save_leaves_the_previous_output_whole(tmp_path, monkeypatch):
    out = tmp_path / "predict"
    ds = PredictionOutputDataset(path=str(out))
    first = _output("first", {"a.png": b"\x89PNG 1"})
    ds.save(first)
    files = _files(out)

    written = []
    write_bytes = output_module.write_bytes

    def crash_on_second_drawing(path, data):
        written.append(path)
        if len(written) == 2:
            raise OSError("disk full")
        return write_bytes(path, data)

    monkeypatch.setattr(output_module, "write_bytes", crash_on_second_drawing)
    with pytest.raises(KedroDatasetError, match="disk full"):  # Kedro wraps errors of a save
        ds.save(_output("second", {"b.png": b"\x89PNG 2", "c.png": b"\x89PNG 3"}))
    assert ds.load() == first and _files(out) == files and _leftovers(out) == []
    monkeypatch.undo()

    rename = os.rename

    def crash_on_swap_in(src, dst):  # the new folder cannot be renamed in: the old one goes back
        if str(src).endswith(".tmp"):
            raise OSError("rename failed")
        return rename(src, dst)

    monkeypatch.setattr(output_module.os, "rename", crash_on_swap_in)
    with pytest.raises(KedroDatasetError, match="rename failed"):
        ds.save(_output("third", {"d.png": b"\x89PNG 4"}))
    monkeypatch.undo()
    assert ds.load() == first and _files(out) == files and _leftovers(out) == []

    with pytest.raises(KedroDatasetError, match="relative paths"):
        ds.save(_output("escape", {"../evil": b"\x89PNG 5"}))
    assert not (tmp_path / "evil.png").exists() and ds.load() == first


def test_images_are_read_through_one_helper(model_path, tmp_path, monkeypatch):
    """``load_image_for_model`` is the one place predict reads pixels: read_image, then the
    model's channel count (RGB -> gray for this 1-channel model)."""
    folder = tmp_path / "incoming"
    rgb = _image(folder / "rgb.png", rgb=True)
    _image(folder / "gray.png", seed=3)
    model_file = {"model_config": {"in_channels": 1}}
    raw, model_input = P.load_image_for_model(rgb, model_file, max_pixels=None)
    assert np.array_equal(raw, read_image(rgb)) and raw.shape == (64, 64, 3)
    assert np.array_equal(model_input, to_channels(raw, 1)) and model_input.shape == (64, 64)

    seen = []
    helper = P.load_image_for_model

    def spy(path, model_file, max_pixels):
        seen.append(Path(path).name)
        return helper(path, model_file, max_pixels)

    monkeypatch.setattr(P, "load_image_for_model", spy)
    out = P.predict_folder(str(model_path), folder, device="cpu", draw=False)
    assert seen == ["gray.png", "rgb.png"]
    assert [img["file_name"] for img in out["images"]["images"]] == seen


def test_cli_exit_codes(project, model_path, tmp_path):
    """skip: exit 0 with the bad image reported; fail: a non-zero exit with our message, and
    no frame of PIL in what is printed."""
    folder = tmp_path / "incoming"
    _image(folder / "a.png")
    _truncated(folder / "broken.png")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}

    def kedro_run(*params):
        params = [f"predict.input_dir={folder}", f"predict.model={model_path}", *params]
        cmd = [
            sys.executable,
            "-m",
            "kedro",
            "run",
            "--pipeline=predict",
            "--params=" + ",".join(params),
        ]
        proc = subprocess.run(
            cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300
        )
        return proc.returncode, " ".join((proc.stdout + proc.stderr).split())  # rich wraps lines

    rc, text = kedro_run()
    assert rc == 0, text[-3000:]
    assert re.search(r"WARNING predict done: 1 of 2 images predicted in [\d.]+ s, 1 skipped", text)

    rc, text = kedro_run("predict.on_error=fail")
    assert rc != 0
    assert re.search(
        r"DatasetError: \S*broken\.png: cannot decode image \(the file is truncated\)", text
    ), text[-3000:]
    assert "PIL" not in text, text[-3000:]
