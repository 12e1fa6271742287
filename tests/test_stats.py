"""Dataset statistics on a hand-made dataset with known boxes, and their figure."""

import io
import json
import math

import pytest
from matplotlib.figure import Figure

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.stats import compute_stats, plot_stats

# category ids 3 ("dot") and 7 ("bar"); areas: small < 1024 <= medium < 9216 <= large
BOXES = {
    1: [(3, [0, 0, 10, 10]), (7, [0, 0, 20, 5]), (3, [0, 0, 40, 40])],  # small, small, medium
    2: [(7, [0, 0, 100, 100])],  # large
    3: [],
    4: [(3, [1, 1, 4, 4]), (3, [2, 2, 8, 2]), (7, [5, 5, 30, 30])],  # small, small, small (900)
}


@pytest.fixture
def coco():
    sizes = {1: (100, 80), 2: (200, 120), 3: (100, 80), 4: (300, 80)}
    images = [
        {"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in sizes.items()
    ]
    annotations = []
    for image_id, boxes in BOXES.items():
        for cat, bbox in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    return CocoDataset(
        root="/nowhere",
        images=images,
        annotations=annotations,
        categories=[{"id": 7, "name": "bar"}, {"id": 3, "name": "dot"}],
        splits={"train": [1, 2], "val": [3], "test": [4]},
    )


def test_overall_counts_shares_and_top_level_keys(coco):
    stats = compute_stats(coco)
    json.dumps(stats, allow_nan=False)
    overall = stats["overall"]

    assert overall["num_images"] == 4 and overall["num_objects"] == 7
    assert overall["objects_per_class"] == {"bar": 3, "dot": 4}
    assert overall["area_count"] == {"small": 5, "medium": 1, "large": 1}
    assert overall["area_share"]["small"] == pytest.approx(5 / 7, abs=1e-4)
    assert overall["area_share"]["large"] == pytest.approx(1 / 7, abs=1e-4)
    assert overall["objects_per_image"] == {
        "min": 0,
        "median": 2.0,
        "mean": 1.75,
        "max": 3,
        "p95": 3.0,
    }
    assert overall["box_width"]["max"] == 100 and overall["box_height"]["min"] == 2

    sides = sorted(math.sqrt(w * h) for boxes in BOXES.values() for _, (_, _, w, h) in boxes)
    assert stats["median_box_side"] == pytest.approx(sides[3], abs=1e-4)  # 10.0
    assert stats["box_side_percentiles"]["min"] == 4 and stats["box_side_percentiles"]["max"] == 100
    assert stats["max_objects_per_image"] == 3
    assert stats["image_size_median"] == [150.0, 80.0]
    # train = images 1 and 2, in annotation order
    assert stats["train_box_sides"] == [10.0, 10.0, 40.0, 100.0]


def test_per_split_numbers(coco):
    splits = compute_stats(coco)["splits"]
    assert {k: (v["num_images"], v["num_objects"]) for k, v in splits.items()} == {
        "train": (2, 4),
        "val": (1, 0),
        "test": (1, 3),
    }
    assert splits["train"]["objects_per_class"] == {"bar": 2, "dot": 2}
    assert splits["val"]["objects_per_class"] == {"bar": 0, "dot": 0}
    assert splits["val"]["box_side"]["p50"] is None and splits["val"]["area_share"]["small"] is None
    assert splits["test"]["area_share"] == {"small": 1.0, "medium": 0.0, "large": 0.0}
    assert splits["test"]["box_side"]["p50"] == pytest.approx(4.0)  # sides 4, 4, 30


def test_without_splits_the_training_sides_come_from_all_images(coco):
    coco.splits = {}
    stats = compute_stats(coco)
    assert stats["splits"] == {} and stats["train_box_sides_source"] == "all"
    assert len(stats["train_box_sides"]) == 7


def test_figure_has_the_three_histograms_and_the_32px_line(coco):
    stats = compute_stats(coco)
    fig = plot_stats(stats)
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Box size", "Objects per image", "Objects per class"]
    assert any(list(line.get_xdata()) == [32, 32] for line in fig.axes[0].get_lines())
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["bar", "dot"]
    assert len(fig.axes[2].patches) == 2 * 3  # two classes x three splits
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.tell() > 5000


def test_empty_dataset_does_not_break(tmp_path):
    coco = CocoDataset(
        root=tmp_path,
        images=[{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
        annotations=[],
        categories=[{"id": 1, "name": "a"}],
    )
    stats = compute_stats(coco)
    assert stats["max_objects_per_image"] == 0 and stats["median_box_side"] is None
    assert stats["train_box_sides"] == []
    plot_stats(stats)
