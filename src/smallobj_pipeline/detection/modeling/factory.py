"""The model factory: torchvision Faster R-CNN, or Mask R-CNN (``model.task:
instance_segmentation``), with v1 or v2 heads on a ResNet18/34/50/101-FPN.

Built from torchvision's own components, mirroring ``fasterrcnn_resnet50_fpn`` (v1: RPNHead with
one conv, TwoMLPHead) and ``fasterrcnn_resnet50_fpn_v2`` (v2: RPNHead with two convs,
FastRCNNConvFCHead with 4 convs + 1 FC and BatchNorm, FPN with BatchNorm), and for masks
``maskrcnn_resnet50_fpn`` (MaskRCNNHeads of 4 convs, MaskRCNNPredictor) and ``_v2`` (the mask
convs with BatchNorm), so parameter counts and state-dict keys equal torchvision's for any
backbone. Pretrained weights come from local
files only (see :mod:`.weights`); nothing is ever downloaded.

``build_model(cfg, num_classes)``: ``cfg`` is a :class:`~.config.ModelConfig` or a plain dict of its
fields,
``num_classes`` the number of object classes without background. The resolved config (every
``auto``/``None`` replaced by the value used) is attached as ``model.smallobj_config``; passing it
back to ``build_model(..., load_weights=False)`` rebuilds the same architecture without reading
any weight file (to load a checkpoint into).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
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
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import ConfigError, WeightsError
from . import weights as W
from .config import ModelConfig, ratios_per_level

logger = logging.getLogger(__name__)

GN_GROUPS = 32
RESNET_STEM_CHANNELS = 64
BOX_HEAD_DIM = 1024  # representation size of both box heads (TwoMLPHead, FastRCNNConvFCHead)
ROI_RESOLUTION = 7  # MultiScaleRoIAlign output size, FasterRCNN's default box_roi_pool
LEGACY_MASK_CONVS = 4  # mask_fcn1..4 in torchvision's COCO v1 file


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
    """Norm of v2's FPN and box head: BatchNorm2d as torchvision's, GroupNorm with gn."""
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
    raise WeightsError(
        f"{source}: conv1 has {have} input channels, cannot adapt it to {in_channels}"
    )


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
        k
        for k in own
        if k not in to_load
        and not is_new(k)
        and not k.endswith("num_batches_tracked")
        and not any(m.startswith(k + " ") for m in mismatched)
    ]
    if missing or mismatched:
        raise WeightsError(
            f"{source}: does not fit the {what}: {_misfit(missing, mismatched)}. "
            "Check that the file matches model.backbone/model.variant."
        )
    unused = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    module.load_state_dict(to_load, strict=False)
    return {"loaded": len(to_load), "unused": unused, "new": sorted(k for k in own if is_new(k))}


def _misfit(missing: list[str], mismatched: list[str]) -> str:
    parts = []
    if missing:
        more = " ..." if len(missing) > 12 else ""
        parts.append(f"{len(missing)} key(s) missing from the file: {missing[:12]}{more}")
    if mismatched:
        more = " ..." if len(mismatched) > 8 else ""
        parts.append(f"{len(mismatched)} shape mismatch(es): {mismatched[:8]}{more}")
    return "; ".join(parts)


def _rename_legacy_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's COCO v1 files predate RPNHead and MaskRCNNHeads version 2
    (``rpn.head.conv.weight`` -> ``rpn.head.conv.0.0.weight``, ``roi_heads.mask_head.mask_fcn1``
    -> ``roi_heads.mask_head.0.0``); the heads rename on load, but the checks here need it first."""
    out = dict(state)
    renames = [("rpn.head.conv", "rpn.head.conv.0.0")] + [
        (f"roi_heads.mask_head.mask_fcn{i + 1}", f"roi_heads.mask_head.{i}.0")
        for i in range(LEGACY_MASK_CONVS)
    ]
    for kind in ("weight", "bias"):
        for old_prefix, new_prefix in renames:
            old, new = f"{old_prefix}.{kind}", f"{new_prefix}.{kind}"
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
    """Detectron's head init: RPN convs N(0, 0.01); cls_score N(0, 0.01); bbox_pred N(0, 0.001);
    biases 0."""
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
    return W.resolve_weight_file(
        c.weights_path, kind, c.backbone, variant=c.variant, search_dirs=c.weights_dir, task=c.task
    )


def _conv1_note(file_kernel: torch.Tensor, own_kernel: torch.Tensor, c: ModelConfig) -> str | None:
    """What adapting the file's conv1 to the model's input channels does, or None when it fits."""
    if tuple(file_kernel.shape) == tuple(own_kernel.shape):
        return None
    return f"conv1 adapted {file_kernel.shape[1]} -> {c.in_channels} channels ({c.conv1_init})"


