"""Real images kept faithful: what the model sees is what is in the user's files.

Each test builds the kind of file the bundled 8-bit sample never has (12-bit, uint16 holding
8-bit values, float32 TIFF, RGB, crowd regions, EXIF-rotated JPEG, duplicate category ids, a
UTF-8 BOM, two datasets with equal-size files) and checks what a user would notice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from smallobj_pipeline.detection.data import validation as V
from smallobj_pipeline.detection.data.coco import CocoDataset, read_header, read_raw
from smallobj_pipeline.detection.data.dataset import DetectionDataset
from smallobj_pipeline.detection.data.intensity import Intensity, normalize
from smallobj_pipeline.detection.data.split import assign_splits
from smallobj_pipeline.detection.data.stats import compute_stats
from smallobj_pipeline.detection.engine.experiment import resolve_experiment
from smallobj_pipeline.detection.errors import DatasetError
from smallobj_pipeline.detection.evaluation.metrics import evaluate_detections

INTENSITY = {"mode": "auto", "percentiles": [0.1, 99.9], "sample_images": 50, "seed": 0}
SIZE = 48


def _write(
    root: Path, arrays: dict[str, np.ndarray], boxes=None, categories=None, extra_ann=None
) -> Path:
    """A COCO directory with one image per array (TIFF for non-uint8 or .tif names, else PNG)."""
    root.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (name, arr) in enumerate(arrays.items(), start=1):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith((".tif", ".tiff")):
            tifffile.imwrite(path, arr)
        else:
            Image.fromarray(arr).save(path)
        images.append({"id": i, "file_name": name, "width": arr.shape[1], "height": arr.shape[0]})
        for bbox in boxes or [[4, 4, 8, 8]]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    annotations += extra_ann or []
    data = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "cell"}],
    }
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def _dataset(root: Path) -> CocoDataset:
    return assign_splits(
        CocoDataset.from_dir(root), ratios={"train": 0.5, "val": 0.25, "test": 0.25}, seed=0
    )


def _loaded(coco: CocoDataset, stats: dict, image_id: int, in_channels: int = 1) -> torch.Tensor:
    ds = DetectionDataset(coco, [image_id], in_channels, None, stats["intensity"]["spec"])
    return ds[0][0]


# ------------------------------------------------------------------------------ 1. stale files
def test_model_input_is_always_the_current_dataset(tmp_path):
    """Dataset B has files of A's names and sizes but other pixels: the model input (and the
    fingerprint) follow B, and A's extra file is removed."""
    rng = np.random.default_rng(0)
    a = {f"img/{i}.tif": rng.integers(0, 4096, (SIZE, SIZE), dtype=np.uint16) for i in range(3)}
    b = {f"img/{i}.tif": rng.integers(0, 4096, (SIZE, SIZE), dtype=np.uint16) for i in range(2)}
    coco_a = _dataset(_write(tmp_path / "a", a))
    coco_b = _dataset(_write(tmp_path / "b", b))
    assert (tmp_path / "a/img/0.tif").stat().st_size == (tmp_path / "b/img/0.tif").stat().st_size
    out = tmp_path / "model_input"
    coco_a.to_dir(out)
    fp_a = CocoDataset.from_dir(out).fingerprint()
    coco_b.to_dir(out)
    for i in range(2):
        np.testing.assert_array_equal(tifffile.imread(out / f"img/{i}.tif"), b[f"img/{i}.tif"])
        assert os.path.samefile(out / f"img/{i}.tif", tmp_path / f"b/img/{i}.tif")
    assert not (out / "img/2.tif").exists()  # A's third image is not in B
    assert CocoDataset.from_dir(out).fingerprint() != fp_a


def test_copied_model_input_is_compared_by_content(tmp_path):
    """Without hard links (another file system), an equal-size copy of other pixels is replaced."""
    rng = np.random.default_rng(1)
    a = {"x.tif": rng.integers(0, 60000, (SIZE, SIZE), dtype=np.uint16)}
    b = {"x.tif": rng.integers(0, 60000, (SIZE, SIZE), dtype=np.uint16)}
    out = tmp_path / "copy"
    _dataset(_write(tmp_path / "a", a)).to_dir(out, link_images=False)
    _dataset(_write(tmp_path / "b", b)).to_dir(out, link_images=False)
    np.testing.assert_array_equal(tifffile.imread(out / "x.tif"), b["x.tif"])
    assert not list(out.glob(".*.tmp"))


