"""The model factory: torchvision Faster R-CNN (v1 or v2 heads) on a ResNet18/34/50/101-FPN backbone.

Built from torchvision's own components, mirroring ``fasterrcnn_resnet50_fpn`` (v1: RPNHead with
one conv, TwoMLPHead) and ``fasterrcnn_resnet50_fpn_v2`` (v2: RPNHead with two convs,
FastRCNNConvFCHead with 4 convs + 1 FC and BatchNorm, FPN with BatchNorm), so parameter counts
and state-dict keys equal torchvision's for any backbone. Pretrained weights come from local
files only (see :mod:`.weights`); nothing is ever downloaded.

``build_model(cfg, num_classes)``: ``cfg`` is a plain dict of :class:`ModelConfig` fields,
``num_classes`` the number of object classes without background. The resolved config (every
``auto``/``None`` replaced by the value used) is attached as ``model.smallobj_config``; passing it
back to ``build_model(..., load_weights=False)`` rebuilds the same architecture without reading
any weight file (to load a checkpoint into).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import (
    FasterRCNN,
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import ConfigError, WeightsError
from . import weights as W

logger = logging.getLogger(__name__)

VARIANTS = ("v1", "v2")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
PRETRAINED = ("none", "backbone", "full")
NORMS = ("auto", "frozen_bn", "bn", "gn")
CONV1_INITS = ("sum", "mean")
HEAD_INITS = ("default", "xavier", "normal")
NUM_FEATURE_MAPS = 5  # FPN on layer1-4 plus LastLevelMaxPool
GN_GROUPS = 32

# torchvision's defaults (FasterRCNN.__init__ and _default_anchorgen)
TV_ANCHOR_SIZES = [[32], [64], [128], [256], [512]]
TV_ASPECT_RATIOS = [0.5, 1.0, 2.0]
TV_MIN_SIZE, TV_MAX_SIZE = 800, 1333
TV_DETECTIONS_PER_IMG = 100
TV_RPN_PRE_NMS = {"train": 2000, "test": 1000}
TV_RPN_POST_NMS = {"train": 2000, "test": 1000}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
FROZEN_BN_EPS = 1e-5
FROZEN_BN_EPS_COCO_V1 = 0.0  # torchvision's overwrite_eps(model, 0.0) for the legacy COCO v1 file

AUTO = "auto"


def _is_auto(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() == AUTO)


@dataclass
class ModelConfig:
    """Model settings. ``auto``/``None`` values are resolved by :meth:`resolved` (torchvision's
    defaults, or the rules below); the resolved config is what ``model.smallobj_config`` holds."""

    variant: str = "v1"  # v1 | v2
    backbone: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101 (FPN on layers 1-4)
    pretrained: str = "none"  # none | backbone (ImageNet ResNet) | full (COCO detector, resnet50)
    weights_path: str | None = None  # explicit file, a bare name (searched in weights_dir), or None/"torchvision"
    weights_dir: str | list[str] | None = None  # search dirs for bare names; None: data/06_models/backbones
    in_channels: int = 1  # 1 (conv1 replaced by Conv2d(1, 64, 7, 2, 3)) | 3
    conv1_init: str = "sum"  # 1-channel conv1 from the pretrained RGB kernel: sum | mean over RGB
    train_conv1_when_adapted: bool = True  # 1 channel + pretrained: conv1 stays trainable whatever trainable_layers
    norm: str = AUTO  # auto | frozen_bn | bn | gn; auto: v1 pretrained frozen_bn, v2 pretrained bn, scratch gn
    frozen_bn_eps: float | str = AUTO  # auto: 0.0 for torchvision's COCO v1 file (as torchvision), else 1e-5
    trainable_layers: int | None = None  # 0-5 (layer4, layer3, layer2, layer1, conv1+bn1); None: 3 pretrained, 5 not
    zero_init_residual: bool = False  # from scratch: last norm of each residual block starts at 0
    anchor_sizes: Any = AUTO  # 5 sizes (one per FPN level) or 5 lists; auto: 32, 64, 128, 256, 512
    aspect_ratios: Any = field(default_factory=lambda: list(TV_ASPECT_RATIOS))  # shared, or 5 lists
    min_size: Any = AUTO  # int or list of ints (random choice in training); auto: 800
    max_size: Any = AUTO  # auto: 1333
    image_mean: Any = None  # None: ImageNet's (3 channels) or its mean, 0.449 (1 channel)
    image_std: Any = None  # None: ImageNet's (3 channels) or its mean, 0.226 (1 channel)
    rpn_pre_nms_top_n_train: Any = AUTO  # auto: max(2000, rpn_post_nms_top_n_train)
    rpn_pre_nms_top_n_test: Any = AUTO  # auto: max(1000, rpn_post_nms_top_n_test)
    rpn_post_nms_top_n_train: Any = AUTO  # auto: 2000
    rpn_post_nms_top_n_test: Any = AUTO  # auto: 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: Any = AUTO  # auto: 100
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    # default: torchvision's (RPN head N(0, 0.01), box head and predictor PyTorch's Linear init);
    # xavier: Xavier-uniform on RPN head, box head and predictor (seed 002);
    # normal: the detection heads' standard normal init (Detectron / He et al. 2018): RPN head
    #   N(0, 0.01), box classifier N(0, 0.01), box regressor N(0, 0.001), biases 0. Convolutions
    #   are Kaiming-initialised in every mode (ResNet body, FPN, v2 box head: torchvision's own).
    head_init: str = "default"

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> ModelConfig:
        cfg = dict(cfg or {})
        valid = cls.field_names()
        unknown = [k for k in cfg if k not in valid]
        if unknown:
            raise ConfigError(
                f"unknown model setting(s) {unknown}; valid model settings: {', '.join(valid)}"
            )
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ resolution
    @property
    def is_pretrained(self) -> bool:
        return self.pretrained != "none"

    @property
    def conv1_adapted(self) -> bool:
        """conv1 differs from the 3-channel one pretrained weights were made for."""
        return self.is_pretrained and self.in_channels != 3

    def resolved(self) -> ModelConfig:
        """A copy with every setting checked and every auto value replaced (:class:`ConfigError`)."""
        c = dataclasses.replace(self)
        _choice("variant", c.variant, VARIANTS)
        _choice("backbone", c.backbone, BACKBONES)
        c.pretrained = "none" if c.pretrained in (None, False) else str(c.pretrained)
        _choice("pretrained", c.pretrained, PRETRAINED)
        _choice("conv1_init", c.conv1_init, CONV1_INITS)
        _choice("head_init", c.head_init, HEAD_INITS)
        c.norm = AUTO if c.norm is None else str(c.norm)
        _choice("norm", c.norm, NORMS)
        if c.in_channels not in (1, 3) or isinstance(c.in_channels, bool):
            raise ConfigError(f"model.in_channels must be 1 or 3, got {c.in_channels!r}")
        c.in_channels = int(c.in_channels)
        c.train_conv1_when_adapted = _bool("train_conv1_when_adapted", c.train_conv1_when_adapted)
        c.zero_init_residual = _bool("zero_init_residual", c.zero_init_residual)
        if c.pretrained == "full" and c.backbone != "resnet50":
            raise ConfigError(
                f"pretrained 'full' (COCO Faster R-CNN weights) exists only for backbone resnet50 (v1 and v2), "
                f"not {c.backbone}: use pretrained 'backbone' (ImageNet weights for the ResNet) or 'none'"
            )
        if c.weights_path is not None:
            c.weights_path = str(c.weights_path)
        if c.weights_dir is not None:
            c.weights_dir = [str(c.weights_dir)] if isinstance(c.weights_dir, str | Path) else [str(d) for d in c.weights_dir]

        # normalisation layers
        if c.norm == AUTO:
            if not c.is_pretrained:
                c.norm = "gn"  # He et al. 2018, "Rethinking ImageNet Pre-training": GN from scratch
            else:
                c.norm = "frozen_bn" if c.variant == "v1" else "bn"  # as torchvision's v1 / v2 builders
        if c.norm == "frozen_bn" and not c.is_pretrained:
            raise ConfigError(
                "model.norm 'frozen_bn' with pretrained 'none' is meaningless: frozen batch norm keeps its "
                "statistics and affine parameters fixed, and without pretrained weights those are the "
                "random/identity initial values. Use norm 'gn' (recommended from scratch), 'bn', or 'auto'."
            )
        if c.norm == "gn" and c.is_pretrained:
            raise ConfigError(
                f"model.norm 'gn' with pretrained '{c.pretrained}': the pretrained weights were trained with "
                "batch norm, whose statistics GroupNorm cannot use. Use norm 'frozen_bn', 'bn' or 'auto', "
                "or pretrained 'none' with gn."
            )
        if _is_auto(c.frozen_bn_eps):
            c.frozen_bn_eps = FROZEN_BN_EPS_COCO_V1 if self._uses_torchvision_coco_v1() else FROZEN_BN_EPS
        c.frozen_bn_eps = _number("frozen_bn_eps", c.frozen_bn_eps, minimum=0.0)

        # trainable layers
        if c.trainable_layers is None:
            c.trainable_layers = 3 if c.is_pretrained else 5
        if isinstance(c.trainable_layers, bool) or not isinstance(c.trainable_layers, int) or not 0 <= c.trainable_layers <= 5:
            raise ConfigError(f"model.trainable_layers must be an integer 0-5 (or null), got {c.trainable_layers!r}")
        if not c.is_pretrained and c.trainable_layers != 5:
            raise ConfigError(
                f"model.trainable_layers {c.trainable_layers} with pretrained 'none' would freeze randomly "
                "initialised layers: set trainable_layers to 5 or null, or use pretrained weights"
            )

        # anchors
        c.anchor_sizes = _anchor_sizes(c.anchor_sizes)
        c.aspect_ratios = _aspect_ratios(c.aspect_ratios)
        per_loc = {len(s) * len(r) for s, r in zip(c.anchor_sizes, _ratios_per_level(c.aspect_ratios))}
        if len(per_loc) != 1:
            raise ConfigError(
                "model.anchor_sizes / aspect_ratios give a different number of anchors per location on "
                f"different FPN levels ({sorted(per_loc)}); the shared RPN head needs the same number"
            )

        # input scale and normalisation
        c.min_size = TV_MIN_SIZE if _is_auto(c.min_size) else c.min_size
        c.max_size = TV_MAX_SIZE if _is_auto(c.max_size) else c.max_size
        if isinstance(c.min_size, list | tuple):
            if not c.min_size:
                raise ConfigError("model.min_size must be a positive integer or a non-empty list of them")
            c.min_size = [_int("min_size", v, minimum=1) for v in c.min_size]
        else:
            c.min_size = _int("min_size", c.min_size, minimum=1)
        c.max_size = _int("max_size", c.max_size, minimum=1)
        c.image_mean = _per_channel("image_mean", c.image_mean, c.in_channels, IMAGENET_MEAN)
        c.image_std = _per_channel("image_std", c.image_std, c.in_channels, IMAGENET_STD)
        if any(s <= 0 for s in c.image_std):
            raise ConfigError(f"model.image_std must be positive, got {c.image_std}")

        # proposals and detections
        c.rpn_post_nms_top_n_train = _int_or("rpn_post_nms_top_n_train", c.rpn_post_nms_top_n_train, TV_RPN_POST_NMS["train"])
        c.rpn_post_nms_top_n_test = _int_or("rpn_post_nms_top_n_test", c.rpn_post_nms_top_n_test, TV_RPN_POST_NMS["test"])
        c.rpn_pre_nms_top_n_train = _int_or(
            "rpn_pre_nms_top_n_train", c.rpn_pre_nms_top_n_train, max(TV_RPN_PRE_NMS["train"], c.rpn_post_nms_top_n_train)
        )
        c.rpn_pre_nms_top_n_test = _int_or(
            "rpn_pre_nms_top_n_test", c.rpn_pre_nms_top_n_test, max(TV_RPN_PRE_NMS["test"], c.rpn_post_nms_top_n_test)
        )
        c.box_detections_per_img = _int_or("box_detections_per_img", c.box_detections_per_img, TV_DETECTIONS_PER_IMG)
        for name in ("rpn_batch_size_per_image", "box_batch_size_per_image"):
            setattr(c, name, _int(name, getattr(c, name), minimum=1))
        for name in (
            "rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_positive_fraction", "rpn_score_thresh",
            "box_score_thresh", "box_nms_thresh", "box_fg_iou_thresh", "box_bg_iou_thresh", "box_positive_fraction",
        ):
            setattr(c, name, _number(name, getattr(c, name), minimum=0.0, maximum=1.0))
        return c

    def _uses_torchvision_coco_v1(self) -> bool:
        if self.pretrained != "full" or self.variant != "v1":
            return False
        spec = self.weights_path
        if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("torchvision", "default", "")):
            return True
        return Path(str(spec)).name == W.torchvision_weight_filename("full", "resnet50", "v1")


# ---------------------------------------------------------------------- validation helpers
def _choice(name: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"model.{name} must be one of {list(valid)}, got {value!r}")


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"model.{name} must be true or false, got {value!r}")
    return value


def _int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ConfigError(f"model.{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"model.{name} must be >= {minimum}, got {value}")
    return value


def _int_or(name: str, value: Any, default: int) -> int:
    return default if _is_auto(value) else _int(name, value, minimum=1)


def _number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"model.{name} must be a number, got {value!r}")
    value = float(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"model.{name} must be in [{minimum}, {maximum}], got {value}")
    return value


def _positive_number(name: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"model.{name}: every value must be a positive number, got {value!r}")
    return int(value) if float(value).is_integer() else float(value)


def _anchor_sizes(value: Any) -> list[list[float | int]]:
    if _is_auto(value):
        return [list(s) for s in TV_ANCHOR_SIZES]
    if not isinstance(value, list | tuple) or len(value) != NUM_FEATURE_MAPS:
        raise ConfigError(
            f"model.anchor_sizes must be 'auto' or a list of {NUM_FEATURE_MAPS} sizes (one per FPN level, "
            f"e.g. [8, 16, 32, 64, 128]) or of {NUM_FEATURE_MAPS} lists of sizes, got {value!r}"
        )
    out = []
    for level in value:
        sizes = list(level) if isinstance(level, list | tuple) else [level]
        if not sizes:
            raise ConfigError(f"model.anchor_sizes: empty size list for an FPN level in {value!r}")
        out.append([_positive_number("anchor_sizes", s) for s in sizes])
    return out


def _aspect_ratios(value: Any) -> list:
    if _is_auto(value):
        return list(TV_ASPECT_RATIOS)
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"model.aspect_ratios must be a non-empty list, e.g. [0.5, 1.0, 2.0], got {value!r}")
    if all(isinstance(v, list | tuple) for v in value):
        if len(value) != NUM_FEATURE_MAPS:
            raise ConfigError(
                f"model.aspect_ratios: per-level ratios need {NUM_FEATURE_MAPS} lists, got {len(value)}"
            )
        return [[_positive_number("aspect_ratios", r) for r in level] for level in value]
    return [_positive_number("aspect_ratios", r) for r in value]


def _ratios_per_level(ratios: list) -> list[list]:
    return ratios if isinstance(ratios[0], list) else [ratios] * NUM_FEATURE_MAPS


def _per_channel(name: str, value: Any, channels: int, imagenet: list[float]) -> list[float]:
    if value is None or _is_auto(value):
        return list(imagenet) if channels == 3 else [round(sum(imagenet) / len(imagenet), 6)]
    values = list(value) if isinstance(value, list | tuple) else [value]
    values = [_number(name, v) for v in values]
    if len(values) == 1 and channels == 3:
        values = values * 3
    if len(values) != channels:
        raise ConfigError(f"model.{name} needs {channels} value(s) for in_channels {channels}, got {values}")
    return values


# ---------------------------------------------------------------------- building blocks
def _group_norm(num_channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GN_GROUPS, num_channels)


def _backbone_norm(c: ModelConfig):
    if c.norm == "frozen_bn":
        return functools.partial(FrozenBatchNorm2d, eps=c.frozen_bn_eps)
    if c.norm == "bn":
        return nn.BatchNorm2d
    return _group_norm


def _head_norm(c: ModelConfig):
    """Norm of v2's FPN and box head: BatchNorm2d as torchvision, GroupNorm when training with gn."""
    return _group_norm if c.norm == "gn" else nn.BatchNorm2d


