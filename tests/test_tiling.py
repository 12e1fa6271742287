"""Slice-aided training for large scenes: the tile grid, boxes cut by tile edges, the tiled
training split (never sharing a scene with validation/test), the auto decision, the merge of
sliced predictions, and a tiled experiment trained and scored on whole images through Kedro."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from kedro_project import make_project, run_pipeline

from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset
from smallobj_pipeline.detection.data.split import with_splits
from smallobj_pipeline.detection.data.stats import compute_stats, plot_stats
from smallobj_pipeline.detection.data.tiling import (
    clip_annotation,
    plan_tiling,
    tile_dataset,
    tile_windows,
)
from smallobj_pipeline.detection.errors import ConfigError
from smallobj_pipeline.detection.evaluation.sliced import SliceConfig, sliced_predict


# ---------------------------------------------------------------------- the grid
@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [(1000, 700, 256, 40), (256, 256, 256, 0.2), (300, 90, 128, 0.25), (2048, 2048, 320, 24)],
)
def test_tiles_cover_every_pixel_inside_the_image_with_the_overlap(width, height, tile, overlap):
    covered = np.zeros((height, width), dtype=int)
    windows = tile_windows(width, height, tile, overlap)
    for x, y, w, h in windows:
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
        assert (w, h) == (min(tile, width), min(tile, height))
        covered[y : y + h, x : x + w] += 1
    assert covered.min() >= 1
    want = overlap if overlap >= 1 else round(overlap * tile)
    xs = sorted({x for x, *_ in windows})
    assert all(a + tile - b >= want for a, b in zip(xs, xs[1:], strict=False))


def test_box_across_a_tile_edge_is_clipped_kept_or_dropped_by_min_visibility():
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [90, 10, 20, 10], "area": 200}
    window = (0, 0, 100, 100)  # 10 of the box's 20 px width are inside: half of it
    kept = clip_annotation(ann, window, min_visibility=0.5)
    assert kept["bbox"] == [90, 10, 10, 10] and kept["area"] == pytest.approx(100)
    assert clip_annotation(ann, window, min_visibility=0.6) is None
    shifted = clip_annotation(ann, (80, 0, 100, 100), min_visibility=0.3)
    assert shifted["bbox"] == [10, 10, 20, 10]  # whole, in the tile's coordinates
    assert clip_annotation(ann, (200, 0, 100, 100), 0.0) is None  # outside
    crowd = {**ann, "iscrowd": 1}
    assert clip_annotation(crowd, window, min_visibility=0.9)["iscrowd"] == 1  # COCO: ignore area


# ---------------------------------------------------------------------- the tiled split
@pytest.fixture(scope="module")
def large(tmp_path_factory):
    root = generate_sample_dataset(
        tmp_path_factory.mktemp("large") / "coco", num_images=6, image_size=320, seed=5,
        min_objects=20, max_objects=40, min_side=6, max_side=10,
    )  # fmt: skip
    coco = CocoDataset.from_dir(root)
    ids = [img["id"] for img in coco.images]
    return with_splits(coco, {"train": ids[:3], "val": ids[3:4], "test": ids[4:]})


def test_auto_tiles_large_images_of_tiny_objects_and_not_the_bundled_sample(tmp_path, large):
    big = generate_sample_dataset(
        tmp_path / "big", num_images=2, image_size=1024, seed=1, min_objects=5, max_objects=10,
        min_side=7, max_side=9,
    )  # fmt: skip
    plan = plan_tiling(CocoDataset.from_dir(big), {"mode": "auto"})
    assert plan["tiled"] and plan["tile_size"] < 512, plan
    assert "1024 px >" in plan["reason"]
    sample = generate_sample_dataset(tmp_path / "sample")  # the bundled sample's arguments
    plan = plan_tiling(CocoDataset.from_dir(sample), {"mode": "auto"})
    assert not plan["tiled"] and "256 px <=" in plan["reason"]


def test_tiled_split_keeps_scenes_apart_and_tiles_read_their_window(large):
    tiled, plan = tile_dataset(large, {"mode": "on", "tile_size": 128, "overlap": 16})
    assert plan["tiled"] and plan["tiles"] == len(tiled.splits["train"]) > 3
    sources = {tiled.images_by_id[i]["tile"]["source_id"] for i in tiled.splits["train"]}
    assert sources == set(large.splits["train"])
    whole = set(tiled.splits["val"]) | set(tiled.splits["test"])
    assert whole == set(large.splits["val"]) | set(large.splits["test"])
    assert not sources & whole and all("tile" not in tiled.images_by_id[i] for i in whole)
    tile = tiled.images_by_id[tiled.splits["train"][-1]]
    x, y = tile["tile"]["x"], tile["tile"]["y"]
    source = large.read_image(tile["tile"]["source_id"])
    assert np.array_equal(tiled.read_image(tile), source[y : y + 128, x : x + 128])
    for ann in tiled.annotations_by_image[tile["id"]]:
        bx, by, bw, bh = ann["bbox"]
        assert 0 <= bx and bx + bw <= 128 + 1e-6 and 0 <= by and by + bh <= 128 + 1e-6
    stats = compute_stats(tiled)
    assert stats["image_size_median"] == [128, 128] and stats["tiling"]["tiles"] == plan["tiles"]
    legend = [t.get_text() for t in plot_stats(stats).axes[0].get_legend().get_texts()]
    assert "train (128 px tiles)" in legend


def test_empty_tiles_kept_as_negatives_by_the_seeded_fraction(large):
    def empty(fraction):
        tiled, plan = tile_dataset(
            large, {"mode": "on", "tile_size": 64, "overlap": 0, "negative_fraction": fraction}
        )
        n = sum(not tiled.annotations_by_image[i] for i in tiled.splits["train"])
        return n, plan

    none, plan0 = empty(0.0)
    every, plan1 = empty(1.0)
    assert none == 0 and every == plan1["negative_tiles_kept"] > 0
    assert plan0["negative_tiles_dropped"] == every
    assert empty(0.5) == empty(0.5)  # seeded


def test_tiling_off_returns_the_dataset_untouched(large):
    tiled, plan = tile_dataset(large, {"mode": "off"})
    assert tiled is large and plan["tiled"] is False
    assert "tiling" not in compute_stats(tiled)


def test_bad_tiling_settings_name_the_key(large):
    with pytest.raises(ConfigError, match="tiling.mode"):
        plan_tiling(large, {"mode": "sometimes"})
    with pytest.raises(ConfigError, match="tiling.overlap"):
        plan_tiling(large, {"tile_size": 64, "overlap": 64})


# ---------------------------------------------------------------------- merging tiles
class _BrightPixels(torch.nn.Module):
    """A fake detector: one box around the bright pixels each tile sees."""

    def forward(self, tiles):
        outs = []
        for t in tiles:
            ys, xs = torch.nonzero(t[0] > 0.5, as_tuple=True)
            if len(xs) == 0:
                outs.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                             "labels": torch.zeros(0, dtype=torch.long)})  # fmt: skip
                continue
            box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
            score = 0.5 + 0.004 * len(xs)  # the tile that sees more of it is surer
            outs.append({"boxes": torch.tensor(box, dtype=torch.float32),
                         "scores": torch.tensor([score]), "labels": torch.tensor([1])})  # fmt: skip
        return outs


def test_object_cut_by_a_tile_edge_comes_back_as_one_detection():
    image = torch.zeros(1, 128, 128)
    image[0, 20:34, 58:72] = 1.0  # 14 px object across the first tile's right edge (x = 64)
    cfg = SliceConfig(enabled=True, tile_size=64, overlap=16, include_full_image=False)
    out = sliced_predict(_BrightPixels(), image, cfg)
    assert out["boxes"].tolist() == [[58.0, 20.0, 72.0, 34.0]]
    # plain NMS by IoU keeps the cut part as a second detection: why greedy NMM/IoS is default
    by_iou = cfg.model_copy(update={"merge": "nms", "match_metric": "iou"})
    nms = sliced_predict(_BrightPixels(), image, by_iou)
    assert len(nms["boxes"]) == 2


# ---------------------------------------------------------------------- through Kedro
TILED = {
    "dataset": {
        "root": "data/01_raw/sample",
        "sample": {
            "root": "data/01_raw/sample", "num_images": 8, "image_size": 160, "seed": 3,
            "min_objects": 8, "max_objects": 16, "min_side": 6, "max_side": 10,
        },
    },
    "split": {"use_existing": True, "seed": 1, "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
    "tiling": {"mode": "auto", "max_input_side": 128},
    "experiments": {"tiled": {"training": {"epochs": 1}}},
}  # fmt: skip


def test_large_images_train_on_tiles_and_are_scored_whole(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    project = make_project(tmp_path, TILED)
    local = project / "conf/local/parameters.yml"
    params = __import__("yaml").safe_load(local.read_text())
    defaults = __import__("yaml").safe_load(
        (project / "conf/base/parameters_experiments.yml").read_text()
    )["experiment_defaults"]
    defaults["training"].update({"batch_size": 2, "warmup_iters": 0, "val_loss": False})
    defaults["model"].update({"box_batch_size_per_image": 32, "rpn_post_nms_top_n_test": 100})
    local.write_text(__import__("yaml").safe_dump({**params, "experiment_defaults": defaults}))

    run_pipeline(project, "train")

    plan = json.loads((project / "data/08_reporting/tiling.json").read_text())
    assert plan["tiled"] and plan["tiles"] > 4, plan
    model_input = CocoDataset.from_dir(project / "data/05_model_input/coco")
    test_ids = model_input.splits["test"]
    assert all("tile" in model_input.images_by_id[i] for i in model_input.splits["train"])
    assert all(model_input.images_by_id[i]["width"] == 160 for i in test_ids)
    metrics = json.loads((project / "data/08_reporting/tiled/metrics.json").read_text())
    assert metrics["evaluated_on"].startswith("whole images, sliced:")
    preds = json.loads((project / "data/07_model_output/tiled/predictions.json").read_text())
    assert {p["image_id"] for p in preds} <= set(test_ids)
    # the project's numbers are pycocotools' on the merged whole-image predictions
    gt = COCO()
    gt.dataset = model_input.to_coco_dict(test_ids)
    gt.createIndex()
    assert preds, "one epoch on tiles gives some detections"
    ev = COCOeval(gt, gt.loadRes(preds), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert metrics["map"] == pytest.approx(max(float(ev.stats[0]), 0.0), abs=1e-6)
    assert metrics["map_50"] == pytest.approx(max(float(ev.stats[1]), 0.0), abs=1e-6)
    table = (project / "data/08_reporting/experiments.csv").read_text()
    assert "sliced" in table
