"""Atomic file writes: a reader or a crash never sees a half-written file.

``atomic_write`` writes to a hidden temporary file beside the target
(``.NAME.HOST.PID.RANDOM.tmp``) and renames it onto the target, so the target is always either
the previous complete file or the new complete one, whatever kills the writer. A writer that
fails with an exception removes its temporary file; one killed outright (SIGKILL, power loss)
cannot, and its leftover is removed by the next write of the same file on the same host once
its process is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HOST = socket.gethostname().replace(os.sep, "_") or "host"


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove temporary files of ``path`` left by writers on this host that no longer run."""
    path = Path(path)
    removed: list[Path] = []
    prefix = _tmp_prefix(path)
    try:
        candidates = [
            p
            for p in path.parent.iterdir()
            if p.name.startswith(prefix) and p.name.endswith(".tmp")
        ]
    except OSError:
        return removed
    for tmp in candidates:
        parts = tmp.name[len(prefix) : -len(".tmp")].rsplit(".", 2)
        if len(parts) != 3 or parts[0] != HOST or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    try:  # Linux: read without changing it (os.umask would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    """The permissions a plain ``open(path, "w")`` would leave: the existing file's, else
    0o666 minus the umask (``mkstemp`` creates its file 0o600, private to its owner)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename the temporary file onto ``path``.

    The temporary file lives in the same directory so the rename is atomic on POSIX; if
    ``writer`` raises (or the process is interrupted with an exception) it is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{_tmp_prefix(path)}{HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, _target_mode(path))
        _fsync(tmp_path)  # the data is on disk before the rename makes it visible
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def place_file(src: str | Path, dst: str | Path, link: bool = True) -> Path:
    """Put ``src`` at ``dst`` as a hard link (or a copy when ``link`` is false or linking fails,
    e.g. across file systems), through a uniquely named temporary file and a rename: a reader
    sees the old file or the new one, and concurrent writers never collide."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dst)
    tmp = dst.parent / f"{_tmp_prefix(dst)}{HOST}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    try:
        try:
            if not link:
                raise OSError("copy requested")
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    def _write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=indent, default=_json_default)

    return atomic_write(path, _write)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")
