"""Small-object defaults: anchors cover the observed boxes, detections/proposals exceed the most
crowded image, tiny objects are upsampled and large ones left alone, user settings win."""

from __future__ import annotations

import numpy as np
import pytest

from smallobj_pipeline.detection.errors import ConfigError
from smallobj_pipeline.detection.modeling.anchors import (
    derive_anchor_sizes,
    derive_detections_per_image,
    derive_input_scale,
    derive_proposal_counts,
    effective_scale,
    resolve_small_object_defaults,
)
from smallobj_pipeline.detection.modeling.config import ModelConfig

ALL_ON = {"anchors": True, "detections": True, "input_scale": True}


def _sides(lo=6.0, hi=40.0, n=500, seed=0):
    rng = np.random.default_rng(seed)
    return list(np.exp(rng.uniform(np.log(lo), np.log(hi), n)))


def test_anchor_sizes_fit_the_median_object_and_double_per_level():
    sides = _sides(6, 40)
    sizes = derive_anchor_sizes(sides)
    assert len(sizes) == 5 and all(isinstance(s, int) for s in sizes)
    # P2 (stride 4) matches the median object; each level doubles, like the FPN strides
    assert sizes[0] == round(float(np.median(sides)))
    assert [b / a for a, b in zip(sizes, sizes[1:])] == [2, 2, 2, 2]
    # the observed range is covered: the largest boxes fit under the top levels
    assert sizes[-1] >= np.percentile(sides, 98)


def test_anchor_sizes_degenerate_inputs():
    assert derive_anchor_sizes([]) == [32, 64, 128, 256, 512]  # nothing known: torchvision's
    assert derive_anchor_sizes([float("nan"), 0, -3]) == [32, 64, 128, 256, 512]
    assert derive_anchor_sizes([10.0] * 50) == [10, 20, 40, 80, 160]
    assert derive_anchor_sizes([1.0, 2.0, 2.5]) == [
        8,
        16,
        32,
        64,
        128,
    ]  # never below 2x the P2 stride
    assert derive_anchor_sizes([20.0], num_levels=3) == [20, 40, 80]


def test_detections_and_proposals_exceed_the_most_crowded_image():
    assert derive_detections_per_image(30) == 100
    assert derive_detections_per_image(400) == 600
    assert derive_detections_per_image(400) > 400
    props = derive_proposal_counts(800)
    assert props == {"rpn_post_nms_top_n_train": 3200, "rpn_post_nms_top_n_test": 3200}
    assert derive_proposal_counts(10) == {
        "rpn_post_nms_top_n_train": 2000,
        "rpn_post_nms_top_n_test": 1000,
    }


def test_input_scale_upsamples_tiny_objects_and_leaves_large_ones():
    tiny = derive_input_scale(median_side=5, smallest_anchor=16, image_size=[320, 256])
    assert tiny["min_size"] > 256 and tiny["max_size"] > 320
    assert effective_scale(tiny["min_size"], tiny["max_size"], [320, 256]) == pytest.approx(
        3.2, rel=0.01
    )
    large = derive_input_scale(median_side=40, smallest_anchor=16, image_size=[320, 256])
    assert large == {"min_size": 256, "max_size": 320}  # native size: the resize is the identity
    capped = derive_input_scale(median_side=1, smallest_anchor=32, image_size=[320, 256])
    assert capped == {"min_size": 1024, "max_size": 1280}  # at most 4x
    side_cap = derive_input_scale(median_side=2, smallest_anchor=16, image_size=[1000, 800])
    assert side_cap["max_size"] == 2048  # long side capped
    huge = derive_input_scale(median_side=2, smallest_anchor=16, image_size=[4000, 3000])
    assert huge == {"min_size": 3000, "max_size": 4000}  # never downscaled unless asked
    down = derive_input_scale(2, 16, [4000, 3000], allow_downscale=True)
    assert down["max_size"] == 2048


STATS = {
    "train_box_sides": _sides(4, 12),
    "max_objects_per_image": 250,
    "median_box_side": 7.0,
    "image_size_median": [256, 256],
}


def test_resolve_fills_unset_keys_consistently():
    cfg = {
        "backbone": "resnet18",
        "anchor_sizes": "auto",
        "min_size": "auto",
        "max_size": None,
        "box_detections_per_img": "auto",
        "rpn_post_nms_top_n_train": "auto",
        "rpn_post_nms_top_n_test": "auto",
    }
    out, derived = resolve_small_object_defaults(cfg, STATS, ALL_ON)
    scale = 16 / 7.0  # the median object is brought to 16 px
    assert out["min_size"] == round(256 * scale) and out["max_size"] == round(256 * scale)
    # anchors are in network-input pixels: the observed sides times the input scale
    scaled = np.array(STATS["train_box_sides"]) * scale
    assert out["anchor_sizes"][0] == round(
        float(np.median(scaled))
    )  # = 16: the scaled median object
    assert out["anchor_sizes"][-1] >= np.percentile(scaled, 98) - 1
    assert out["box_detections_per_img"] == 375
    assert out["rpn_post_nms_top_n_train"] == 2000 and out["rpn_post_nms_top_n_test"] == 1000
    assert set(derived) == {
        "min_size",
        "max_size",
        "anchor_sizes",
        "box_detections_per_img",
        "rpn_post_nms_top_n_train",
        "rpn_post_nms_top_n_test",
    }
    assert all("why" in d and "value" in d for d in derived.values())
    assert out["backbone"] == "resnet18" and cfg["anchor_sizes"] == "auto"  # input not mutated
    ModelConfig.from_dict(out).resolved()  # the factory accepts the result


def test_resolve_keeps_user_settings():
    cfg = {
        "anchor_sizes": [16, 32, 64, 128, 256],
        "min_size": 512,
        "max_size": "auto",
        "box_detections_per_img": 50,
        "rpn_post_nms_top_n_train": "auto",
    }
    out, derived = resolve_small_object_defaults(cfg, STATS, ALL_ON)
    assert out["anchor_sizes"] == [16, 32, 64, 128, 256]
    assert out["min_size"] == 512
    assert out["box_detections_per_img"] == 50
    assert (
        "anchor_sizes" not in derived
        and "min_size" not in derived
        and "box_detections_per_img" not in derived
    )
    assert "max_size" in derived and "rpn_post_nms_top_n_train" in derived


def test_switches_off_leave_torchvision_defaults_and_anchor_units_follow_the_resize():
    cfg = {
        "anchor_sizes": "auto",
        "min_size": "auto",
        "max_size": "auto",
        "box_detections_per_img": "auto",
    }
    out, derived = resolve_small_object_defaults(
        cfg, STATS, {"anchors": False, "detections": False, "input_scale": False}
    )
    assert out == cfg and derived == {}
    # input scale off: torchvision resizes 256 -> 800, and derived anchors follow that scale
    out, derived = resolve_small_object_defaults(
        cfg, STATS, {"anchors": True, "detections": False, "input_scale": False}
    )
    assert out["min_size"] == "auto"
    scaled = np.array(STATS["train_box_sides"]) * 800 / 256
    assert out["anchor_sizes"][-1] >= np.percentile(scaled, 98) - 1


def test_resolve_without_statistics_and_bad_switches():
    cfg = {"anchor_sizes": "auto", "min_size": "auto"}
    out, derived = resolve_small_object_defaults(cfg, {}, ALL_ON)
    assert out == cfg and derived == {}
    out, _ = resolve_small_object_defaults(cfg, None, None)
    assert out == cfg
    with pytest.raises(ConfigError, match="anchorz"):
        resolve_small_object_defaults(cfg, STATS, {"anchorz": True})
