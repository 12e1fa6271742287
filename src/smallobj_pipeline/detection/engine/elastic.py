"""Training on several processes from inside one call: every GPU of this machine (and of the
other machines of a multi-node run) trains one experiment with DistributedDataParallel, and the
caller (the Kedro training node) gets rank 0's result back as if it had trained alone.

:func:`launch_training` starts the workers with torch's elastic launcher
(``torch.distributed.launcher.api.elastic_launch``, the engine behind ``torchrun``): one process
per GPU (``training.devices``; on CPU, N gloo processes for tests and debugging), a rendezvous on
localhost for one machine (``c10d``, a free port) or on ``training.rdzv_endpoint`` for several
(``static``: machine ``node_rank`` gets global ranks ``node_rank * nproc ..``, so rank 0 is on
node 0), no restarts. Each worker (:func:`train_worker`) runs the ordinary trainer; rank 0
validates and writes every file, including its result (model file and history), which every
node's launcher reads back when all workers are done. The result travels through a file and not
through the launcher's return values, which would pass every tensor through shared memory
(``/dev/shm`` is small in containers) and reach only the node that holds rank 0.

A worker that fails stops the others; the error raised here names its rank and its message
(:class:`WorkerFailed`), its full traceback stays in the error file the launcher wrote.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.elastic.rendezvous import RendezvousError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.coco import CocoDataset
from .loop import TrainingError
from .runtime import Placement, distributed, end_distributed

logger = logging.getLogger(__name__)

QUIET_LOGGERS = ("torch.distributed.elastic", "torch.multiprocessing")
RESULT_FILE = "rank0_result.pt"  # in the checkpoint folder of a multi-node run (shared)


class WorkerFailed(TrainingError):
    """A training process failed; ``rank`` and ``message`` are its own."""

    def __init__(self, text: str, rank: int, message: str):
        super().__init__(text)
        self.rank, self.message = rank, message


def launch_config(placement: Placement, run_id: str) -> LaunchConfig:
    """The launcher's settings: one agent per machine, ``placement.processes`` workers each."""
    cfg = placement.training
    common = {
        "nproc_per_node": placement.processes,
        "run_id": run_id,
        "max_restarts": 0,
        "start_method": "spawn",
        "monitor_interval": 0.1,
    }
    if cfg.nnodes == 1:  # torchrun --standalone: a rendezvous on a free local port
        return LaunchConfig(
            min_nodes=1, max_nodes=1, rdzv_backend="c10d", rdzv_endpoint="localhost:0", **common
        )
    return LaunchConfig(
        min_nodes=cfg.nnodes,
        max_nodes=cfg.nnodes,
        rdzv_backend="static",
        rdzv_endpoint=str(cfg.rdzv_endpoint),
        rdzv_configs={"rank": cfg.node_rank},
        **common,
    )


def launch_training(
    coco: CocoDataset,
    cfg: dict[str, Any],
    checkpoint_dir: str | Path | None,
    placement: Placement,
    worker: Callable[..., None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train experiment ``cfg`` on the processes of ``placement`` (and the other machines of a
    multi-node run) and return rank 0's ``(model_file, history)``. ``worker``: the function each
    process runs (:func:`train_worker`; tests wrap it)."""
    training, name = placement.training, str(cfg.get("name") or "experiment")
    if training.nnodes > 1 and checkpoint_dir is None:
        raise TrainingError(
            f"[{name}] training.nnodes {training.nnodes} needs a checkpoint folder shared by "
            "every machine (rank 0's result is read back from it)"
        )
    scratch = None if training.nnodes > 1 else Path(tempfile.mkdtemp(prefix="smallobj-ddp-"))
    result = (scratch or Path(checkpoint_dir)) / RESULT_FILE  # type: ignore[arg-type]
    if training.node_rank == 0:
        result.unlink(missing_ok=True)
    worker_cfg = copy.deepcopy(cfg)
    worker_cfg.setdefault("training", {})["device"] = "cuda" if placement.gpus else "cpu"
    world = placement.processes * training.nnodes
    logger.info(
        "[%s] training on %d process(es) here (%s)%s, rank 0 writes the files",
        name, placement.processes,
        f"GPUs {list(placement.gpus)}" if placement.gpus else "CPU, gloo",
        f", node {training.node_rank} of {training.nnodes} ({world} in all)"
        if training.nnodes > 1 else "",
    )  # fmt: skip
    try:
        with _visible_gpus(placement.gpus), _quiet_launcher():
            elastic_launch(launch_config(placement, run_id=name), worker or train_worker)(
                coco, worker_cfg, None if checkpoint_dir is None else str(checkpoint_dir),
                str(result),
            )  # fmt: skip
        data = load_checkpoint(result, "rank 0's training result")
    except ChildFailedError as exc:
        raise _worker_error(name, exc, world) from None
    except RendezvousError as exc:
        raise TrainingError(
            f"[{name}] the {training.nnodes} machines did not meet at training.rdzv_endpoint "
            f"{training.rdzv_endpoint!r}: {exc}"
        ) from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return data["model_file"], data["history"]


@contextmanager
def _visible_gpus(gpus: tuple[int, ...]) -> Iterator[None]:
    """``CUDA_VISIBLE_DEVICES`` for the workers started inside: ``gpus`` (indexes as this process
    sees them), so that worker ``LOCAL_RANK`` i trains on ``gpus[i]``. This process keeps its
    own view (CUDA reads the variable once, when it starts)."""
    if not gpus:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = before.split(",") if before else [str(i) for i in range(max(gpus) + 1)]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(seen[i] for i in gpus)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


@contextmanager
def _quiet_launcher() -> Iterator[None]:
    """The launcher's own log lines (a worker's failure as a torch traceback, the termination of
    the others) muted: the error raised here says what failed, where and why."""
    names = [n for n in logging.root.manager.loggerDict if n.startswith(QUIET_LOGGERS)]
    loggers = [logging.getLogger(n) for n in (*QUIET_LOGGERS, *names)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _worker_error(name: str, exc: ChildFailedError, world: int) -> WorkerFailed:
    """The root cause among the failed workers: the earliest with an error of its own (the others
    were stopped by the launcher or lost their peer)."""
    own = {r: f for r, f in exc.failures.items() if os.path.isfile(f.error_file)}
    rank, failure = min((own or exc.failures).items(), key=lambda rf: (rf[1].timestamp, rf[0]))
    message = _failure_message(failure)
    where = f"; its traceback is in {failure.error_file}" if rank in own else ""
    return WorkerFailed(
        f"[{name}] training process rank {rank} (of {world}) failed: {message}{where}",
        rank,
        message,
    )


def _failure_message(failure: ProcessFailure) -> str:
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    return str(message).strip() or f"exit code {failure.exitcode}"


# ---------------------------------------------------------------------------- in the worker
def train_worker(
    coco: CocoDataset, cfg: dict[str, Any], checkpoint_dir: str | None, result_path: str
) -> None:
    """One training process (module-level so that it can be pickled to a spawned process)."""
    from .experiment import train_experiment  # experiment.py calls this module

    _, rank, world = distributed()
    _worker_logging(rank)
    if cfg.get("training", {}).get("device") == "cpu":  # share the cores, as torchrun does
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    model_file, history = train_experiment(coco, cfg, checkpoint_dir)
    if rank == 0:
        save_checkpoint({"model_file": model_file, "history": history}, result_path)
    end_distributed()  # every rank waits here until rank 0 has written the result
    logger.debug("rank %d of %d done", rank, world)


def _worker_logging(rank: int) -> None:
    """Rank 0 logs the progress lines; the other ranks only their warnings."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
        force=True,
    )