def test_fingerprint_changes_with_content_of_equal_size(tmp_path):
    rng = np.random.default_rng(2)
    root = _write(tmp_path / "d", {"x.tif": rng.integers(0, 4096, (SIZE, SIZE), dtype=np.uint16)})
    before = CocoDataset.from_dir(root).fingerprint()
    assert CocoDataset.from_dir(root).fingerprint() == before  # stable (and cached)
    tifffile.imwrite(root / "x.tif", rng.integers(0, 4096, (SIZE, SIZE), dtype=np.uint16))
    assert CocoDataset.from_dir(root).fingerprint() != before


# ------------------------------------------------------------------------------ 2. bit depth
def test_12bit_images_keep_their_levels_with_a_dataset_range(tmp_path):
    """0..4095 microscopy: every level survives (not 16 as with v / 257), scaled by one range
    for the dataset, so a dim image stays dimmer than a bright one."""
    rng = np.random.default_rng(3)
    bright = rng.integers(0, 4096, (SIZE, SIZE)).astype(np.uint16)
    dim = (bright // 4).astype(np.uint16)
    coco = _dataset(
        _write(tmp_path / "d12", {"a.tif": bright, "b.tif": dim, "c.tif": bright, "d.tif": dim})
    )
    coco.splits["train"] = [1, 2, 3, 4]
    stats = compute_stats(coco, INTENSITY)
    info = stats["intensity"]
    assert info["bit_depth"] == "12-bit (uint16)" and info["range_found"][1] == 4095.0
    low, high = info["range_used"]
    assert 0 <= low < 10 and 4080 < high <= 4095
    t_bright, t_dim = _loaded(coco, stats, 1), _loaded(coco, stats, 2)
    assert (
        t_bright.dtype == torch.float32
        and 0.0 <= float(t_bright.min())
        and float(t_bright.max()) <= 1.0
    )
    levels = np.unique(bright).size  # about 1,800 of 4,096 values in 48 x 48 pixels
    assert torch.unique(t_bright).numel() >= 0.99 * levels > 1000  # vs 16 levels under v / 257
    assert float(t_dim.mean()) < 0.3 * float(t_bright.mean())  # relative brightness kept
    fixed = normalize(bright, {"mode": "fixed"})
    assert np.unique(fixed).size <= 17  # what 'fixed' (the former behaviour) does


def test_uint16_holding_8bit_values_is_not_crushed(tmp_path):
    rng = np.random.default_rng(4)
    arr = rng.integers(0, 256, (SIZE, SIZE)).astype(np.uint16)
    coco = _dataset(_write(tmp_path / "d8in16", {f"{i}.tif": arr for i in range(4)}))
    stats = compute_stats(coco, INTENSITY)
    t = _loaded(coco, stats, coco.splits["test"][0])
    assert float(t.max()) > 0.9 and torch.unique(t).numel() > 200  # was 0/1 under v / 257
    assert np.unique(normalize(arr, {"mode": "fixed"})).size <= 2


def test_float_tiff_is_accepted_and_scaled(tmp_path):
    rng = np.random.default_rng(5)
    arr = (rng.normal(1000.0, 200.0, (SIZE, SIZE))).astype(np.float32)  # e.g. photon counts
    coco = _dataset(_write(tmp_path / "dfloat", {f"{i}.tif": arr for i in range(4)}))
    outcome = V.validate_dataset(coco, intensity={"mode": "auto"})
    assert outcome.success, outcome.summary()
    stats = compute_stats(coco, INTENSITY)
    assert stats["intensity"]["bit_depth"] == "float32"
    t = _loaded(coco, stats, coco.splits["test"][0])
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0 and torch.unique(t).numel() > 1000


def test_validation_warns_when_fixed_mode_crushes_levels(tmp_path):
    rng = np.random.default_rng(6)
    coco = CocoDataset.from_dir(
        _write(tmp_path / "w", {"a.tif": rng.integers(0, 4096, (SIZE, SIZE), dtype=np.uint16)})
    )
    warned = V.validate_dataset(coco, intensity={"mode": "fixed"}, min_levels=32).warnings
    assert any("image id 1 (a.tif): 12-bit (uint16) pixels keep only 17 of" in w for w in warned), (
        warned
    )
    assert not V.validate_dataset(coco, intensity={"mode": "auto"}).warnings


def test_intensity_spec_round_trips_and_refuses_bad_settings():
    spec = Intensity(mode="auto", low=10.0, high=4000.0)
    assert Intensity.from_dict(spec.to_dict()) == spec
    with pytest.raises(Exception, match="intensity.mode must be one of"):
        Intensity.from_dict({"mode": "log"})
    with pytest.raises(Exception, match="0 <= low < high <= 100"):
        Intensity.from_dict({"percentiles": [99, 1]})


# ------------------------------------------------------------------------------ 3. colour
def _defaults() -> dict:
    return {"model": {"backbone": "resnet18", "in_channels": "auto"}, "training": {}}


def test_in_channels_auto_follows_the_training_images(tmp_path):
    rng = np.random.default_rng(7)
    rgb = {f"{i}.png": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for i in range(4)}
    grey = {f"{i}.png": rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8) for i in range(4)}
    grey_rgb = {f"{i}.png": np.repeat(v[..., None], 3, axis=2) for i, v in enumerate(grey.values())}
    picked = {}
    for name, arrays in (("rgb", rgb), ("grey", grey), ("grey_rgb", grey_rgb)):
        coco = _dataset(_write(tmp_path / name, arrays))
        cfg = resolve_experiment("e", _defaults(), {}, compute_stats(coco, INTENSITY))
        picked[name] = (cfg["model"]["in_channels"], cfg["derived"]["in_channels"]["why"])
    assert picked["rgb"][0] == 3 and "colour" in picked["rgb"][1]
    assert picked["grey"][0] == 1
    assert picked["grey_rgb"][0] == 1 and "R = G = B" in picked["grey_rgb"][1]
    explicit = resolve_experiment(
        "e",
        _defaults(),
        {"model": {"in_channels": 1}},
        compute_stats(_dataset(tmp_path / "rgb"), INTENSITY),
    )
    assert explicit["model"]["in_channels"] == 1 and "in_channels" not in explicit["derived"]