def _adapt_conv1(kernel: torch.Tensor, in_channels: int, how: str, source: str) -> torch.Tensor:
    """A pretrained conv1 kernel [64, C, 7, 7] for ``in_channels`` input channels.

    3 -> 1: ``sum`` (a gray image replicated to RGB gives the same response) or ``mean`` over RGB.
    1 -> 3: the kernel split equally over the channels (same response to a replicated gray image).
    """
    have = kernel.shape[1]
    if have == in_channels:
        return kernel.clone()
    if have == 3 and in_channels == 1:
        return kernel.sum(dim=1, keepdim=True) if how == "sum" else kernel.mean(dim=1, keepdim=True)
    if have == 1 and in_channels == 3:
        return kernel.repeat(1, 3, 1, 1) / 3.0
    raise WeightsError(f"{source}: conv1 has {have} input channels, cannot adapt it to {in_channels}")


def _load_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    new_prefixes: Sequence[str],
    source: str,
    what: str,
) -> dict[str, Any]:
    """Load ``state`` into ``module`` (strict=False) after checking that every key of ``module``
    other than those starting with ``new_prefixes`` (and BN's ``num_batches_tracked``) is present
    with the right shape; else :class:`WeightsError` listing the missing or mismatched keys."""
    own = module.state_dict()

    def is_new(key: str) -> bool:
        return any(key == p or key.startswith(p) for p in new_prefixes)

    to_load, mismatched = {}, []
    for key, value in state.items():
        if key not in own or is_new(key):
            continue
        if tuple(own[key].shape) != tuple(value.shape):
            mismatched.append(f"{key} (file {tuple(value.shape)}, model {tuple(own[key].shape)})")
        else:
            to_load[key] = value
    missing = [
        k for k in own if k not in to_load and not is_new(k) and not k.endswith("num_batches_tracked")
        and not any(m.startswith(k + " ") for m in mismatched)
    ]
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} key(s) missing from the file: {missing[:12]}{' ...' if len(missing) > 12 else ''}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {mismatched[:8]}{' ...' if len(mismatched) > 8 else ''}")
        raise WeightsError(
            f"{source}: does not fit the {what}: " + "; ".join(parts)
            + ". Check that the file matches model.backbone/model.variant."
        )
    unused = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    module.load_state_dict(to_load, strict=False)
    return {"loaded": len(to_load), "unused": unused, "new": sorted(k for k in own if is_new(k))}


