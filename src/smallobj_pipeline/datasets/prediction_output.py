"""The output folder of the predict pipeline, replaced as a whole on every save.

The folder holds exactly one run's results::

    predictions.json   COCO results
    images.json        the image index (predicted images, skipped bad images)
    drawn/<relative path of the image>.png   the image with its boxes, e.g. drawn/a/b.tif.png

A save writes everything into a new hidden sibling folder (``.NAME.HOST.PID.RANDOM.tmp``), then
swaps it in with renames: the previous folder is renamed aside (``...RANDOM.old``), the new one
renamed to the target, the old one removed. A reader or a crash therefore never sees a mix of
two runs: the target is the previous complete folder, the new complete one, or (a crash between
the two renames) absent. Leftovers of writers that no longer run are removed by the next save.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from smallobj_pipeline.detection.data.coco import safe_join
from smallobj_pipeline.detection.errors import DatasetError
from smallobj_pipeline.detection.io import HOST, pid_alive, write_bytes, write_json

PREDICTIONS_FILE = "predictions.json"
IMAGES_FILE = "images.json"
DRAWN_DIR = "drawn"
PARTS = ("predictions", "images", "drawings")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _relative_path(key: Any) -> bool:
    """A non-empty ``/``-separated relative path without ``.``/``..``/empty parts."""
    if not isinstance(key, str) or not key or key.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


class PredictionOutputDataset(AbstractDataset[dict, dict]):
    """Saves and loads ``{"predictions": list, "images": dict, "drawings": {relpath: png}}``.

    ``drawings`` keys are the predicted images' relative paths (``/``-separated, with their
    suffix); each is written to ``drawn/<key>.png``, so names never collide and map back to their
    image. ``load`` returns the same dict.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        if not self._exists():
            raise DatasetError(f"{self._path}: no prediction output (run the predict pipeline)")
        drawn = self._path / DRAWN_DIR
        files = sorted(drawn.rglob("*.png")) if drawn.is_dir() else []
        return {
            "predictions": json.loads((self._path / PREDICTIONS_FILE).read_text(encoding="utf-8")),
            "images": json.loads((self._path / IMAGES_FILE).read_text(encoding="utf-8")),
            "drawings": {
                f.relative_to(drawn).as_posix()[: -len(".png")]: f.read_bytes() for f in files
            },
        }

    def save(self, data: dict[str, Any]) -> None:
        self._check(data)
        target = self._path
        target.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        tmp = self._sibling("tmp")
        os.mkdir(tmp)  # unlike mkdtemp, keeps a plain mkdir's permissions (umask)
        try:
            write_json(tmp / PREDICTIONS_FILE, data["predictions"])
            write_json(tmp / IMAGES_FILE, data["images"])
            drawn = tmp / DRAWN_DIR
            drawn.mkdir()
            for key, png in data["drawings"].items():
                dest = safe_join(drawn, f"{key}.png")
                dest.parent.mkdir(parents=True, exist_ok=True)
                write_bytes(dest, png)
            self._swap_in(tmp)
        except BaseException:
            _remove(tmp)
            raise

    def _check(self, data: Any) -> None:
        if not isinstance(data, dict) or set(data) != set(PARTS):
            got = list(data) if isinstance(data, dict) else type(data).__name__
            raise DatasetError(f"{self._path}: expected a dict with keys {list(PARTS)}, got {got}")
        drawings = data["drawings"]
        if not isinstance(drawings, dict):
            kind = type(drawings).__name__
            raise DatasetError(f"{self._path}: drawings must be a dict, got {kind}")
        bad = [k for k, v in drawings.items() if not _relative_path(k) or not isinstance(v, bytes)]
        if bad:
            raise DatasetError(
                f"{self._path}: drawings must map plain relative paths (no '..', not absolute) "
                f"to PNG bytes; bad keys: {bad[:3]}"
            )

    def _sibling(self, kind: str) -> Path:
        name = f".{self._path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.{kind}"
        return self._path.parent / name

    def _swap_in(self, tmp: Path) -> None:
        target = self._path
        if not (target.exists() or target.is_symlink()):
            os.rename(tmp, target)
            return
        aside = self._sibling("old")
        os.rename(target, aside)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(aside, target)  # put the previous output back
            raise
        _remove(aside)

    def _remove_stale(self) -> None:
        """Remove the ``.tmp`` / ``.old`` siblings of savers on this host that no longer run."""
        prefix = f".{self._path.name}."
        for sibling in self._path.parent.iterdir():
            name = sibling.name
            if not name.startswith(prefix) or not name.endswith((".tmp", ".old")):
                continue
            parts = name[len(prefix) : -len(".tmp")].rsplit(".", 2)
            if len(parts) != 3 or parts[0] != HOST or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid != os.getpid() and not pid_alive(pid):
                _remove(sibling)

    def _exists(self) -> bool:
        return (self._path / IMAGES_FILE).is_file() and (self._path / PREDICTIONS_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
