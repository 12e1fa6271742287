"""Which GPUs a training run may use when several runs share a machine (``dvc queue start
--jobs N``, several ``kedro run`` at once): each run claims free GPUs through one lock file per
GPU, so two runs never share a GPU while another one is idle.

A claim is an OS file lock (``filelock``: ``flock`` on Linux and macOS), so it is released when
the process exits, however it exits (a crash or SIGKILL included): no stale claim to clean up.
The lock files live in one folder for the whole machine (``$SMALLOBJ_GPU_LOCK_DIR``, default
``<tmp>/smallobj-gpu-locks``; DVC queue runs each work in their own copy of the project, so a
project folder would not be shared), named by the GPU's UUID, so runs that see the GPUs under
different ``CUDA_VISIBLE_DEVICES`` still agree on which physical GPU a lock stands for.

:class:`GpuClaim` is one claimant (tests make several); :func:`process_claim` is the one a
training process uses, held for the life of the process so that the evaluation that follows the
training stays on the same GPU.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

LOCK_DIR_ENV = "SMALLOBJ_GPU_LOCK_DIR"


def lock_dir() -> Path:
    """The machine-wide folder of the lock files."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "smallobj-gpu-locks")


def visible_gpu_ids() -> list[str]:
    """One stable identifier per visible CUDA device, in index order (its UUID where torch
    reports one, else its index); empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    ids = []
    for index in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        ids.append(f"GPU-{uuid}" if uuid else f"index-{index}")
    return ids


class GpuClaim:
    """GPUs held by one claimant, until :meth:`release`, until it is garbage-collected or until
    its process ends. ``gpu_ids``: the visible GPUs' identifiers in index order
    (:func:`visible_gpu_ids` when ``None``; tests pass made-up ones)."""

    def __init__(self, gpu_ids: Sequence[str] | None = None, directory: str | Path | None = None):
        self._ids = list(gpu_ids) if gpu_ids is not None else None
        self.directory = Path(directory) if directory else lock_dir()
        self._held: dict[int, FileLock] = {}
        self._guard = threading.Lock()

    @property
    def gpu_ids(self) -> list[str]:
        if self._ids is None:
            self._ids = visible_gpu_ids()
        return self._ids

    @property
    def held(self) -> list[int]:
        """The indexes of the GPUs held now."""
        return sorted(self._held)

    def claim(self, count: int) -> list[int]:
        """Up to ``count`` GPU indexes for this claimant: those it holds already, then free ones
        in index order. Fewer (possibly none) when other runs hold the rest; never waits."""
        with self._guard:
            for index, gpu in enumerate(self.gpu_ids):
                if len(self._held) >= count:
                    break
                if index not in self._held:
                    self._try(index, gpu)
            return self.held[:count]

    def _try(self, index: int, gpu: str) -> None:
        self._make_dir()
        lock = FileLock(self.directory / f"{_safe(gpu)}.lock", timeout=0, mode=0o666)
        try:
            lock.acquire()
        except Timeout:
            return
        self._held[index] = lock
        logger.debug("claimed GPU %d (%s) with %s", index, gpu, lock.lock_file)

    def _make_dir(self) -> None:
        """The folder, writable by every user of the machine (like /tmp itself)."""
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.directory, 0o1777)
        except OSError:
            pass

    def release(self) -> None:
        """Give every held GPU back (a process's exit does the same)."""
        with self._guard:
            for lock in self._held.values():
                lock.release(force=True)
            self._held.clear()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


_PROCESS_CLAIM: GpuClaim | None = None
_PROCESS_GUARD = threading.Lock()


def process_claim() -> GpuClaim:
    """This process's claimant (held until the process exits)."""
    global _PROCESS_CLAIM
    with _PROCESS_GUARD:
        if _PROCESS_CLAIM is None:
            _PROCESS_CLAIM = GpuClaim()
        return _PROCESS_CLAIM