def _rename_legacy_rpn_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's COCO v1 file predates RPNHead version 2 (``rpn.head.conv.weight`` ->
    ``rpn.head.conv.0.0.weight``); RPNHead renames on load, but the checks here need it first."""
    out = dict(state)
    for kind in ("weight", "bias"):
        old, new = f"rpn.head.conv.{kind}", f"rpn.head.conv.0.0.{kind}"
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


def _xavier_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _normal_heads_(rpn_head: nn.Module, box_predictor: FastRCNNPredictor) -> None:
    """Detectron's head init: RPN convs N(0, 0.01); cls_score N(0, 0.01); bbox_pred N(0, 0.001); biases 0."""
    for m in rpn_head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.normal_(box_predictor.cls_score.weight, std=0.01)
    nn.init.normal_(box_predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(box_predictor.cls_score.bias)
    nn.init.zeros_(box_predictor.bbox_pred.bias)


def _weights_source(c: ModelConfig, kind: str) -> Path:
    return W.resolve_weight_file(c.weights_path, kind, c.backbone, variant=c.variant, search_dirs=c.weights_dir)


# ---------------------------------------------------------------------- the factory
def build_model(
    cfg: Mapping[str, Any] | ModelConfig | None, num_classes: int, *, load_weights: bool = True
) -> FasterRCNN:
    """Build the detector. ``num_classes``: object classes WITHOUT background (the predictor gets
    ``num_classes + 1`` outputs). ``load_weights=False`` builds the architecture of a pretrained
    config (frozen BN, frozen layers...) without reading weight files: to load a checkpoint into.

    Raises :class:`ConfigError` for an invalid config, :class:`WeightsError` for a missing,
    untrusted or ill-fitting weight file.
    """
    c = (cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg)).resolved()
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes (object classes without background) must be an integer >= 1, got {num_classes!r}")
    read_files = load_weights and c.is_pretrained
    load_report: dict[str, Any] | None = None

    # ResNet body
    body = resnet.__dict__[c.backbone](
        weights=None, norm_layer=_backbone_norm(c), zero_init_residual=c.zero_init_residual
    )
    if c.in_channels != 3:
        body.conv1 = nn.Conv2d(c.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")  # as ResNet's own init
    if read_files and c.pretrained == "backbone":
        path = _weights_source(c, "backbone")
        state = W.strip_to_resnet_body(W.load_state_dict(path))
        new = ["fc."]
        conv1_note = None
        if "conv1.weight" in state and tuple(state["conv1.weight"].shape) != tuple(body.conv1.weight.shape):
            new.append("conv1.weight")
            conv1_note = f"conv1 adapted {state['conv1.weight'].shape[1]} -> {c.in_channels} channels ({c.conv1_init})"
        load_report = _load_checked(body, state, new_prefixes=new, source=str(path), what=f"{c.backbone} backbone")
        if conv1_note:
            with torch.no_grad():
                body.conv1.weight.copy_(_adapt_conv1(state["conv1.weight"], c.in_channels, c.conv1_init, str(path)))
        load_report.update({"file": str(path), "kind": "backbone", "conv1": conv1_note})

    fpn_norm = _head_norm(c) if c.variant == "v2" else None
    backbone = _resnet_fpn_extractor(body, c.trainable_layers, norm_layer=fpn_norm)
    # a backbone file whose conv1 already has in_channels (pretrained in-project) was not adapted
    conv1_adapted = c.conv1_adapted and not (load_report is not None and load_report["conv1"] is None)
    if conv1_adapted and c.train_conv1_when_adapted:
        backbone.body.conv1.weight.requires_grad_(True)

    # heads
    anchor_generator = AnchorGenerator(
        sizes=tuple(tuple(s) for s in c.anchor_sizes),
        aspect_ratios=tuple(tuple(r) for r in _ratios_per_level(c.aspect_ratios)),
    )
    num_anchors = anchor_generator.num_anchors_per_location()[0]
    out_ch = backbone.out_channels
    if c.variant == "v1":
        rpn_head = RPNHead(out_ch, num_anchors)
        resolution = 7  # MultiScaleRoIAlign output size, FasterRCNN's default box_roi_pool
        box_head = TwoMLPHead(out_ch * resolution**2, 1024)
    else:
        rpn_head = RPNHead(out_ch, num_anchors, conv_depth=2)
        box_head = FastRCNNConvFCHead((out_ch, 7, 7), [256, 256, 256, 256], [1024], norm_layer=_head_norm(c))
    box_predictor = FastRCNNPredictor(1024, num_classes + 1)
    if c.head_init == "xavier":  # before loading full weights: only the new heads keep it
        for head in (rpn_head, box_head, box_predictor):
            _xavier_(head)
    elif c.head_init == "normal":
        _normal_heads_(rpn_head, box_predictor)

    model = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=tuple(c.min_size) if isinstance(c.min_size, list) else c.min_size,
        max_size=c.max_size,
        image_mean=list(c.image_mean),
        image_std=list(c.image_std),
        rpn_anchor_generator=anchor_generator,
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=c.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=c.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=c.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=c.rpn_post_nms_top_n_test,
        rpn_nms_thresh=c.rpn_nms_thresh,
        rpn_fg_iou_thresh=c.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=c.rpn_bg_iou_thresh,
        rpn_batch_size_per_image=c.rpn_batch_size_per_image,
        rpn_positive_fraction=c.rpn_positive_fraction,
        rpn_score_thresh=c.rpn_score_thresh,
        box_head=box_head,
        box_predictor=box_predictor,
        box_score_thresh=c.box_score_thresh,
        box_nms_thresh=c.box_nms_thresh,
        box_detections_per_img=c.box_detections_per_img,
        box_fg_iou_thresh=c.box_fg_iou_thresh,
        box_bg_iou_thresh=c.box_bg_iou_thresh,
        box_batch_size_per_image=c.box_batch_size_per_image,
        box_positive_fraction=c.box_positive_fraction,
    )

    if read_files and c.pretrained == "full":
        path = _weights_source(c, "full")
        state = _rename_legacy_rpn_keys(W.load_state_dict(path))
        new = ["roi_heads.box_predictor."]
        conv1_key = "backbone.body.conv1.weight"
        conv1_note = None
        if conv1_key in state and tuple(state[conv1_key].shape) != tuple(model.backbone.body.conv1.weight.shape):
            new.append(conv1_key)
            conv1_note = f"conv1 adapted {state[conv1_key].shape[1]} -> {c.in_channels} channels ({c.conv1_init})"
        for key in ("rpn.head.cls_logits.weight", "rpn.head.bbox_pred.weight"):
            own_shape = tuple(model.state_dict()[key].shape)
            if key in state and tuple(state[key].shape) != own_shape:  # anchors per location changed
                new.append(key.rsplit(".", 1)[0] + ".")
        load_report = _load_checked(
            model, state, new_prefixes=new, source=str(path), what=f"Faster R-CNN {c.variant} ({c.backbone})"
        )
        if conv1_note:
            with torch.no_grad():
                model.backbone.body.conv1.weight.copy_(_adapt_conv1(state[conv1_key], c.in_channels, c.conv1_init, str(path)))
        load_report.update({"file": str(path), "kind": "full", "conv1": conv1_note})

    if load_report is not None:
        logger.info(
            "loaded %s weights from %s: %d tensors; new (not from the file): %s%s",
            load_report["kind"], load_report["file"], load_report["loaded"],
            sorted({k.rsplit(".", 1)[0] for k in load_report["new"]}),
            f"; {load_report['conv1']}" if load_report["conv1"] else "",
        )
        if load_report["unused"]:
            logger.info("%d tensors of %s not used: %s", len(load_report["unused"]), load_report["file"], load_report["unused"][:8])

    model.smallobj_config = c.to_dict()
    model.smallobj_weights = load_report
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": ..., "trainable": ...}``: parameters (not buffers: frozen BN statistics and
    affine values are buffers, as in torchvision's counts) in total and with ``requires_grad``."""
    params = list(model.parameters())
    return {
        "total": int(sum(p.numel() for p in params)),
        "trainable": int(sum(p.numel() for p in params if p.requires_grad)),
    }
