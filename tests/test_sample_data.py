"""The bundled sample generator: deterministic, counts and sizes as asked, tight boxes inside the
images, visible objects, 1-channel PNGs by default."""

import json

import numpy as np
import pytest
from PIL import Image

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.sample import dataset_exists, generate_sample_dataset
from smallobj_pipeline.detection.errors import ConfigError

ARGS = {
    "num_images": 8,
    "image_size": 160,
    "min_objects": 5,
    "max_objects": 12,
    "min_side": 6,
    "max_side": 20,
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    generate_sample_dataset(root, seed=4, **ARGS)
    return root


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(sample, tmp_path):
    again = generate_sample_dataset(tmp_path / "again", seed=4, **ARGS)
    other = generate_sample_dataset(tmp_path / "other", seed=5, **ARGS)

    assert (again / "annotations.json").read_bytes() == (sample / "annotations.json").read_bytes()
    for png in sorted((sample / "images").glob("*.png")):
        assert (again / "images" / png.name).read_bytes() == png.read_bytes(), png.name
    assert (other / "annotations.json").read_bytes() != (sample / "annotations.json").read_bytes()


def test_counts_sizes_and_coco_fields(sample):
    coco = CocoDataset.from_dir(sample)
    data = json.loads((sample / "annotations.json").read_text())

    assert len(coco.images) == ARGS["num_images"]
    assert [c["name"] for c in data["categories"]] == ["ring", "cross"]
    assert [c["id"] for c in data["categories"]] == [1, 2]
    assert len({a["id"] for a in coco.annotations}) == len(coco.annotations)
    for img in coco.images:
        anns = coco.annotations_by_image[img["id"]]
        assert ARGS["min_objects"] <= len(anns) <= ARGS["max_objects"]
        assert (img["width"], img["height"]) == (160, 160)
        for a in anns:
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"], a
            assert (
                ARGS["min_side"] <= w <= ARGS["max_side"]
                and ARGS["min_side"] <= h <= ARGS["max_side"]
            ), a
            assert a["area"] == w * h and a["iscrowd"] == 0 and a["category_id"] in (1, 2)
    # both classes are drawn
    assert {a["category_id"] for a in coco.annotations} == {1, 2}


def test_images_are_one_channel_pngs_with_objects_standing_out(sample):
    coco = CocoDataset.from_dir(sample)
    contrasts = []
    for img in coco.images:
        with Image.open(coco.image_path(img)) as pil:
            assert (
                pil.format == "PNG"
                and pil.mode == "L"
                and pil.size == (img["width"], img["height"])
            )
        arr = coco.read_image(img).astype(float)
        for a in coco.annotations_by_image[img["id"]]:
            x, y, w, h = a["bbox"]
            inside = arr[y : y + h, x : x + w]
            ring = np.concatenate(
                [
                    arr[max(0, y - 3) : y, x : x + w].ravel(),
                    arr[y + h : y + h + 3, x : x + w].ravel(),
                    arr[y : y + h, max(0, x - 3) : x].ravel(),
                    arr[y : y + h, x + w : x + w + 3].ravel(),
                ]
            )
            if ring.size:
                contrasts.append(np.percentile(inside, 90) - np.median(ring))
    # the drawn glyph is clearly brighter than its surroundings for (nearly) every object
    assert np.mean(np.array(contrasts) > 40) > 0.95


def test_box_is_the_tight_drawn_extent(sample):
    """Every edge row/column of a box holds glyph pixels; the row/column just outside is plain
    background (neither a loose nor a clipped box)."""
    coco = CocoDataset.from_dir(sample)
    checked = 0
    for img in coco.images[:3]:
        arr = coco.read_image(img).astype(float)
        H, W = arr.shape
        for a in coco.annotations_by_image[img["id"]]:
            x, y, w, h = a["bbox"]
            if x < 1 or y < 1 or x + w >= W or y + h >= H:
                continue
            bg = np.median(
                np.concatenate(
                    [
                        arr[y - 1, x : x + w],
                        arr[y + h, x : x + w],
                        arr[y : y + h, x - 1],
                        arr[y : y + h, x + w],
                    ]
                )
            )
            inner_edges = [
                arr[y, x : x + w],
                arr[y + h - 1, x : x + w],
                arr[y : y + h, x],
                arr[y : y + h, x + w - 1],
            ]
            outer_edges = [
                arr[y - 1, x : x + w],
                arr[y + h, x : x + w],
                arr[y : y + h, x - 1],
                arr[y : y + h, x + w],
            ]
            assert all(e.max() - bg > 40 for e in inner_edges), a
            assert all(e.max() - bg < 40 for e in outer_edges), a
            checked += 1
    assert checked > 10


def test_three_channel_option_writes_rgb(tmp_path):
    root = generate_sample_dataset(
        tmp_path / "rgb",
        num_images=2,
        image_size=64,
        seed=1,
        min_objects=2,
        max_objects=4,
        channels=3,
    )
    coco = CocoDataset.from_dir(root)
    with Image.open(coco.image_path(coco.images[0])) as pil:
        assert pil.mode == "RGB"
    assert coco.read_image(coco.images[0]).shape == (64, 64, 3)


def test_write_splits_gives_70_15_15_disjoint_splits(tmp_path):
    root = generate_sample_dataset(
        tmp_path / "s",
        num_images=20,
        image_size=48,
        seed=2,
        min_objects=1,
        max_objects=3,
        max_side=12,
        write_splits=True,
    )
    coco = CocoDataset.from_dir(root)
    sizes = {k: len(v) for k, v in coco.splits.items()}
    assert sizes == {"train": 14, "val": 3, "test": 3}
    all_ids = [i for v in coco.splits.values() for i in v]
    assert sorted(all_ids) == sorted(img["id"] for img in coco.images)


def test_dataset_exists_only_for_a_complete_dataset(tmp_path):
    root = tmp_path / "d"
    assert not dataset_exists(root)
    generate_sample_dataset(
        root, num_images=2, image_size=48, seed=0, min_objects=1, max_objects=2, max_side=12
    )
    assert dataset_exists(root)
    (root / "images" / "0001.png").unlink()
    assert not dataset_exists(root)


def test_a_sample_made_with_other_settings_is_not_reused(tmp_path):
    root = tmp_path / "d"
    generate_sample_dataset(
        root, num_images=2, image_size=48, seed=0, min_objects=1, max_objects=2, max_side=12
    )
    assert dataset_exists(root, {"num_images": 2, "segmentation": False})
    assert not dataset_exists(root, {"segmentation": True})  # a box-only sample, masks wanted
    assert not dataset_exists(root, {"num_images": 3})
    # a sample written before the `segmentation` setting existed was made without masks
    data = json.loads((root / "annotations.json").read_text())
    del data["info"]["params"]["segmentation"]
    (root / "annotations.json").write_text(json.dumps(data))
    assert dataset_exists(root, {"segmentation": False})
    assert not dataset_exists(root, {"segmentation": True})


def test_unknown_class_name_is_a_config_error_listing_the_shapes(tmp_path):
    with pytest.raises(ConfigError, match="ring") as excinfo:
        generate_sample_dataset(tmp_path / "x", num_images=1, classes=("ring", "star"))
    assert "star" in str(excinfo.value)
    assert not (tmp_path / "x" / "annotations.json").exists()
