"""The model factory: every variant builds, parameter counts equal the study's and torchvision's,
pretrained weights load from local files only (1-channel conv1 adaptation included), unsafe or
missing files are refused with a clear message, and layer freezing follows trainable_layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from smallobj_pipeline.detection.errors import ConfigError, WeightsError
from smallobj_pipeline.detection.modeling import weights as W
from smallobj_pipeline.detection.modeling.config import ModelConfig
from smallobj_pipeline.detection.modeling.factory import build_model, count_parameters

torch.set_num_threads(2)

SMALL = {"min_size": 96, "max_size": 96, "anchor_sizes": [8, 16, 32, 64, 128]}
# fewer proposals and RoIs: quick forward passes on CPU
FAST = {
    **SMALL,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 64,
    "rpn_batch_size_per_image": 64,
}

R18_FILE = "resnet18-f37072fd.pth"
COCO_V1_FILE = "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"


def _cfg_for(norm: str, **extra) -> dict:
    """frozen_bn only makes sense with pretrained weights: build that architecture without files."""
    pretrained = "backbone" if norm == "frozen_bn" else "none"
    return {"pretrained": pretrained, "norm": norm, **SMALL, **extra}


def _forward_both_modes(model: nn.Module, in_channels: int) -> None:
    images = [torch.rand(in_channels, 80, 96), torch.rand(in_channels, 96, 64)]
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels", "scores"}
    model.train()
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10.0, 20.0, 22.0], [40.0, 40.0, 52.0, 50.0]]),
            "labels": torch.tensor([1, 1]),
        },
        {"boxes": torch.tensor([[5.0, 6.0, 15.0, 14.0]]), "labels": torch.tensor([1])},
    ]
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


# ---------------------------------------------------------------------- every variant builds
@pytest.mark.parametrize("variant", ["v1", "v2"])
@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "resnet101"])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("norm", ["frozen_bn", "bn", "gn"])
def test_every_variant_builds(variant, backbone, in_channels, norm):
    model = build_model(
        _cfg_for(norm, variant=variant, backbone=backbone, in_channels=in_channels),
        1,
        load_weights=False,
    )
    assert isinstance(model, torchvision.models.detection.FasterRCNN)
    body = model.backbone.body
    assert body.conv1.in_channels == in_channels
    norm_type = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d, "gn": nn.GroupNorm}[norm]
    assert isinstance(body.bn1, norm_type) and isinstance(body.layer4[-1].conv1, nn.Conv2d)
    assert model.roi_heads.box_predictor.cls_score.out_features == 2  # 1 class + background
    assert model.rpn.head.conv.__len__() == (1 if variant == "v1" else 2)
    head = model.roi_heads.box_head
    assert type(head).__name__ == ("TwoMLPHead" if variant == "v1" else "FastRCNNConvFCHead")
    features = model.backbone(torch.zeros(1, in_channels, 64, 64))
    assert list(features) == ["0", "1", "2", "3", "pool"]
    assert model.smallobj_config["norm"] == norm


@pytest.mark.parametrize(
    "cfg,in_channels",
    [
        ({"backbone": "resnet18", "norm": "gn"}, 1),
        ({"backbone": "resnet34", "norm": "bn"}, 1),
        ({"backbone": "resnet50", "norm": "auto"}, 1),
        ({"backbone": "resnet101", "norm": "bn"}, 1),
        ({"backbone": "resnet18", "variant": "v2", "norm": "gn"}, 3),
    ],
)
def test_forward_eval_and_train(cfg, in_channels):
    torch.manual_seed(0)
    model = build_model({**FAST, **cfg, "in_channels": in_channels}, 1)
    _forward_both_modes(model, in_channels)


# ---------------------------------------------------------------------- parameter counts
STUDY_COUNTS = {  # seed 003 / SPEC: 1 input channel, 2 classes, pretrained-style backbone
    ("v1", "resnet18"): 28.27,
    ("v1", "resnet34"): 38.37,
    ("v1", "resnet50"): 41.29,
    ("v1", "resnet101"): 60.23,
    ("v2", "resnet50"): 43.25,
}


@pytest.mark.parametrize("variant,backbone", list(STUDY_COUNTS))
def test_parameter_counts_equal_the_study(variant, backbone):
    pretrained = "full" if backbone == "resnet50" else "backbone"
    model = build_model(
        {"variant": variant, "backbone": backbone, "pretrained": pretrained, "in_channels": 1},
        1,
        load_weights=False,
    )
    counts = count_parameters(model)
    assert round(counts["total"] / 1e6, 2) == STUDY_COUNTS[(variant, backbone)]
    assert model.smallobj_config["norm"] == (
        "frozen_bn" if variant == "v1" else "bn"
    )  # as torchvision's builders
    assert 0 < counts["trainable"] < counts["total"]  # default trainable_layers 3


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_equal_to_torchvision_builders(variant):
    builder = {
        "v1": torchvision.models.detection.fasterrcnn_resnet50_fpn,
        "v2": torchvision.models.detection.fasterrcnn_resnet50_fpn_v2,
    }[variant]
    reference = builder(weights=None, weights_backbone=None)  # 91 classes, BatchNorm, all trainable
    ours = build_model(
        {"variant": variant, "backbone": "resnet50", "in_channels": 3, "norm": "bn"}, 90
    )
    assert count_parameters(ours) == count_parameters(reference)
    a, b = reference.state_dict(), ours.state_dict()
    assert set(a) == set(b)
    assert all(a[k].shape == b[k].shape for k in a)


# ---------------------------------------------------------------------- weight files
def _randomised(state: dict) -> dict:
    """Random values everywhere (BN statistics too), so equality checks mean something."""
    out = {}
    for k, v in state.items():
        if v.is_floating_point():
            out[k] = torch.rand_like(v) + 0.5 if "running_var" in k else torch.randn_like(v)
        else:
            out[k] = v.clone()
    return out


@pytest.fixture(scope="module")
def r18_state():
    torch.manual_seed(1)
    return _randomised(torchvision.models.resnet18().state_dict())


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _assert_body_matches(body_state: dict, file_state: dict, skip=("fc.", "conv1.weight")) -> int:
    checked = 0
    for k, v in file_state.items():
        if any(k.startswith(s) for s in skip) or k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(body_state[k], v), k
        checked += 1
    return checked


def test_torchvision_file_names_come_from_the_installed_enums():
    files = W.torchvision_weight_files()
    assert files["backbone/resnet18"] == R18_FILE
    assert files["backbone/resnet34"] == "resnet34-b627a593.pth"
    assert files["backbone/resnet50"] == "resnet50-0676ba61.pth"
    assert (
        files["backbone/resnet101"]
        == torchvision.models.ResNet101_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    )
    assert files["full/resnet50_v1"] == COCO_V1_FILE
    assert files["full/resnet50_v2"] == "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"
    with pytest.raises(ConfigError, match="only for the resnet50"):
        W.resolve_weight_file("torchvision", "full", "resnet18")


@pytest.mark.parametrize("conv1_init", ["sum", "mean"])
def test_backbone_weights_from_the_hub_cache_with_1_channel_conv1(
    torch_home, r18_state, conv1_init
):
    torch.save(r18_state, torch_home / "hub" / "checkpoints" / R18_FILE)
    model = build_model(
        {
            "backbone": "resnet18",
            "pretrained": "backbone",
            "in_channels": 1,
            "conv1_init": conv1_init,
            **SMALL,
        },
        1,
    )
    body = model.backbone.body.state_dict()
    assert _assert_body_matches(body, r18_state) > 50
    rgb = r18_state["conv1.weight"]
    expected = (
        rgb.sum(dim=1, keepdim=True) if conv1_init == "sum" else rgb.mean(dim=1, keepdim=True)
    )
    assert torch.allclose(body["conv1.weight"], expected)
    assert model.smallobj_weights["file"].endswith(R18_FILE)
    assert model.smallobj_config["norm"] == "frozen_bn"


def test_backbone_weights_3_channels_and_explicit_path(tmp_path, torch_home, r18_state):
    path = tmp_path / "elsewhere" / "my_resnet18.pth"
    path.parent.mkdir()
    torch.save(r18_state, path)
    model = build_model(
        {
            "backbone": "resnet18",
            "pretrained": "backbone",
            "in_channels": 3,
            "weights_path": str(path),
            **SMALL,
        },
        1,
    )
    body = model.backbone.body.state_dict()
    assert _assert_body_matches(body, r18_state, skip=("fc.",)) > 50
    assert torch.equal(body["conv1.weight"], r18_state["conv1.weight"])


def test_backbone_by_name_from_a_project_checkpoint(tmp_path, torch_home, r18_state):
    """A backbone pretrained in-project: a checkpoint dict, DDP 'module.' and wrapper prefixes,
    already 1-channel conv1, found by bare name in weights_dir."""
    state = dict(r18_state)
    state["conv1.weight"] = torch.randn(64, 1, 7, 7)
    wrapped = {f"module.backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    wrapped["module.head.weight"] = torch.randn(2, 512)
    folder = tmp_path / "backbones"
    folder.mkdir()
    torch.save({"model": wrapped, "epoch": 3}, folder / "gray_r18.pt")
    model = build_model(
        {
            "backbone": "resnet18",
            "pretrained": "backbone",
            "weights_path": "gray_r18",
            "weights_dir": str(folder),
            "in_channels": 1,
            **SMALL,
        },
        1,
    )
    body = model.backbone.body.state_dict()
    assert torch.equal(body["conv1.weight"], state["conv1.weight"])
    assert _assert_body_matches(body, state) > 50


def test_missing_file_names_the_file_and_the_folder(torch_home):
    with pytest.raises(WeightsError) as err:
        build_model({"backbone": "resnet18", "pretrained": "backbone", **SMALL}, 1)
    msg = str(err.value)
    folder = str((torch_home / "hub" / "checkpoints").resolve())
    assert R18_FILE in msg and folder in msg
    assert "https://download.pytorch.org/models/" + R18_FILE in msg
    with pytest.raises(WeightsError, match="missing.pt"):
        W.resolve_weight_file(str(torch_home / "missing.pt"), "backbone", "resnet18")
    with pytest.raises(WeightsError, match="not_there"):
        W.resolve_weight_file("not_there", "backbone", "resnet18", search_dirs=[torch_home])


def test_file_that_does_not_fit_lists_the_missing_keys(torch_home, r18_state):
    partial = {k: v for k, v in r18_state.items() if not k.startswith("layer4.")}
    torch.save(partial, torch_home / "hub" / "checkpoints" / R18_FILE)
    with pytest.raises(WeightsError, match=r"missing from the file.*layer4\.0\.conv1\.weight"):
        build_model({"backbone": "resnet18", "pretrained": "backbone", **SMALL}, 1)


def _touch_marker(path: str) -> None:  # what a malicious pickle would run
    Path(path).touch()


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (_touch_marker, (str(self.marker),))


def test_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(marker)}, bad)
    with pytest.raises(WeightsError, match="refused to load untrusted/unsupported content"):
        W.load_state_dict(bad)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="refused"):
        build_model(
            {"backbone": "resnet18", "pretrained": "backbone", "weights_path": str(bad), **SMALL}, 1
        )
    assert not marker.exists()


def test_load_state_dict_unwraps_and_rejects_non_tensors(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"module.a": torch.ones(2)}, "epoch": 1}, path)
    assert list(W.load_state_dict(path)) == ["a"]
    torch.save({"a": torch.ones(2), "b": 3}, path)
    with pytest.raises(WeightsError, match="not tensors"):
        W.load_state_dict(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not a readable"):
        W.load_state_dict(path)


def test_full_coco_weights_v1(torch_home):
    """COCO v1 file (legacy RPN key names, as torchvision's real file): every tensor except the
    predictor's and the adapted conv1 is the file's; conv1 is the mean over RGB."""
    torch.manual_seed(2)
    state = _randomised(
        torchvision.models.detection.fasterrcnn_resnet50_fpn(
            weights=None, weights_backbone=None
        ).state_dict()
    )
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    for kind in ("weight", "bias"):
        state[f"rpn.head.conv.{kind}"] = state.pop(f"rpn.head.conv.0.0.{kind}")
    torch.save(state, torch_home / "hub" / "checkpoints" / COCO_V1_FILE)

    model = build_model(
        {
            "variant": "v1",
            "backbone": "resnet50",
            "pretrained": "full",
            "in_channels": 1,
            "conv1_init": "mean",
            "head_init": "xavier",
            **SMALL,
        },
        1,
    )
    ours = model.state_dict()
    checked = 0
    for k, v in state.items():
        if k.startswith("roi_heads.box_predictor.") or k == "backbone.body.conv1.weight":
            continue
        key = k.replace("rpn.head.conv.", "rpn.head.conv.0.0.")
        assert torch.equal(ours[key], v), k
        checked += 1
    assert checked == len(state) - 5  # 4 predictor tensors + conv1
    assert torch.allclose(
        ours["backbone.body.conv1.weight"],
        state["backbone.body.conv1.weight"].mean(dim=1, keepdim=True),
    )
    assert ours["roi_heads.box_predictor.cls_score.weight"].shape == (2, 1024)
    assert torch.all(
        ours["roi_heads.box_predictor.cls_score.bias"] == 0
    )  # xavier kept on the new predictor only
    assert (
        model.smallobj_config["frozen_bn_eps"] == 0.0
    )  # as torchvision's overwrite_eps for this file
    assert model.backbone.body.bn1.eps == 0.0
    assert (
        model.backbone.body.conv1.weight.requires_grad
    )  # adapted conv1 trainable (default trainable_layers 3)
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad

    rebuilt = build_model(model.smallobj_config, 1, load_weights=False)
    assert rebuilt.backbone.body.bn1.eps == 0.0
    rebuilt.load_state_dict(model.state_dict())  # strict: same architecture


# ---------------------------------------------------------------------- freezing and config
def _trainable_groups(model) -> dict[str, bool]:
    body = model.backbone.body
    return {
        name: any(p.requires_grad for p in getattr(body, name).parameters())
        for name in ("conv1", "layer1", "layer2", "layer3", "layer4")
    }


@pytest.mark.parametrize("layers", [0, 2, 5])
def test_trainable_layers_freeze_the_backbone(layers):
    model = build_model(
        {
            "backbone": "resnet18",
            "pretrained": "backbone",
            "in_channels": 3,
            "trainable_layers": layers,
            **SMALL,
        },
        1,
        load_weights=False,
    )
    order = ["layer4", "layer3", "layer2", "layer1", "conv1"]
    expected = {name: i < layers for i, name in enumerate(order)}
    assert _trainable_groups(model) == expected
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())
    assert all(p.requires_grad for p in model.rpn.parameters())


@pytest.mark.parametrize("train_conv1", [True, False])
def test_adapted_conv1_stays_trainable(train_conv1):
    model = build_model(
        {
            "backbone": "resnet18",
            "pretrained": "backbone",
            "in_channels": 1,
            "trainable_layers": 0,
            "train_conv1_when_adapted": train_conv1,
            **SMALL,
        },
        1,
        load_weights=False,
    )
    groups = _trainable_groups(model)
    assert groups.pop("conv1") is train_conv1
    assert not any(groups.values())
    counts = count_parameters(model)
    assert counts["trainable"] < counts["total"]


def test_config_errors():
    with pytest.raises(ConfigError, match=r"'anchor_size'.*anchor_sizes"):
        ModelConfig.from_dict({"anchor_size": [8]})
    with pytest.raises(ConfigError, match="frozen batch norm"):
        ModelConfig.from_dict({"pretrained": "none", "norm": "frozen_bn"}).resolved()
    with pytest.raises(ConfigError, match="gn"):
        ModelConfig.from_dict({"pretrained": "backbone", "norm": "gn"}).resolved()
    with pytest.raises(ConfigError, match="only for backbone resnet50"):
        ModelConfig.from_dict({"pretrained": "full", "backbone": "resnet34"}).resolved()
    with pytest.raises(ConfigError, match="trainable_layers"):
        ModelConfig.from_dict({"pretrained": "none", "trainable_layers": 3}).resolved()
    with pytest.raises(ConfigError, match="anchor_sizes"):
        ModelConfig.from_dict({"anchor_sizes": [8, 16, 32]}).resolved()
    with pytest.raises(ConfigError, match="in_channels"):
        ModelConfig.from_dict({"in_channels": 2}).resolved()
    with pytest.raises(ConfigError, match="variant"):
        ModelConfig.from_dict({"variant": "v3"}).resolved()


def test_resolved_defaults():
    scratch = ModelConfig.from_dict({}).resolved()
    assert (scratch.norm, scratch.trainable_layers, scratch.in_channels) == ("gn", 5, 1)
    assert scratch.anchor_sizes == [[32], [64], [128], [256], [512]]
    assert (scratch.min_size, scratch.max_size, scratch.box_detections_per_img) == (800, 1333, 100)
    assert scratch.image_mean == [0.449] and scratch.image_std == [0.226]
    pre = ModelConfig.from_dict({"pretrained": "backbone"}).resolved()
    assert (pre.norm, pre.trainable_layers, pre.frozen_bn_eps) == ("frozen_bn", 3, 1e-5)
    assert (
        ModelConfig.from_dict({"pretrained": "backbone", "variant": "v2"}).resolved().norm == "bn"
    )
    big = ModelConfig.from_dict({"rpn_post_nms_top_n_test": 3000}).resolved()
    assert big.rpn_pre_nms_top_n_test == 3000


def test_settings_reach_the_model_and_the_config_rebuilds_it():
    cfg = {
        "backbone": "resnet18",
        "norm": "gn",
        "zero_init_residual": True,
        "head_init": "xavier",
        "anchor_sizes": [[6, 8], [12, 16], [24, 32], [48, 64], [96, 128]],
        "aspect_ratios": [1.0],
        "min_size": [96, 128],
        "max_size": 160,
        "image_mean": 0.5,
        "image_std": 0.25,
        "box_detections_per_img": 300,
        "rpn_post_nms_top_n_test": 1500,
        "box_score_thresh": 0.01,
    }
    model = build_model(cfg, 3)
    assert model.rpn.anchor_generator.sizes == ((6, 8), (12, 16), (24, 32), (48, 64), (96, 128))
    assert model.rpn.anchor_generator.num_anchors_per_location() == [2] * 5
    assert model.transform.min_size == (96, 128) and model.transform.max_size == 160
    assert model.transform.image_mean == [0.5] and model.transform.image_std == [0.25]
    assert model.roi_heads.detections_per_img == 300 and model.roi_heads.score_thresh == 0.01
    assert (
        model.rpn._post_nms_top_n["testing"] == 1500 and model.rpn._pre_nms_top_n["testing"] == 1500
    )
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert isinstance(model.backbone.body.bn1, nn.GroupNorm)
    assert torch.all(model.backbone.body.layer1[0].bn2.weight == 0)  # zero_init_residual with GN
    assert float(model.backbone.body.conv1.weight.detach().std()) == pytest.approx(
        (2 / (64 * 49)) ** 0.5, rel=0.2
    )  # Kaiming
    assert (
        float(model.rpn.head.conv[0][0].weight.detach().std()) > 0.015
    )  # Xavier, not torchvision's std 0.01
    assert torch.all(model.rpn.head.conv[0][0].bias == 0)

    config = model.smallobj_config
    json.dumps(config)  # a plain dict
    rebuilt = build_model(config, 3, load_weights=False)
    assert rebuilt.smallobj_config == config
    rebuilt.load_state_dict(model.state_dict())
