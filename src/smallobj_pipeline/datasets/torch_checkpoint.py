"""A model file (weights plus the resolved config that rebuilds the model) as a versionable Kedro
dataset.

kedro-datasets has no PyTorch file dataset, so this subclasses Kedro's
``AbstractVersionedDataset`` directly and implements only load and save: both go through
:mod:`smallobj_pipeline.detection.checkpoint` (the one place the project calls ``torch.load``,
``weights_only=True``; saves written to a temporary file and renamed). Paths, ``versioned: true``
(``<filepath>/<version>/<name>``), ``--load-versions`` and ``exists`` are Kedro's. Local files
only.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, get_protocol_and_path

from smallobj_pipeline.detection.checkpoint import load_checkpoint, save_checkpoint


class TorchCheckpointDataset(AbstractVersionedDataset[dict, dict]):
    """Saved with ``torch.save`` atomically; loaded with ``torch.load(weights_only=True)`` only,
    so a file carrying pickled code is refused rather than executed.

    ``missing_ok: true`` loads ``None`` while no file (no version) exists yet.

    Example catalog entry (the project's champions are partitions of this dataset,
    ``retrain.champions``)::

        my_model:
          type: smallobj_pipeline.datasets.TorchCheckpointDataset
          filepath: data/06_models/my_model/model.pt
          versioned: true
    """

    def __init__(
        self,
        filepath: str,
        *,
        version: Version | None = None,
        missing_ok: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol != "file":
            raise DatasetError(f"{filepath}: TorchCheckpointDataset reads local files only")
        super().__init__(filepath=PurePosixPath(path), version=version)
        self._missing_ok = missing_ok
        self.metadata = metadata

    def load(self) -> dict | None:
        if self._missing_ok and not self.exists():
            return None
        return load_checkpoint(str(self._get_load_path()))

    def save(self, data: dict) -> None:
        save_checkpoint(data, str(self._get_save_path()))

    def _exists(self) -> bool:
        return self._exists_function(str(self._get_load_path()))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
