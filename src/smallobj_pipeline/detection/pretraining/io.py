"""The backbone file: :func:`backbone_payload` builds the checkpoint dict (the pipeline's catalog
saves it), :func:`save_backbone` writes it to ``<output_dir>/<name>.pt``. Its ``"model"`` is the
ResNet body's state dict with torchvision key names (``conv1.weight``, ``layer1.0...``; no
``fc.*``), plus metadata (arch, in_channels, classes, history...), readable with weights-only
loading. Reference it from an experiment with ``model: {pretrained: backbone, backbone: <arch>,
in_channels: <same>, weights_path: <name>}`` (looked up in ``data/06_models/backbones``; set
``model.weights_dir`` if ``output_dir`` differs). A conv1 saved with 1 input channel loads as it
is into a 1-channel detector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import DatasetError

BACKBONE_FORMAT = "smallobj_pipeline/backbone-v1"


def backbone_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A classifier's state dict without its ``fc.*`` head: the ResNet body, torchvision keys."""
    return {k: v.detach().cpu().clone() for k, v in state.items() if not k.startswith("fc.")}


def backbone_payload(
    state: Mapping[str, torch.Tensor] | nn.Module,
    *,
    arch: str,
    in_channels: int,
    classes: Sequence[str],
    history: Sequence[Mapping[str, Any]] = (),
    **metadata: Any,
) -> dict[str, Any]:
    """The backbone checkpoint dict: ``{"model": body state dict (no fc.*), "arch",
    "in_channels", "classes", "history", ...metadata}``, plain values only, so it is readable with
    weights_only loading (:func:`..modeling.weights.load_state_dict` unwraps ``"model"``)."""
    if isinstance(state, nn.Module):
        state = state.state_dict()
    payload = {
        "format": BACKBONE_FORMAT,
        "kind": "resnet_backbone",
        "model": backbone_state(state),
        "arch": str(arch),
        "in_channels": int(in_channels),
        "classes": [str(c) for c in classes],
        "history": [_plain(row) for row in history],
    }
    payload.update({k: _plain(v) for k, v in metadata.items()})
    return payload


def save_backbone(
    state: Mapping[str, torch.Tensor] | nn.Module, path: str | Path, **kw: Any
) -> Path:
    """Write :func:`backbone_payload` (same keyword arguments) to ``path`` atomically."""
    return save_checkpoint(backbone_payload(state, **kw), path)


def _plain(value: Any) -> Any:
    """Only tensors and plain containers/scalars in a checkpoint (weights_only loading)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def load_backbone(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict written by :func:`save_backbone` (weights_only loading)."""
    data = load_checkpoint(path)
    if not isinstance(data.get("model"), Mapping):
        raise DatasetError(f"{path}: not a backbone checkpoint (no 'model' state dict)")
    return data
