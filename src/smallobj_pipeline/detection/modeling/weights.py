"""Locating and safely loading pretrained weight files. Nothing is ever downloaded.

Where a file comes from (``spec``):

- an explicit path (``str``/``Path``) to an existing file;
- ``None``, ``"torchvision"`` or ``"default"``: torchvision's own file for the architecture
  (ImageNet classifier for ``kind="backbone"``, COCO detector for ``kind="full"``), looked up by
  its exact torchvision file name in the torch hub cache, ``torch.hub.get_dir()/checkpoints``
  (``$TORCH_HOME/hub/checkpoints``), then in the extra search directories;
- a bare name (no path separator), e.g. a backbone pretrained in this project: looked up as
  ``NAME``, ``NAME.pt`` and ``NAME.pth`` in the search directories (default
  ``data/06_models/backbones``).

A missing file raises :class:`WeightsError` naming the exact file, the folder to put it in and,
for torchvision files, the address to fetch it from on a connected machine.

Loading goes through ``torch.load(weights_only=True)`` only: a file carrying pickled objects
(that could run code when unpickled) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
)
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_V2_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
)

from ..checkpoint import load_checkpoint
from ..constants import BACKBONES, VARIANTS
from ..errors import ConfigError, WeightsError

BACKBONE_ARCHS = BACKBONES  # every backbone has torchvision ImageNet weights
FULL_VARIANTS = VARIANTS  # both variants have torchvision COCO weights (resnet50)
DEFAULT_SEARCH_DIRS: tuple[str, ...] = ("data/06_models/backbones",)
TORCHVISION_SPECS = (None, "torchvision", "default")
NAME_SUFFIXES = ("", ".pt", ".pth")


def _backbone_enums() -> dict[str, Any]:
    # IMAGENET1K_V1 everywhere: the weights torchvision's detection builders use for the backbone
    return {
        "resnet18": ResNet18_Weights.IMAGENET1K_V1,
        "resnet34": ResNet34_Weights.IMAGENET1K_V1,
        "resnet50": ResNet50_Weights.IMAGENET1K_V1,
        "resnet101": ResNet101_Weights.IMAGENET1K_V1,
    }


def _full_enums(task: str = "detection") -> dict[str, Any]:
    if task == "instance_segmentation":
        return {
            "v1": MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
            "v2": MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
        }
    return {
        "v1": FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
        "v2": FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
    }


def torchvision_weight_url(
    kind: str, arch: str, variant: str = "v1", task: str = "detection"
) -> str:
    """Download address of torchvision's file for ``(kind, arch[, variant, task])`` (read from
    the installed torchvision's weight enums, not hard-coded); ``task`` instance_segmentation
    names the COCO Mask R-CNN files."""
    if kind == "backbone":
        enums = _backbone_enums()
        if arch not in enums:
            raise ConfigError(
                f"no torchvision ImageNet weights known for backbone {arch!r}; "
                f"known: {sorted(enums)}"
            )
        return enums[arch].url
    if kind == "full":
        if arch != "resnet50":
            raise ConfigError(
                "pretrained 'full' (COCO detector weights) exists only for the resnet50 backbone "
                f"(v1 and v2), not for {arch!r}: use pretrained 'backbone' (ImageNet) or 'none' "
                f"for {arch}"
            )
        enums = _full_enums(task)
        if variant not in enums:
            raise ConfigError(f"unknown variant {variant!r} for full weights; valid: {list(enums)}")
        return enums[variant].url
    raise ConfigError(f"unknown weight kind {kind!r}; valid: 'backbone', 'full'")


def torchvision_weight_filename(
    kind: str, arch: str, variant: str = "v1", task: str = "detection"
) -> str:
    """Exact file name torchvision gives the file (e.g. ``resnet18-f37072fd.pth``)."""
    return torchvision_weight_url(kind, arch, variant, task).rsplit("/", 1)[-1]


def torchvision_weight_files() -> dict[str, str]:
    """``{"backbone/resnet18": "resnet18-f37072fd.pth", ..., "full/resnet50_v1": ...,
    "full_masks/resnet50_v1": ...}`` (``full_masks``: COCO Mask R-CNN)."""
    out = {f"backbone/{a}": torchvision_weight_filename("backbone", a) for a in BACKBONE_ARCHS}
    out.update(
        {
            f"full/resnet50_{v}": torchvision_weight_filename("full", "resnet50", v)
            for v in FULL_VARIANTS
        }
    )
    out.update(
        {
            f"full_masks/resnet50_{v}": torchvision_weight_filename(
                "full", "resnet50", v, "instance_segmentation"
            )
            for v in FULL_VARIANTS
        }
    )
    return out


def hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: where torchvision would cache its downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _as_dirs(search_dirs: str | Path | Iterable[str | Path] | None) -> list[Path]:
    if search_dirs is None:
        return [Path(d) for d in DEFAULT_SEARCH_DIRS]
    if isinstance(search_dirs, str | Path):
        return [Path(search_dirs)]
    return [Path(d) for d in search_dirs]


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.startswith(".") or spec.startswith("~")


def resolve_weight_file(
    spec: str | Path | None,
    kind: str,
    arch: str,
    variant: str = "v1",
    search_dirs: str | Path | Iterable[str | Path] | None = None,
    task: str = "detection",
) -> Path:
    """Find the weight file for ``spec`` (see the module docstring). Never downloads.

    ``kind``: ``"backbone"`` (ImageNet classifier weights for the ResNet body) or ``"full"`` (COCO
    Faster R-CNN weights, or Mask R-CNN's with ``task="instance_segmentation"``; resnet50 v1/v2
    only, else :class:`ConfigError`). ``search_dirs``: where
    bare names (and, after the hub cache, torchvision files) are looked up; ``None`` means
    ``data/06_models/backbones``.
    """
    if kind not in ("backbone", "full"):
        raise ConfigError(f"unknown weight kind {kind!r}; valid: 'backbone', 'full'")
    if isinstance(spec, str) and spec.strip().lower() in ("torchvision", "default", ""):
        spec = None
    dirs = _as_dirs(search_dirs)
    if spec is None:
        return _torchvision_file(kind, arch, variant, dirs, task)
    path = Path(spec).expanduser()
    if isinstance(spec, Path) or _looks_like_path(str(spec)) or path.is_file():
        if path.is_file():
            return path.resolve()
        raise WeightsError(
            f"{kind} weight file '{path.name}' not found in {path.parent.resolve()} "
            f"(model.weights_path = {str(spec)!r}); pretrained weights are never downloaded"
        )
    return _named_file(str(spec), kind, dirs)


def _torchvision_file(
    kind: str, arch: str, variant: str, dirs: list[Path], task: str = "detection"
) -> Path:
    """torchvision's file for the architecture, in the hub cache or ``dirs``."""
    url = torchvision_weight_url(kind, arch, variant, task)  # ConfigError for unsupported archs
    name = url.rsplit("/", 1)[-1]
    hub = hub_checkpoint_dir()
    for d in [hub, *dirs]:
        if (d / name).is_file():
            return (d / name).resolve()
    what = (
        f"ImageNet weights for the {arch} backbone"
        if kind == "backbone"
        else f"COCO {_detector_name(task)} {variant} weights ({arch})"
    )
    also = f" (also looked in: {', '.join(str(d.resolve()) for d in dirs)})" if dirs else ""
    raise WeightsError(
        f"{what} not found: file '{name}' is not in {hub.resolve()}{also}. "
        "Pretrained weights are never downloaded. On a machine with internet access fetch "
        f"{url} and copy it to {hub.resolve()}/{name} (the torch hub cache, "
        "$TORCH_HOME/hub/checkpoints), or set model.weights_path to the file's path, or use "
        "pretrained: none."
    )


