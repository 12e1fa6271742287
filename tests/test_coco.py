"""The COCO directory model: round trip, category id <-> label mapping, lazy image reading of
the supported formats, and refusal of file names that leave the dataset directory."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset
from smallobj_pipeline.detection.errors import DatasetError


def _write_coco(root, images, annotations=(), categories=({"id": 1, "name": "a"},)):
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.json").write_text(
        json.dumps(
            {
                "images": list(images),
                "annotations": list(annotations),
                "categories": list(categories),
            }
        )
    )
    return root


def test_round_trip_preserves_images_annotations_and_splits(tmp_path):
    src = generate_sample_dataset(
        tmp_path / "src",
        num_images=5,
        image_size=64,
        seed=2,
        min_objects=2,
        max_objects=5,
        max_side=12,
        write_splits=True,
    )
    first = CocoDataset.from_dir(src)
    first.to_dir(tmp_path / "copy")
    second = CocoDataset.from_dir(tmp_path / "copy")

    assert second.images == first.images
    assert second.annotations == first.annotations
    assert second.categories == first.categories
    assert second.splits == first.splits and sorted(second.splits) == ["test", "train", "val"]
    for img in first.images:
        assert second.image_path(img).read_bytes() == first.image_path(img).read_bytes()
    # a subset written out keeps only its images, annotations and split members
    sub = first.subset(first.splits["train"])
    sub.to_dir(tmp_path / "train_only", link_images=False)
    third = CocoDataset.from_dir(tmp_path / "train_only")
    assert [i["id"] for i in third.images] == sorted(first.splits["train"])
    assert {a["image_id"] for a in third.annotations} <= set(first.splits["train"])
    assert third.splits["val"] == [] and third.splits["train"] == first.splits["train"]


def test_non_contiguous_category_ids_map_to_contiguous_labels_and_back(tmp_path):
    root = _write_coco(
        tmp_path / "d",
        [],
        categories=[{"id": 7, "name": "b"}, {"id": 3, "name": "a"}, {"id": 12, "name": "c"}],
    )
    coco = CocoDataset.from_dir(root)
    assert coco.num_classes == 3
    assert coco.label_of_category == {3: 1, 7: 2, 12: 3}
    assert coco.category_of_label == {1: 3, 2: 7, 3: 12}
    assert coco.category_names() == {7: "b", 3: "a", 12: "c"}


def test_images_are_read_lazily_in_every_supported_format(tmp_path):
    root = tmp_path / "fmt"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(20, 30), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    Image.fromarray(gray).save(root / "img/gray.png")
    Image.fromarray(rgb).save(root / "img/rgb.png")
    Image.fromarray(gray).save(root / "img/gray.jpg", quality=95)
    Image.fromarray(rgb).save(root / "img/rgb.jpeg", quality=95)
    tifffile.imwrite(root / "img/g16.tif", gray.astype(np.uint16) * 257)
    tifffile.imwrite(root / "img/rgb8.tiff", rgb)
    names = ["gray.png", "rgb.png", "gray.jpg", "rgb.jpeg", "g16.tif", "rgb8.tiff", "missing.png"]
    images = [
        {"id": i + 1, "file_name": f"img/{n}", "width": 30, "height": 20}
        for i, n in enumerate(names)
    ]
    coco = CocoDataset.from_dir(
        _write_coco(root, images)
    )  # loading reads no image: the missing one is fine

    got = {n: coco.read_image(i + 1, {"mode": "fixed"}) for i, n in enumerate(names[:-1])}
    for n, arr in got.items():
        assert arr.dtype == np.uint8, n
    faithful = coco.read_image(5)  # default intensity: more than 8 bits become float in [0, 1]
    assert faithful.dtype == np.float32 and 0.0 <= faithful.min() and faithful.max() <= 1.0
    assert coco.read_raw(5).dtype == np.uint16
    assert got["gray.png"].shape == (20, 30) and np.array_equal(got["gray.png"], gray)
    assert got["rgb.png"].shape == (20, 30, 3) and np.array_equal(got["rgb.png"], rgb)
    assert (
        got["gray.jpg"].shape == (20, 30) and np.abs(got["gray.jpg"].astype(int) - gray).mean() < 12
    )
    assert got["rgb.jpeg"].shape == (20, 30, 3)
    assert np.array_equal(got["g16.tif"], gray)  # 16-bit scaled to 8-bit under intensity 'fixed'
    assert np.array_equal(got["rgb8.tiff"], rgb)
    with pytest.raises(DatasetError, match=r"image id 7: .*missing\.png.*not found"):
        coco.read_image(7)


@pytest.mark.parametrize("file_name", ["../outside.png", "img/../../outside.png", "/etc/passwd"])
def test_file_name_escaping_the_dataset_is_refused_naming_it(tmp_path, file_name):
    (tmp_path / "outside.png").write_bytes(b"")
    root = _write_coco(
        tmp_path / "ds", [{"id": 5, "file_name": file_name, "width": 1, "height": 1}]
    )
    coco = CocoDataset.from_dir(root)
    with pytest.raises(DatasetError) as excinfo:
        coco.image_path(5)
    assert file_name in str(excinfo.value) and "image id 5" in str(excinfo.value)
    with pytest.raises(DatasetError, match="image id 5"):
        coco.read_image(5)


def test_malformed_annotations_name_the_file_and_field(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "annotations.json").write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DatasetError, match=r"annotations\.json.*'annotations'"):
        CocoDataset.from_dir(root)
    (root / "annotations.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2]}],
                "categories": [],
            }
        )
    )
    with pytest.raises(DatasetError, match=r"annotation id 9.*bbox"):
        CocoDataset.from_dir(root)