def test_colour_data_keeps_a_pretrained_rgb_conv1(tmp_path):
    import torchvision

    from smallobj_pipeline.detection.modeling.factory import build_model

    rng = np.random.default_rng(8)
    coco = _dataset(
        _write(
            tmp_path / "rgb",
            {f"{i}.png": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for i in range(4)},
        )
    )
    state = torchvision.models.resnet18(weights=None).state_dict()
    weights = tmp_path / "r18.pth"
    torch.save(state, weights)
    cfg = resolve_experiment(
        "e",
        _defaults(),
        {"model": {"pretrained": "backbone", "weights_path": str(weights)}},
        compute_stats(coco, INTENSITY),
    )
    model = build_model(cfg["model"], num_classes=1)
    conv1 = model.backbone.body.conv1.weight
    assert conv1.shape[1] == 3 and torch.equal(conv1.detach(), state["conv1.weight"])
    image = DetectionDataset(coco, [1], cfg["model"]["in_channels"], None)[0][0]
    assert image.shape[0] == 3 and not torch.equal(image[0], image[1])  # colour reaches the model


# ------------------------------------------------------------------------------ 4. crowd regions
def test_iscrowd_must_be_a_number(tmp_path):
    rng = np.random.default_rng(9)
    root = _write(tmp_path / "c", {"a.png": rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)})
    data = json.loads((root / "annotations.json").read_text())
    data["annotations"][0]["iscrowd"] = "0"
    (root / "annotations.json").write_text(json.dumps(data))
    outcome = V.validate_dataset(CocoDataset.from_dir(root))
    check = outcome.check(V.ISCROWD_VALID)
    assert not check.success and check.annotation_ids == [1]
    assert (
        "annotation id 1 (image id 1): iscrowd '0' (str); must be the number 0 or 1"
        in outcome.summary()
    )


def test_dataset_of_crowd_regions_only_stops(tmp_path):
    rng = np.random.default_rng(10)
    root = _write(tmp_path / "c", {"a.png": rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)})
    data = json.loads((root / "annotations.json").read_text())
    data["annotations"][0]["iscrowd"] = 1
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(V.DataValidationError, match="all 1 annotations are crowd regions"):
        V.validate_dataset(CocoDataset.from_dir(root))


def test_crowd_regions_do_not_move_the_derived_anchors(tmp_path):
    rng = np.random.default_rng(11)
    arrays = {f"{i}.png": rng.integers(0, 256, (128, 128), dtype=np.uint8) for i in range(4)}
    plain = _dataset(_write(tmp_path / "plain", arrays, boxes=[[4, 4, 10, 10], [40, 40, 12, 12]]))
    crowd = [
        {
            "id": 100 + i,
            "image_id": i,
            "category_id": 1,
            "bbox": [0, 0, 100, 100],
            "area": 1e4,
            "iscrowd": 1,
        }
        for i in range(1, 5)
    ]
    crowded = _dataset(
        _write(
            tmp_path / "crowd", arrays, boxes=[[4, 4, 10, 10], [40, 40, 12, 12]], extra_ann=crowd
        )
    )
    anchors = []
    for coco in (plain, crowded):
        stats = compute_stats(coco)
        cfg = resolve_experiment("e", {"model": {"in_channels": 1}, "training": {}}, {}, stats)
        anchors.append(cfg["model"]["anchor_sizes"])
    assert anchors[0] == anchors[1]
    assert compute_stats(crowded)["crowd_regions"] == 4