def _detector_name(task: str) -> str:
    return "Mask R-CNN" if task == "instance_segmentation" else "Faster R-CNN"


def _named_file(name: str, kind: str, dirs: list[Path]) -> Path:
    """``NAME``, ``NAME.pt`` or ``NAME.pth`` in the first of ``dirs`` that holds one."""
    tried: list[str] = []
    for d in dirs:
        for suffix in NAME_SUFFIXES:
            candidate = d / f"{name}{suffix}"
            tried.append(str(candidate.resolve()))
            if candidate.is_file():
                return candidate.resolve()
    where = ", ".join(str(d.resolve()) for d in dirs) or "(no search directories)"
    expected = name if name.endswith((".pt", ".pth")) else f"{name}.pt"
    raise WeightsError(
        f"{kind} weights named {name!r} not found: expected file '{expected}' in {where} "
        f"(tried {tried}). Put the file there (a backbone pretrained in this project is saved "
        "there), or set model.weights_path to an explicit path, or model.weights_dir to the "
        "folder holding it."
    )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(path, map_location="cpu", weights_only=True)``.

    Accepts a raw state dict or a checkpoint dict holding it under ``"model"`` or
    ``"state_dict"`` (as this project saves them); ``"module."`` prefixes (DataParallel/DDP) are
    stripped. Raises :class:`WeightsError` for a missing/unreadable file, a file that carries
    pickled objects (refused: untrusted or unsupported content) or one without tensors.
    """
    path = Path(path)
    data = load_checkpoint(path, what="weight file")
    if isinstance(data, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping) or not data:
        raise WeightsError(
            f"{path}: expected a state dict (a dict of tensors), got {type(data).__name__}"
        )
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path}: not a state dict: {len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} "
            f"not tensors (e.g. {bad[:3]}); expected a raw state dict or a checkpoint with a "
            "'model' or 'state_dict' key"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


def strip_to_resnet_body(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a ResNet body whatever the wrapper: a torchvision classifier (``conv1.weight``...),
    a detector (``backbone.body.conv1.weight``...) or a classifier saved with a prefix
    (``backbone.conv1.weight``...). The prefix is found from the stem conv beside ``layer1.0``."""
    marker = "layer1.0.conv1.weight"
    prefixes = sorted(
        {
            k[: -len(marker)]
            for k in state
            if k.endswith(marker) and f"{k[: -len(marker)]}conv1.weight" in state
        },
        key=len,
    )
    if not prefixes:
        return dict(state)
    prefix = prefixes[0]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