def _copy_adapted_conv1(
    conv1: nn.Conv2d, kernel: torch.Tensor, c: ModelConfig, source: Path
) -> None:
    with torch.no_grad():
        conv1.weight.copy_(_adapt_conv1(kernel, c.in_channels, c.conv1_init, str(source)))


# ---------------------------------------------------------------------- the parts
def _resnet_body(c: ModelConfig) -> nn.Module:
    """The ResNet body, conv1 replaced (Kaiming-initialised, as ResNet's own) for 1 channel."""
    body = resnet.__dict__[c.backbone](
        weights=None, norm_layer=_backbone_norm(c), zero_init_residual=c.zero_init_residual
    )
    if c.in_channels != 3:
        body.conv1 = nn.Conv2d(
            c.in_channels, RESNET_STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False
        )
        nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")
    return body


def _load_backbone_weights(body: nn.Module, c: ModelConfig) -> dict[str, Any]:
    """ImageNet (or in-project) ResNet weights into ``body``; conv1 adapted when needed."""
    path = _weights_source(c, "backbone")
    state = W.strip_to_resnet_body(W.load_state_dict(path))
    new = ["fc."]
    conv1_note = None
    if "conv1.weight" in state:
        conv1_note = _conv1_note(state["conv1.weight"], body.conv1.weight, c)
    if conv1_note:
        new.append("conv1.weight")
    report = _load_checked(
        body, state, new_prefixes=new, source=str(path), what=f"{c.backbone} backbone"
    )
    if conv1_note:
        _copy_adapted_conv1(body.conv1, state["conv1.weight"], c, path)
    report.update({"file": str(path), "kind": "backbone", "conv1": conv1_note})
    return report


def _fpn_backbone(body: nn.Module, c: ModelConfig, load_report: dict[str, Any] | None) -> nn.Module:
    """The body with its FPN, layers frozen per ``trainable_layers``; an adapted conv1 kept
    trainable when ``train_conv1_when_adapted``."""
    fpn_norm = _head_norm(c) if c.variant == "v2" else None
    backbone = _resnet_fpn_extractor(body, c.trainable_layers, norm_layer=fpn_norm)
    # a backbone file whose conv1 already has in_channels (pretrained in-project) was not adapted
    conv1_adapted = c.conv1_adapted and not (
        load_report is not None and load_report["conv1"] is None
    )
    if conv1_adapted and c.train_conv1_when_adapted:
        backbone.body.conv1.weight.requires_grad_(True)
    return backbone


def _anchor_generator(c: ModelConfig) -> AnchorGenerator:
    return AnchorGenerator(
        sizes=tuple(tuple(s) for s in c.anchor_sizes),
        aspect_ratios=tuple(tuple(r) for r in ratios_per_level(c.aspect_ratios)),
    )


def _heads(
    c: ModelConfig, out_channels: int, num_anchors: int, num_classes: int
) -> tuple[RPNHead, nn.Module, FastRCNNPredictor]:
    """RPN head, box head and predictor of the variant, initialised per ``head_init`` (before
    full weights are loaded: only the new heads keep it)."""
    if c.variant == "v1":
        rpn_head = RPNHead(out_channels, num_anchors)
        box_head = TwoMLPHead(out_channels * ROI_RESOLUTION**2, BOX_HEAD_DIM)
    else:
        rpn_head = RPNHead(out_channels, num_anchors, conv_depth=2)
        box_head = FastRCNNConvFCHead(
            (out_channels, ROI_RESOLUTION, ROI_RESOLUTION),
            [256, 256, 256, 256],
            [BOX_HEAD_DIM],
            norm_layer=_head_norm(c),
        )
    box_predictor = FastRCNNPredictor(BOX_HEAD_DIM, num_classes + 1)
    if c.head_init == "xavier":
        for head in (rpn_head, box_head, box_predictor):
            _xavier_(head)
    elif c.head_init == "normal":
        _normal_heads_(rpn_head, box_predictor)
    return rpn_head, box_head, box_predictor


