"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)`` only."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import WeightsError
from .io import atomic_write

FORMAT = "smallobj_pipeline/checkpoint-v1"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unpickler_detail(exc: BaseException) -> str:
    """The useful line of torch's weights_only error (it starts with a long generic preamble)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        rest = text.split(marker, 1)[1].strip()
        return rest.splitlines()[0].strip() if rest else _first_line(exc)
    return _first_line(exc)


def save_checkpoint(data: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same directory, then rename onto ``path``."""
    payload = dict(data)
    payload.setdefault("format", FORMAT)
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, what: str = "checkpoint file") -> dict[str, Any]:
    """Load a checkpoint or weight file safely: the one place this project calls ``torch.load``.

    Only tensors and plain containers are accepted (``weights_only=True``): a file that carries a
    pickled object (and so could run code) is refused with :class:`WeightsError`, as is a corrupt
    file (with a different message). ``what`` names the file's role in the messages.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} '{path.name}' not found in {path.parent.resolve()}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = unpickler_detail(exc)
        if "Unsupported global" not in str(exc) and not zipfile.is_zipfile(path):
            raise WeightsError(
                f"{path}: not a readable PyTorch file (corrupt or another format: {detail})"
            ) from None
        raise WeightsError(
            f"{path}: refused to load untrusted/unsupported content: the file holds pickled "
            "objects "
            f"other than tensors and plain containers, and only weights_only loading is allowed "
            "(re-save it as a plain state dict: torch.save(model.state_dict(), path)). Detail: "
            f"{detail}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsError(
            f"{path}: not a readable PyTorch file ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(data, dict):
        raise WeightsError(
            f"{path}: expected a dict of tensors or a checkpoint dict, got {type(data).__name__}"
        )
    return data
