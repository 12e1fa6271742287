"""Small file datasets (JSON, CSV, PNG figure, HTML) with atomic saves."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset

from smallobj_pipeline.detection.io import atomic_write, write_bytes, write_json, write_text


class _FileDataset(AbstractDataset):
    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class JSONDataset(_FileDataset):
    def load(self) -> Any:
        with open(self._filepath, encoding="utf-8-sig") as fh:
            return json.load(fh)

    def save(self, data: Any) -> None:
        write_json(self._filepath, data)


class CSVDataset(_FileDataset):
    def load(self) -> pd.DataFrame:
        return pd.read_csv(self._filepath)

    def save(self, data: pd.DataFrame) -> None:
        atomic_write(self._filepath, lambda tmp: data.to_csv(tmp, index=False))


class HTMLDataset(_FileDataset):
    def load(self) -> str:
        return self._filepath.read_text(encoding="utf-8")

    def save(self, data: str) -> None:
        write_text(self._filepath, data)


class FigureDataset(_FileDataset):
    """A matplotlib Figure saved as PNG; loads back the PNG bytes."""

    def __init__(self, filepath: str, dpi: int = 100, metadata: dict[str, Any] | None = None):
        super().__init__(filepath, metadata)
        self._dpi = dpi

    def load(self) -> bytes:
        return self._filepath.read_bytes()

    def save(self, data: Any) -> None:
        if isinstance(data, bytes):
            write_bytes(self._filepath, data)
            return
        buf = io.BytesIO()
        data.savefig(buf, format="png", dpi=self._dpi, bbox_inches="tight")
        write_bytes(self._filepath, buf.getvalue())