def _mask_heads(c: ModelConfig, out_channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """Mask head (``mask_head_convs`` convs of ``mask_head_dim`` channels, torchvision's 4 x 256
    by default; v2: with the head norm) and predictor, initialised per ``head_init`` (default:
    torchvision's Kaiming; xavier; normal: Detectron's N(0, 0.001) mask logits)."""
    norm = _head_norm(c) if c.variant == "v2" else None
    layers = [c.mask_head_dim] * c.mask_head_convs
    mask_head = MaskRCNNHeads(out_channels, layers, 1, norm_layer=norm)
    mask_predictor = MaskRCNNPredictor(c.mask_head_dim, c.mask_head_dim, num_classes + 1)
    if c.head_init == "xavier":
        _xavier_(mask_head)
        _xavier_(mask_predictor)
    elif c.head_init == "normal":
        nn.init.normal_(mask_predictor.mask_fcn_logits.weight, std=0.001)
        nn.init.zeros_(mask_predictor.mask_fcn_logits.bias)
    return mask_head, mask_predictor


# the ModelConfig keys passed to FasterRCNN under the same name
DETECTOR_KEYS = (
    "max_size",
    "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test",
    "rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh",
    "rpn_batch_size_per_image", "rpn_positive_fraction", "rpn_score_thresh",
    "box_score_thresh", "box_nms_thresh", "box_detections_per_img",
    "box_fg_iou_thresh", "box_bg_iou_thresh",
    "box_batch_size_per_image", "box_positive_fraction",
)  # fmt: skip


def _detector(backbone: nn.Module, c: ModelConfig, num_classes: int) -> FasterRCNN:
    """Faster R-CNN, or Mask R-CNN (a FasterRCNN subclass) when ``c.with_masks``."""
    anchor_generator = _anchor_generator(c)
    num_anchors = anchor_generator.num_anchors_per_location()[0]
    rpn_head, box_head, box_predictor = _heads(c, backbone.out_channels, num_anchors, num_classes)
    masks: dict[str, nn.Module] = {}
    if c.with_masks:
        masks["mask_head"], masks["mask_predictor"] = _mask_heads(
            c, backbone.out_channels, num_classes
        )
    return (MaskRCNN if c.with_masks else FasterRCNN)(
        backbone,
        num_classes=None,
        **masks,
        min_size=tuple(c.min_size) if isinstance(c.min_size, list) else c.min_size,
        image_mean=list(c.image_mean),
        image_std=list(c.image_std),
        rpn_anchor_generator=anchor_generator,
        rpn_head=rpn_head,
        box_head=box_head,
        box_predictor=box_predictor,
        **{key: getattr(c, key) for key in DETECTOR_KEYS},
    )


def _load_full_weights(model: FasterRCNN, c: ModelConfig) -> dict[str, Any]:
    """COCO Faster (Mask) R-CNN weights into ``model``: the predictors (other classes), an adapted
    conv1 and RPN outputs for another number of anchors per location stay new."""
    path = _weights_source(c, "full")
    state = _rename_legacy_keys(W.load_state_dict(path))
    new = ["roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."]
    conv1_key = "backbone.body.conv1.weight"
    conv1 = model.backbone.body.conv1
    conv1_note = _conv1_note(state[conv1_key], conv1.weight, c) if conv1_key in state else None
    if conv1_note:
        new.append(conv1_key)
    own = model.state_dict()
    for key in ("rpn.head.cls_logits.weight", "rpn.head.bbox_pred.weight"):
        if key in state and tuple(state[key].shape) != tuple(own[key].shape):
            new.append(key.rsplit(".", 1)[0] + ".")  # anchors per location changed
    report = _load_checked(
        model,
        state,
        new_prefixes=new,
        source=str(path),
        what=f"{'Mask' if c.with_masks else 'Faster'} R-CNN {c.variant} ({c.backbone})",
    )
    if conv1_note:
        _copy_adapted_conv1(conv1, state[conv1_key], c, path)
    report.update({"file": str(path), "kind": "full", "conv1": conv1_note})
    return report


def _log_load_report(report: dict[str, Any]) -> None:
    new = sorted({k.rsplit(".", 1)[0] for k in report["new"]})
    conv1 = f"; {report['conv1']}" if report["conv1"] else ""
    logger.info(
        "loaded %s weights from %s: %d tensors; new (not from the file): %s%s",
        report["kind"],
        report["file"],
        report["loaded"],
        new,
        conv1,
    )
    if report["unused"]:
        logger.info(
            "%d tensors of %s not used: %s",
            len(report["unused"]),
            report["file"],
            report["unused"][:8],
        )


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
        raise ConfigError(
            "num_classes (object classes without background) must be an integer >= 1, "
            f"got {num_classes!r}"
        )
    read_files = load_weights and c.is_pretrained
    load_report: dict[str, Any] | None = None
    body = _resnet_body(c)
    if read_files and c.pretrained == "backbone":
        load_report = _load_backbone_weights(body, c)
    model = _detector(_fpn_backbone(body, c, load_report), c, num_classes)
    if read_files and c.pretrained == "full":
        load_report = _load_full_weights(model, c)
    if load_report is not None:
        _log_load_report(load_report)
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