def test_detection_on_a_crowd_region_is_not_a_false_positive():
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "cell"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "iscrowd": 1},
        ],
    }
    preds = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 8, 8], "score": 0.8},
    ]  # inside the crowd
    m = evaluate_detections(gt, preds)
    assert m["precision"] == 1.0 and m["num_ignored_on_crowd"] == 1
    only_crowd = dict(gt, annotations=[gt["annotations"][1]])
    assert evaluate_detections(only_crowd, preds[1:])["map_50"] == -1.0  # as pycocotools


# ------------------------------------------------------------------------------ 5. EXIF orientation
def _exif_jpeg(path: Path, stored: np.ndarray, orientation: int) -> None:
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, quality=100, exif=exif)


def test_exif_orientation_is_applied_everywhere(tmp_path):
    """Stored 60 x 30 with orientation 6 (turn 90 degrees clockwise): displayed 30 x 60. A bright
    spot at stored x 47-53, y 2-8 is displayed at x 21-27, y 47-53; the box drawn there must hit
    it."""
    stored = np.zeros((30, 60), np.uint8)
    stored[2:9, 47:54] = 255
    root = tmp_path / "exif"
    root.mkdir()
    _exif_jpeg(root / "a.jpg", stored, 6)
    assert read_header(root / "a.jpg")[:2] == (30, 60)
    shown = read_raw(root / "a.jpg")
    assert shown.shape == (60, 30)
    ys, xs = np.nonzero(shown > 128)
    assert 22 <= xs.mean() <= 26 and 48 <= ys.mean() <= 52
    images = [{"id": 1, "file_name": "a.jpg", "width": 30, "height": 60}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [21, 47, 7, 7], "iscrowd": 0}]
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]})
    )
    coco = CocoDataset.from_dir(root)
    outcome = V.validate_dataset(coco)
    assert outcome.success and any("EXIF orientation" in w for w in outcome.warnings)
    image = DetectionDataset(coco, [1], 1, None)[0][0]
    assert image.shape == (1, 60, 30) and float(image[0, 47:54, 21:28].mean()) > 0.9


def test_declared_size_of_the_unturned_image_names_exif(tmp_path):
    root = tmp_path / "exif2"
    root.mkdir()
    _exif_jpeg(root / "a.jpg", np.zeros((30, 60), np.uint8), 6)
    images = [{"id": 1, "file_name": "a.jpg", "width": 60, "height": 30}]  # the stored size
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]})
    )
    outcome = V.validate_dataset(CocoDataset.from_dir(root))
    assert not outcome.check(V.DECLARED_SIZE).success
    assert "EXIF orientation" in outcome.summary() and "exiftool -Orientation=" in outcome.summary()


# ------------------------------------------------------------------------------ 6, 12. JSON
def test_duplicate_category_id_names_both_entries(tmp_path):
    root = _write(
        tmp_path / "dup",
        {"a.png": np.zeros((SIZE, SIZE), np.uint8)},
        categories=[
            {"id": 1, "name": "cell"},
            {"id": 2, "name": "x"},
            {"id": 1, "name": "nucleus"},
        ],
    )
    with pytest.raises(
        DatasetError,
        match=r'duplicate category id 1: categories\[0\] .*"cell".* and '
        r'categories\[2\] .*"nucleus"',
    ):
        CocoDataset.from_dir(root)


