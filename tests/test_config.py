"""The typed experiment config: every key declared once with a description, unknown keys and
wrong types refused with a message naming the key and the experiment, strict scalars (a bool is
not a number, a string is not a number), and the resolved configs of conf/base as before the
move to pydantic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smallobj_pipeline.config_loader import ProjectConfigLoader
from smallobj_pipeline.detection.data.augment import (
    AffineEntry,
    AugmentationConfig,
    BlurEntry,
    BrightnessContrastEntry,
    CropEntry,
    NoiseEntry,
)
from smallobj_pipeline.detection.engine.experiment import (
    EvaluationConfig,
    parse_experiment,
    resolve_experiment,
)
from smallobj_pipeline.detection.errors import ConfigError
from smallobj_pipeline.detection.modeling.anchors import SmallObjectSwitches
from smallobj_pipeline.detection.modeling.config import ModelConfig
from smallobj_pipeline.settings import CONFIG_LOADER_ARGS

REPO = Path(__file__).resolve().parents[1]
SECTIONS = [
    ModelConfig, AugmentationConfig, CropEntry, AffineEntry, BrightnessContrastEntry, NoiseEntry,
    BlurEntry, SmallObjectSwitches, EvaluationConfig,
]  # fmt: skip
DEFAULTS = {"model": {"backbone": "resnet18", "in_channels": 1}, "training": {"epochs": 1}}
# dataset statistics as the data pipeline writes them (a grey dataset of 256 px images)
STATS = {
    "train_box_sides": [10.0, 12.0, 14.0, 16.0, 18.0] * 20,
    "median_box_side": 14.0,
    "image_size_median": [256, 256],
    "max_objects_per_image": 120,
    "intensity": {
        "channels": {"grey": 10},
        "spec": {"mode": "auto", "percentiles": [0.1, 99.9], "low": None, "high": None},
    },
}


def _refused(overrides: dict, name: str = "exp_a") -> str:
    with pytest.raises(ConfigError) as info:
        resolve_experiment(name, DEFAULTS, overrides, STATS)
    return str(info.value)


@pytest.mark.parametrize("section", SECTIONS, ids=lambda c: c.__name__)
def test_every_key_is_declared_with_a_one_line_description(section):
    for key, info in section.model_fields.items():
        assert info.description, f"{section.__name__}.{key} has no description"
        assert "\n" not in info.description and len(info.description) <= 100, key


@pytest.mark.parametrize(
    ("overrides", "where", "unknown", "valid"),
    [
        ({"model": {"anchor_size": [8, 16, 32, 64, 128]}}, "model", "anchor_size", "anchor_sizes"),
        ({"augmentation": {"flip": 0.5}}, "augmentation", "flip", "hflip"),
        ({"augmentation": {"noise": {"p": 0.2, "var_limit": [10, 50]}}}, "augmentation.noise",
         "var_limit", "std"),
        ({"small_object_defaults": {"anchorz": False}}, "small_object_defaults", "anchorz",
         "anchors"),
        ({"evaluation": {"score_treshold": 0.3}}, "evaluation", "score_treshold",
         "score_threshold"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_refused_naming_it_the_experiment_and_the_valid_keys(
    overrides, where, unknown, valid
):
    message = _refused(overrides)
    assert message.startswith("experiment 'exp_a': ")
    assert f"{where}: unknown key(s) ['{unknown}']; valid keys are [" in message
    assert f"'{valid}'" in message


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"model": {"trainable_layers": True}}, "model.trainable_layers must be an integer"),
        ({"model": {"variant": "v3"}}, "model.variant must be one of ['v1', 'v2'], got 'v3'"),
        ({"model": {"min_size": "800"}}, "model.min_size must be an integer or a list"),
        ({"model": {"anchor_sizes": [8, 16, 32]}}, "model.anchor_sizes must be a list of"),
        ({"model": {"image_std": [0.2, 0.0, 0.2]}}, "model.image_std[1] must be > 0"),
        ({"augmentation": {"hflip": "0.5"}}, "augmentation.hflip must be a number"),
        ({"augmentation": {"enabled": "yes"}}, "augmentation.enabled must be true or false"),
        (
            {"augmentation": {"blur": {"limit": 4}}},
            "augmentation.blur.limit must be an odd integer",
        ),
        ({"augmentation": {"crop": {"scale": [1.0, 0.5]}}}, "augmentation.crop.scale must be [low"),
        ({"small_object_defaults": {"anchors": 1}}, "small_object_defaults.anchors must be true"),
        ({"evaluation": {"batch_size": 0}}, "evaluation.batch_size must be >= 1"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_key_and_the_experiment(overrides, key):
    message = _refused(overrides)
    assert message.startswith("experiment 'exp_a': ") and key in message


def test_combinations_checked_after_parsing_also_name_the_experiment():
    message = _refused({"model": {"pretrained": "none", "norm": "frozen_bn"}}, name="scratch")
    assert message.startswith("experiment 'scratch': model.norm 'frozen_bn'")


def test_strict_scalars_and_the_lenient_forms_kept_from_the_hand_written_checks():
    # a bool is not an integer, a string is not a number
    for cfg in (
        {"in_channels": True},
        {"max_size": True},
        {"rpn_nms_thresh": "0.7"},
        {"zero_init_residual": 1},
        {"trainable_layers": 3.0},
    ):
        with pytest.raises(ConfigError):
            ModelConfig.from_dict(cfg)
    # integral floats for sizes and counts, tuples for lists, auto in any case
    model = ModelConfig.from_dict(
        {
            "min_size": 800.0,
            "in_channels": 3.0,
            "anchor_sizes": (8, 16, 32, 64, 128),
            "box_detections_per_img": " AUTO ",
            "pretrained": None,
        }
    ).resolved()
    assert (model.min_size, model.in_channels, model.pretrained) == (800, 3, "none")
    assert model.anchor_sizes == [[8], [16], [32], [64], [128]]
    assert model.box_detections_per_img == 100
    # null/false switch an augmentation off; a bare probability takes the entry's defaults
    aug = AugmentationConfig.from_dict({"hflip": None, "crop": False, "blur": 0.2})
    assert (aug.hflip, aug.crop, aug.blur.p, aug.blur.limit) == (0.0, None, 0.2, 3)


def _base_configs() -> dict:
    params = ProjectConfigLoader(conf_source=str(REPO / "conf"), **CONFIG_LOADER_ARGS)["parameters"]
    return {
        name: resolve_experiment(name, params["experiment_defaults"], overrides, STATS)
        for name, overrides in params["experiments"].items()
    }


def test_the_resolved_configs_of_conf_base_are_unchanged():
    """Values taken from the resolution before the config was typed: config.json keeps the
    sections as declared (auto left for the factory), plus what the statistics filled in."""
    configs = _base_configs()
    small, tv = configs["r18_small_object"], configs["r18_torchvision_anchors"]
    assert list(small) == [
        "model",
        "small_object_defaults",
        "augmentation",
        "training",
        "evaluation",
        "description",
        "derived",
        "intensity",
        "name",
    ]
    assert small["model"]["anchor_sizes"] == [16, 32, 64, 128, 256]
    assert (small["model"]["min_size"], small["model"]["max_size"]) == (293, 293)
    assert small["model"]["box_detections_per_img"] == 180  # 1.5 x 120 objects
    assert small["model"]["norm"] == "auto" and small["model"]["aspect_ratios"] == [0.5, 1.0, 2.0]
    assert small["derived"]["in_channels"]["value"] == 1
    assert small["augmentation"]["min_area"] == 4  # as declared, not the parsed 4.0
    assert tv["model"]["anchor_sizes"] == "auto" and set(tv["derived"]) == {"in_channels"}
    # what build_model makes of them (the model file's model_config)
    resolved = parse_experiment(small).model.to_dict()
    assert resolved["norm"] == "gn" and resolved["trainable_layers"] == 5
    assert resolved["anchor_sizes"] == [[16], [32], [64], [128], [256]]
    assert resolved["aspect_ratios"] == [0.5, 1, 2] and resolved["frozen_bn_eps"] == 1e-05
    assert (resolved["image_mean"], resolved["image_std"]) == ([0.449], [0.226])
    assert resolved["rpn_pre_nms_top_n_test"] == 1000 and resolved["rpn_post_nms_top_n_test"] == 300
    tv_model = parse_experiment(tv).model
    assert tv_model.anchor_sizes == [[32], [64], [128], [256], [512]]
    assert tv_model.box_detections_per_img == 100


def test_a_resolved_config_parses_the_same_after_its_json_file():
    for cfg in _base_configs().values():
        again = parse_experiment(json.loads(json.dumps(cfg)))
        assert again == parse_experiment(cfg)
