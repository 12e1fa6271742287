"""Content hashes of image files, cached by file identity so large datasets are hashed once.

The dataset fingerprint (recorded by retraining) and the model-input copy need to know whether a
file's *content* changed; its size alone cannot tell (uncompressed TIFFs of one size, a
re-exported dataset). Like DVC, files are identified by their MD5; like DVC's state database,
the MD5 is cached under the file's identity ``(path, inode, size, mtime_ns, ctime_ns)``: a file
that was rewritten, replaced or touched gets a new ``ctime`` (which no user tool can set back),
so the cache never returns a stale hash, and an unchanged 20,000-image dataset is not re-read.

The cache is one SQLite file (safe for concurrent runs), ``$SMALLOBJ_HASH_CACHE`` or
``~/.cache/smallobj_pipeline/file_hashes.sqlite``; if it cannot be used, files are hashed
without it. Why by hand: DVC's state database is internal API (``dvc_data.hashfile.state``)
tied to a DVC repository; this is the same idea in 60 lines.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

CHUNK = 1 << 20


def cache_path() -> Path:
    env = os.environ.get("SMALLOBJ_HASH_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "smallobj_pipeline" / "file_hashes.sqlite"


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class HashCache:
    """``md5(path)`` with results cached by file identity (see the module docstring)."""

    def __init__(self, path: str | Path | None = None):
        self._db: sqlite3.Connection | None = None
        target = Path(path) if path is not None else cache_path()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(target), timeout=30)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS md5 (path TEXT PRIMARY KEY, ident TEXT, md5 TEXT)"
            )
            self._db.commit()
        except (OSError, sqlite3.Error):
            self._db = None  # read-only home, locked or damaged file: hash without a cache

    @staticmethod
    def identity(st: os.stat_result) -> str:
        return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def md5(self, path: str | Path) -> str:
        path = Path(path).resolve()
        ident = self.identity(path.stat())
        if self._db is not None:
            try:
                row = self._db.execute(
                    "SELECT ident, md5 FROM md5 WHERE path = ?", (str(path),)
                ).fetchone()
                if row and row[0] == ident:
                    return row[1]
            except sqlite3.Error:
                pass
        digest = _md5(path)
        if self._db is not None and self.identity(path.stat()) == ident:  # unchanged while read
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO md5 VALUES (?, ?, ?)", (str(path), ident, digest)
                )
                self._db.commit()
            except sqlite3.Error:
                pass
        return digest

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
