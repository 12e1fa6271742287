"""A model file (weights plus the resolved config that rebuilds the model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from smallobj_pipeline.detection.checkpoint import load_checkpoint, save_checkpoint


class TorchCheckpointDataset(AbstractDataset[dict, dict]):
    """Saved with ``torch.save`` atomically; loaded with ``torch.load(weights_only=True)`` only,
    so a file carrying pickled code is refused rather than executed."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> dict:
        return load_checkpoint(self._filepath)

    def save(self, data: dict) -> None:
        save_checkpoint(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
