"""What a training process sets up around the loop: seeds, the per-epoch training loader, where
it trains (:func:`place_training`: how many processes, which GPUs, claimed through
:mod:`.gpu_claim`), the distributed environment (DistributedDataParallel, under the launcher of
:mod:`.elastic` or ``torchrun``), and the duration format of the logs.

Shared by detector training (:mod:`.trainer`) and backbone pretraining
(:mod:`..pretraining.classifier`), so that both seed, load and log the same way.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, RandomSampler

from ..errors import ConfigError
from .config import TrainConfig
from .gpu_claim import GpuClaim, process_claim

logger = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Python's, NumPy's and torch's RNGs; deterministic algorithms on CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic and not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)


def loader_workers(num_workers: int | str, cuda: bool) -> int:
    """``num_workers``, with "auto" = min(4, cpus) on CUDA and 0 (the main process) on CPU."""
    if num_workers == "auto":
        return min(4, os.cpu_count() or 1) if cuda else 0
    return int(num_workers)


def _seed_worker(base_seed: int, worker_id: int) -> None:
    s = base_seed + worker_id
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)
    tr = getattr(torch.utils.data.get_worker_info().dataset, "transform", None)
    if tr is not None and hasattr(tr, "set_random_seed"):
        tr.set_random_seed(s)


def epoch_loader(
    dataset: Any,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    deterministic: bool,
    workers: int,
    cuda: bool,
    sampler: Any = None,
    collate_fn: Any = None,
    drop_last: bool = False,
) -> DataLoader:
    """Seed everything for ``epoch`` and return its training loader, so that the order and the
    augmentation of an epoch depend only on (seed, epoch), which makes a resumed run match an
    uninterrupted one: the process and the dataset's transform get ``seed + epoch``, the default
    sampler shuffles with ``seed + epoch``, each loader worker gets ``seed + 1000 * epoch + id``."""
    seed_everything(seed + epoch, deterministic)
    tr = getattr(dataset, "transform", None)
    if tr is not None and hasattr(tr, "set_random_seed"):
        tr.set_random_seed(seed + epoch)
    if sampler is None:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed + epoch))
    init = functools.partial(_seed_worker, seed + 1000 * epoch) if workers > 0 else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=cuda,
        persistent_workers=False,
        worker_init_fn=init,
        drop_last=drop_last,
    )


def fmt_seconds(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour on."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


# ---------------------------------------------------------------------------- placement
@dataclass(frozen=True)
class Placement:
    """Where one experiment trains on this machine."""

    training: TrainConfig  # its settings, ``device`` made concrete for a single process
    processes: int  # training processes on this machine
    gpus: tuple[int, ...]  # the CUDA indexes they use (process i: gpus[i]); () on CPU

    @property
    def launch(self) -> bool:
        """Whether workers must be launched (several processes here, or several machines)."""
        return not distributed()[0] and (self.processes > 1 or self.training.nnodes > 1)


def place_training(cfg: TrainConfig, claim: GpuClaim | None = None) -> Placement:
    """How many processes train, on which device: ``devices`` processes (auto: every visible GPU,
    1 on CPU); ``device: auto`` claims free GPUs (``claim``, default :func:`process_claim`) and
    trains on the CPU with a warning when other runs hold them all. A launched worker keeps the
    settings its launcher gave it."""
    if distributed()[0]:
        return Placement(cfg, 1, ())
    requested = str(cfg.device).strip().lower()
    if requested == "auto":
        return _place_auto(cfg, claim or process_claim())
    device = torch.device(requested)
    if device.type != "cuda":
        return _placement(cfg, "cpu", 1 if cfg.devices == "auto" else cfg.devices, ())
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not available:
        raise ConfigError(
            f"training.device {cfg.device!r} was requested but CUDA is not available here"
        )
    if device.index is not None:
        _check_count(cfg, 1, f"training.device {cfg.device!r} names one GPU")
        return _placement(cfg, "cuda", 1, (device.index,))
    count = _check_count(cfg, available, f"{available} GPU(s) are visible")
    return _placement(cfg, "cuda", count, tuple(range(count)))


def evaluation_device(requested: str, claim: GpuClaim | None = None) -> torch.device:
    """Where to evaluate: with ``auto``, the GPU this process trained on (it holds its claim) or
    a free one it claims, else the CPU; anything else as :func:`place_training` reads it."""
    cfg = TrainConfig.from_dict({"device": requested, "devices": 1})
    return torch.device(place_training(cfg, claim).training.device)


def _place_auto(cfg: TrainConfig, claim: GpuClaim) -> Placement:
    available = len(claim.gpu_ids)
    if not available:
        return _placement(cfg, "cpu", 1 if cfg.devices == "auto" else cfg.devices, ())
    wanted = _check_count(cfg, available, f"{available} GPU(s) are visible")
    got = claim.claim(wanted)
    if not got:
        logger.warning(
            "all %d GPU(s) are claimed by other training runs (lock files in %s): training on "
            "the CPU; set training.device: cuda to share a GPU instead",
            available,
            claim.directory,
        )
        return _placement(cfg, "cpu", 1, ())
    if len(got) < wanted:
        logger.warning(
            "%d of the %d GPU(s) wanted are claimed by other training runs: training on GPU(s) %s",
            wanted - len(got), wanted, got,
        )  # fmt: skip
    return _placement(cfg, "cuda", len(got), tuple(got))


def _check_count(cfg: TrainConfig, available: int, why: str) -> int:
    if cfg.devices == "auto":
        return available
    if cfg.devices > available:
        raise ConfigError(f"training.devices is {cfg.devices} but {why}")
    return int(cfg.devices)


def _placement(cfg: TrainConfig, kind: str, processes: int, gpus: tuple[int, ...]) -> Placement:
    single = processes == 1 and cfg.nnodes == 1
    device = f"cuda:{gpus[0]}" if kind == "cuda" and single else kind
    return Placement(cfg.model_copy(update={"device": device}), processes, gpus)


# ---------------------------------------------------------------------------- distributed
def distributed() -> tuple[bool, int, int]:
    """``(one of several processes, rank, world size)`` from the environment that the launcher
    (:mod:`.elastic`) or ``torchrun`` sets."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world > 1, rank, world


def process_device(device: torch.device) -> torch.device:
    """This process's GPU when one of several (``LOCAL_RANK``), else ``device`` as it is."""
    if distributed()[0] and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap_distributed(
    model: torch.nn.Module, device: torch.device, sync_bn: bool
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Join the process group (NCCL on CUDA, gloo on CPU) and wrap ``model`` in
    DistributedDataParallel (SyncBatchNorm first on request). Returns ``(wrapped, model)``: the
    first to train, the second (its module) to save, validate and optimise."""
    cuda = device.type == "cuda"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cuda:
        torch.cuda.set_device(device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if cuda else None
    )
    return ddp, model


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (rank 0 validates; every rank follows its decisions)."""
    tensor = torch.tensor([int(flag)], device=device if device.type == "cuda" else "cpu")
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def end_distributed() -> None:
    """Wait for every rank, then leave the process group (when one was joined)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
