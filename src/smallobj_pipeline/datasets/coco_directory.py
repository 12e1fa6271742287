"""A COCO detection directory as a Kedro dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from smallobj_pipeline.detection.data.coco import ANNOTATIONS_FILE, CocoDataset


class CocoDirectoryDataset(AbstractDataset[CocoDataset, CocoDataset]):
    """``path/annotations.json`` (+ optional ``train/val/test.json``) and the images under it.

    ``load`` reads the annotations only; images are read lazily by the consumers.
    ``save`` writes a self-contained directory: images hard-linked (copied across file systems),
    JSON files written atomically.

    Example catalog entry::

        model_input_coco:
          type: smallobj_pipeline.datasets.CocoDirectoryDataset
          path: data/05_model_input/coco
    """

    def __init__(self, path: str, link_images: bool = True, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self._link_images = link_images
        self.metadata = metadata

    def load(self) -> CocoDataset:
        return CocoDataset.from_dir(self._path)

    def save(self, data: CocoDataset) -> None:
        data.to_dir(self._path, link_images=self._link_images)

    def _exists(self) -> bool:
        return (self._path / ANNOTATIONS_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "link_images": self._link_images}
