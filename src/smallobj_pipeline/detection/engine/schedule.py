"""Learning-rate schedules from torch's schedulers, stepped once per optimizer step.

A linear warm-up (:class:`~torch.optim.lr_scheduler.LinearLR`) times a decay
(:class:`~torch.optim.lr_scheduler.CosineAnnealingLR`, ``StepLR`` or ``MultiStepLR``, their
epochs counted in optimizer steps), chained with ``ChainedScheduler``: both multiply the learning
rate at every step, so the rate is ``lr x warm-up(it) x decay(it)`` and the decay runs over the
whole training, warm-up included. Their ``state_dict`` goes into ``last.pt``, so a resumed run
continues the same curve. ``plateau`` is torch's ``ReduceLROnPlateau``, stepped after each
validation; it multiplies the rate in place, so it composes with the warm-up.

Against the closed form these replaced, the rates agree to float rounding (relative 1e-13 after
a thousand steps) when ``min_lr_ratio`` is 0; with a cosine floor, torch's ``eta_min`` is one value
(``min_lr_ratio x lr``) for every parameter group and is not scaled by the warm-up.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    ReduceLROnPlateau,
    StepLR,
)

# LinearLR needs a positive start: a warm-up "from 0" starts at this fraction of the rate
MIN_WARMUP_FACTOR = 1e-12
# a decay length for a run whose length is not known yet (time budget): flat until planned
UNPLANNED_ITERS = 10**9


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: str,
    total_iters: int,
    iters_per_epoch: int,
    warmup_iters: int,
    warmup_factor: float,
    min_lr_ratio: float = 0.0,
    step_size: int = 1,
    milestones: tuple[int, ...] | list[int] = (),
    gamma: float = 0.1,
) -> ChainedScheduler:
    """Warm-up x decay for ``schedule`` (``none``/``plateau``: the warm-up alone; ``step`` and
    ``multistep`` count ``step_size`` and ``milestones`` in epochs of ``iters_per_epoch``)."""
    ipe = max(1, iters_per_epoch)
    start = max(warmup_factor, MIN_WARMUP_FACTOR) if warmup_iters > 0 else 1.0
    schedulers: list[LRScheduler] = [
        LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=max(1, warmup_iters))
    ]
    if schedule == "cosine":
        floor = min_lr_ratio * optimizer.param_groups[0]["initial_lr"]
        schedulers.append(CosineAnnealingLR(optimizer, T_max=max(1, total_iters), eta_min=floor))
    elif schedule == "step":
        schedulers.append(StepLR(optimizer, step_size=max(1, step_size) * ipe, gamma=gamma))
    elif schedule == "multistep":
        schedulers.append(MultiStepLR(optimizer, [m * ipe for m in milestones], gamma=gamma))
    return ChainedScheduler(schedulers, optimizer=optimizer)


def build_plateau(
    optimizer: torch.optim.Optimizer, *, patience: int, gamma: float
) -> ReduceLROnPlateau | None:
    """The rate x ``gamma`` after more than ``patience`` validations without an improvement
    of more than 1e-6 of a metric to maximise; ``None`` when ``gamma`` is 1 (nothing to do)."""
    if gamma >= 1:
        return None
    return ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=gamma,
        patience=patience,
        threshold=1e-6,
        threshold_mode="abs",
        eps=0.0,
    )


def stretch_decay(scheduler: ChainedScheduler, total_iters: int) -> None:
    """Make the cosine decay of ``scheduler`` (from :func:`build_lr_scheduler`) end after
    ``total_iters`` optimizer steps, continuing from the current rate (the time budget re-plans
    the run's length this way); step decays, counted in epochs, are left as they are. The new
    length is part of the scheduler's ``state_dict``, so a resumed run keeps it."""
    for sched in scheduler._schedulers:  # ChainedScheduler keeps its parts there (torch 2.x)
        if isinstance(sched, CosineAnnealingLR):  # never behind the current step (no rise)
            sched.T_max = max(sched.last_epoch + 1, int(total_iters))
