"""Train/val/test split: seeded, independent of file order, grouped by image, ratios checked,
split files shipped with the dataset honoured."""

import logging
import random

import pytest

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.split import assign_splits
from smallobj_pipeline.detection.errors import ConfigError, DatasetError


def _dataset(n, root="/nonexistent", splits=None, id_start=100):
    images = [
        {"id": id_start + 3 * i, "file_name": f"images/{i}.png", "width": 64, "height": 64}
        for i in range(n)
    ]
    annotations = [
        {
            "id": k,
            "image_id": img["id"],
            "category_id": 1,
            "bbox": [1, 1, 5, 5],
            "area": 25,
            "iscrowd": 0,
        }
        for k, img in enumerate((img for img in images for _ in range(3)), start=1)
    ]
    return CocoDataset(
        root=root,
        images=images,
        annotations=annotations,
        categories=[{"id": 1, "name": "a"}],
        splits=splits or {},
    )


def test_same_seed_same_split_other_seed_other_split():
    coco = _dataset(40)
    a = assign_splits(coco, seed=1)
    assert assign_splits(coco, seed=1).splits == a.splits
    assert assign_splits(coco, seed=2).splits != a.splits
    assert coco.splits == {}, "the input dataset is left unchanged"


def test_split_does_not_depend_on_the_order_of_images():
    coco = _dataset(30)
    shuffled = _dataset(30)
    random.Random(0).shuffle(shuffled.images)
    random.Random(1).shuffle(shuffled.annotations)
    assert assign_splits(shuffled, seed=5).splits == assign_splits(coco, seed=5).splits


def test_sizes_follow_ratios_and_images_are_not_shared():
    coco = assign_splits(_dataset(20), ratios={"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    assert {k: len(v) for k, v in coco.splits.items()} == {"train": 14, "val": 3, "test": 3}
    members = [i for v in coco.splits.values() for i in v]
    assert sorted(members) == sorted(
        img["id"] for img in coco.images
    )  # each image in exactly one split
    # grouped by image: each annotation goes with its image, none is lost or duplicated
    per_split = [coco.split(name).annotations for name in ("train", "val", "test")]
    assert sum(len(a) for a in per_split) == len(coco.annotations)
    for name in ("train", "val", "test"):
        assert {a["image_id"] for a in coco.split(name).annotations} <= set(coco.splits[name])


@pytest.mark.parametrize("n", [3, 4, 5])
def test_every_split_gets_an_image_from_three_images_on(n):
    sizes = {k: len(v) for k, v in assign_splits(_dataset(n), seed=3).splits.items()}
    assert all(sizes[k] >= 1 for k in ("train", "val", "test")) and sum(sizes.values()) == n


@pytest.mark.parametrize(
    "ratios, fragment",
    [
        ({"train": 0.8, "val": 0.15, "test": 0.15}, "sum to 1"),
        ({"train": 1.2, "val": -0.1, "test": -0.1}, "non-negative"),
        ({"train": 0.7, "validation": 0.3}, "validation"),
    ],
)
def test_bad_ratios_are_a_config_error_naming_them(ratios, fragment):
    with pytest.raises(ConfigError, match=fragment) as excinfo:
        assign_splits(_dataset(10), ratios=ratios)
    assert "ratios" in str(excinfo.value)


def test_split_files_of_the_dataset_are_honoured(tmp_path):
    coco = _dataset(10)
    ids = [img["id"] for img in coco.images]
    given = {"train": ids[:5], "val": ids[5:8], "test": ids[8:]}
    coco.root = tmp_path / "src"
    coco.root.mkdir()
    for img in coco.images:  # to_dir needs the files
        (coco.root / img["file_name"]).parent.mkdir(exist_ok=True)
        (coco.root / img["file_name"]).write_bytes(b"x")
    coco.splits = given
    loaded = CocoDataset.from_dir(coco.to_dir(tmp_path / "with_splits"))

    assert assign_splits(loaded, seed=9).splits == given
    assert assign_splits(loaded, seed=9, use_existing=False).splits != given


def test_missing_val_and_test_are_carved_from_train_with_a_warning(caplog):
    coco = _dataset(20, splits={"train": [100 + 3 * i for i in range(20)]})
    with caplog.at_level(logging.WARNING, logger="smallobj_pipeline.detection.data.split"):
        out = assign_splits(coco, seed=4)
    assert "val / test" in caplog.text
    assert {k: len(v) for k, v in out.splits.items()} == {"train": 14, "val": 3, "test": 3}
    assert assign_splits(coco, seed=4).splits == out.splits


def test_given_test_split_is_kept_when_only_val_is_carved():
    ids = [100 + 3 * i for i in range(20)]
    coco = _dataset(20, splits={"train": ids[:16], "test": ids[16:]})
    out = assign_splits(coco, seed=4)
    assert out.splits["test"] == ids[16:]
    assert out.splits["val"] and set(out.splits["val"]) <= set(ids[:16])
    assert set(out.splits["train"]).isdisjoint(out.splits["val"])


def test_image_in_two_split_files_is_an_error_naming_it():
    ids = [100 + 3 * i for i in range(6)]
    coco = _dataset(6, splits={"train": ids[:4], "val": ids[3:5], "test": ids[5:]})
    with pytest.raises(DatasetError, match=rf"image id {ids[3]} is in both the 'train' and 'val'"):
        assign_splits(coco)