def test_json_with_a_utf8_bom_is_read(tmp_path):
    root = _write(tmp_path / "bom", {"a.png": np.zeros((SIZE, SIZE), np.uint8)})
    text = (root / "annotations.json").read_text()
    (root / "annotations.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert len(CocoDataset.from_dir(root).images) == 1


# ------------------------------------------------------------------------------ red-team findings
def _png(
    path: Path, arr: np.ndarray, colour_type: int, exif_orientation: int | None = None
) -> None:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit colour or grey + alpha), with an
    optional eXIf chunk holding an orientation."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    h, w = arr.shape[:2]
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    out = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    )
    if exif_orientation:
        ifd = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">H", 1)
        ifd += struct.pack(">HHIHH", 0x0112, 3, 1, exif_orientation, 0) + struct.pack(">I", 0)
        out += chunk(b"eXIf", ifd)
    path.write_bytes(out + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16bit_grey_alpha_png_keeps_its_16_bits(tmp_path):
    rng = np.random.default_rng(12)
    grey = rng.integers(0, 4096, (16, 20)).astype(np.uint16)
    _png(tmp_path / "ga.png", np.stack([grey, np.full_like(grey, 65535)], axis=-1), colour_type=4)
    raw = read_raw(tmp_path / "ga.png")
    assert raw.dtype == np.uint16 and raw.shape == (16, 20)
    np.testing.assert_array_equal(raw, grey)


def test_16bit_colour_png_gets_its_exif_orientation(tmp_path):
    rgb = np.zeros((10, 30, 3), np.uint16)
    rgb[0:2, 26:30] = [4000, 2000, 1000]  # top right of the stored image
    _png(tmp_path / "c.png", rgb, colour_type=2, exif_orientation=6)
    raw = read_raw(tmp_path / "c.png")
    assert read_header(tmp_path / "c.png")[:2] == (10, 30) and raw.shape == (30, 10, 3)
    assert raw.dtype == np.uint16 and tuple(raw[27, 8]) == (4000, 2000, 1000)  # turned clockwise


def test_tiff_stacks_are_refused_and_planar_rgb_is_read_as_rgb(tmp_path):
    rng = np.random.default_rng(13)
    stack = rng.integers(0, 4096, (3, 32, 32)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(
        DatasetError, match=r"z\.tif: a TIFF of shape .* is a stack, not one image \(Z=3\)"
    ):
        read_raw(tmp_path / "z.tif")
    with pytest.raises(DatasetError, match="is a stack"):
        read_header(tmp_path / "z.tif")
    planar = rng.integers(0, 256, (3, 4, 5)).astype(np.uint8)  # 3 x H 4 x W 5, stored planar
    tifffile.imwrite(tmp_path / "p.tif", planar, photometric="rgb", planarconfig="separate")
    assert read_header(tmp_path / "p.tif") == (5, 4, 3)
    np.testing.assert_array_equal(read_raw(tmp_path / "p.tif"), np.moveaxis(planar, 0, -1))


def test_to_dir_never_touches_the_users_dataset(tmp_path):
    rng = np.random.default_rng(14)
    arrays = {f"img/{i}.png": rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8) for i in range(3)}
    root = _write(tmp_path / "d", arrays)
    before = (root / "annotations.json").read_text()
    coco = _dataset(root)
    with pytest.raises(DatasetError, match="the output folder is the dataset folder itself"):
        coco.subset([1]).to_dir(root)
    assert (root / "annotations.json").read_text() == before
    inside = root / "processed"  # an output folder inside the dataset: ours to prune
    coco.to_dir(inside)
    coco.subset([1]).to_dir(inside)
    assert sorted(p.name for p in (inside / "img").iterdir()) == ["0.png"]
    assert len(list((root / "img").iterdir())) == 3  # the user's files are all there
    out = tmp_path / "out"  # the dataset reached through a symlink inside the output folder
    out.mkdir()
    (out / "raw").symlink_to(root)
    linked = _dataset(out / "raw")
    linked.to_dir(out)
    assert (out / "raw").is_symlink() and len(list((root / "img").iterdir())) == 3


def test_all_nan_float_images_fall_back_to_per_image_scaling(tmp_path):
    nan = np.full((SIZE, SIZE), np.nan, np.float32)
    coco = _dataset(_write(tmp_path / "nan", {f"{i}.tif": nan for i in range(4)}))
    info = compute_stats(coco, INTENSITY)["intensity"]
    assert info["range_used"] is None and info["scaling"].startswith("per image")
    t = _loaded(coco, {"intensity": info}, 1)
    assert torch.isfinite(t).all()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"percentiles": 5}, r"intensity\.percentiles: invalid value 5"),
        ({"sample_images": "abc"}, r"intensity\.sample_images: invalid value 'abc'"),
        ({"pixels_per_image": 0}, r"intensity\.pixels_per_image: invalid value 0"),
        ({"percentile": [1, 99]}, r"unknown intensity setting\(s\) \['percentile'\]"),
        ({"mode": "autoo"}, r"intensity\.mode: invalid value 'autoo'"),
    ],
)
def test_bad_intensity_settings_name_the_key(tmp_path, settings, message):
    coco = _dataset(
        _write(tmp_path / "s", {f"{i}.png": np.zeros((SIZE, SIZE), np.uint8) for i in range(4)})
    )
    with pytest.raises(Exception, match=message):
        compute_stats(coco, settings)
    with pytest.raises(Exception, match=message):
        V.validate_dataset(coco, intensity=settings)
