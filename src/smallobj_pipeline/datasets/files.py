"""File datasets of the project: kedro-datasets' own classes with an atomic local save.

Each class subclasses the kedro-datasets class for its format (``json.JSONDataset``,
``pandas.CSVDataset``, ``text.TextDataset``, ``matplotlib.MatplotlibDataset``,
``partitions.PartitionedDataset``) and overrides only what this project needs, so everything else
(``versioned: true``, ``fs_args``, ``save_args``, ``--load-versions``) is Kedro's:

- a local save goes to a hidden temporary file beside the target, renamed onto it
  (:func:`~smallobj_pipeline.detection.io.atomic_write`): an interrupted run never leaves a
  half-written output in place of a good one. Other protocols save as kedro-datasets does.
- ``missing_ok: true`` (JSON, figure) loads ``None`` while nothing has been saved yet. Kedro has no
  optional inputs; the report (a plot another pipeline makes) and the retrain registry (absent
  before the first run) need one.
- JSON: numpy scalars and arrays are written as numbers and lists, and a UTF-8 byte-order mark is
  accepted on load. Figure: a PNG (a Figure, or PNG bytes) that loads back as checked PNG bytes.
- :class:`PartitionsDataset`: a folder with no partition yet loads as ``{}`` (kedro-datasets
  raises), so the report reads "whatever experiments exist", none included.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io.core import get_filepath_str
from kedro_datasets.json import JSONDataset as _KedroJSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset as _KedroCSVDataset
from kedro_datasets.partitions import PartitionedDataset
from kedro_datasets.text import TextDataset

from smallobj_pipeline.detection.io import atomic_write
from smallobj_pipeline.detection.reporting.report import check_png

logger = logging.getLogger(__name__)


def _json_value(obj: Any) -> Any:
    """numpy scalars and arrays as numbers and lists, paths as strings."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


class _AtomicSave:
    """Mixin for the kedro-datasets file classes: a local save is written by ``_write(data, tmp)``
    through :func:`atomic_write`; any other protocol uses the kedro-datasets class's own save."""

    _protocol: str

    def _write(self, data: Any, tmp: Path) -> None:
        raise NotImplementedError

    def save(self, data: Any) -> None:
        if self._protocol != "file":
            super().save.__wrapped__(self, data)  # the parent's save, without Kedro's wrapper again
            return
        path = get_filepath_str(self._get_save_path(), self._protocol)
        atomic_write(path, lambda tmp: self._write(data, tmp))
        self._invalidate_cache()


class _MissingOk:
    """Mixin: with ``missing_ok`` set, ``load`` gives ``None`` while nothing is saved."""

    def _missing(self) -> bool:
        return bool(getattr(self, "_missing_ok", False)) and not self.exists()


class JSONDataset(_MissingOk, _AtomicSave, _KedroJSONDataset):
    """``json.JSONDataset`` with an atomic save, numpy values and an optional ``missing_ok``."""

    DEFAULT_FS_ARGS: dict[str, Any] = {
        "open_args_load": {"encoding": "utf-8-sig"},
        "open_args_save": {"mode": "w", "encoding": "utf-8"},
    }

    def __init__(self, *, filepath: str, missing_ok: bool = False, **kwargs: Any) -> None:
        super().__init__(filepath=filepath, **kwargs)
        self._missing_ok = missing_ok

    def load(self) -> Any:
        return None if self._missing() else super().load.__wrapped__(self)

    def _write(self, data: Any, tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, default=_json_value, **self._save_args)


class CSVDataset(_AtomicSave, _KedroCSVDataset):
    """``pandas.CSVDataset`` with an atomic save."""

    def _write(self, data: pd.DataFrame, tmp: Path) -> None:
        data.to_csv(tmp, **self._save_args)


class HTMLDataset(_AtomicSave, TextDataset):
    """``text.TextDataset`` (UTF-8) with an atomic save: the report page."""

    DEFAULT_FS_ARGS: dict[str, Any] = {
        "open_args_save": {"mode": "w", "encoding": "utf-8"},
        "open_args_load": {"mode": "r", "encoding": "utf-8"},
    }

    def _write(self, data: str, tmp: Path) -> None:
        tmp.write_text(data, encoding="utf-8")


class FigureDataset(_MissingOk, _AtomicSave, MatplotlibDataset):
    """``matplotlib.MatplotlibDataset`` saving one PNG (``dpi`` 100, tight box by default), from a
    Figure or from PNG bytes. Loads the PNG bytes back, checked (kedro-datasets cannot load), so
    the report can embed a plot another node saved."""

    DEFAULT_SAVE_ARGS: dict[str, Any] = {"format": "png", "dpi": 100, "bbox_inches": "tight"}

    def __init__(self, *, filepath: str, missing_ok: bool = False, **kwargs: Any) -> None:
        super().__init__(filepath=filepath, **kwargs)
        self._missing_ok = missing_ok

    def load(self) -> bytes | None:
        if self._missing():
            return None
        path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(path, mode="rb") as fh:
            return check_png(fh.read(), path)

    def _write(self, data: Any, tmp: Path) -> None:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data.savefig(tmp, **self._save_args)


class PartitionsDataset(PartitionedDataset):
    """``partitions.PartitionedDataset`` whose folder may hold no partition yet: it loads as
    ``{}`` (logged) instead of raising, for inputs that read whatever has been saved so far."""

    def load(self) -> dict[str, Callable[[], Any]]:
        self._invalidate_caches()
        if not self._list_partitions():
            logger.info("%s: no *%s file yet", self._path, self._filename_suffix)
            return {}
        return super().load.__wrapped__(self)
