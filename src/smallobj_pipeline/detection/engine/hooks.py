"""The loop's hooks (:class:`~.loop.HookBase`), one job each, in the style of Detectron2's
``engine/hooks.py``. A trainer registers them in an order that matters where two hooks act at
the same point: after an epoch, the divergence guard, validation, the plateau schedule, the best
state, early stopping, the last checkpoint, the progress line, then the signal stop (so an
interrupted epoch is logged and saved before the run stops).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ..checkpoint import load_checkpoint, save_checkpoint
from .loop import HookBase, TrainingError, TrainingInterrupted
from .runtime import broadcast_flag, fmt_seconds

logger = logging.getLogger(__name__)


class LRStep(HookBase):
    """Steps a per-iteration scheduler after every optimizer step; its state goes in last.pt."""

    def __init__(self, scheduler: LRScheduler):
        self.scheduler = scheduler

    def after_step(self) -> None:
        if self.trainer.optimizer_stepped:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])


class PlateauLR(HookBase):
    """``ReduceLROnPlateau`` stepped with each validation's metric (epochs without one skip)."""

    def __init__(self, plateau: ReduceLROnPlateau, monitor: str):
        self.plateau, self.monitor = plateau, monitor

    def after_epoch(self) -> None:
        t = self.trainer
        if t.metric is None:
            return
        before = t.lr
        self.plateau.step(t.metric)
        if t.lr < before:
            logger.info(
                "validation %s has not improved: learning rate x%.3g",
                self.monitor,
                self.plateau.factor,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"lr_policy": self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state["lr_policy"])


class ProgressLogger(HookBase):
    """A progress line every ``every`` steps (and at an epoch's last) with the epoch's ETA, and
    one per epoch with its numbers and the run's ETA; rank 0 only."""

    def __init__(self, every: int):
        self.every = every

    def after_step(self) -> None:
        t = self.trainer
        if not t.is_main or ((t.step + 1) % self.every and t.step + 1 != t.steps):
            return
        eta = (time.perf_counter() - t.epoch_start) / (t.step + 1) * (t.steps - t.step - 1)
        logger.info(
            "[%s] epoch %d/%d step %d/%d %s lr %.3g | epoch ETA %s",
            t.name,
            t.epoch + 1,
            t.max_epochs,
            t.step + 1,
            t.steps,
            t.step_text(),
            t.lr,
            fmt_seconds(eta),
        )

    def after_epoch(self) -> None:
        t = self.trainer
        if not t.is_main:
            return
        done = t.epoch + 1 - t.start_epoch
        eta = (time.perf_counter() - t.fit_start) / done * (t.max_epochs - t.epoch - 1)
        logger.info(
            "[%s] epoch %d/%d done in %s: %s%s | ETA %s",
            t.name,
            t.epoch + 1,
            t.max_epochs,
            fmt_seconds(t.row["epoch_seconds"]),
            t.epoch_text(),
            " (best)" if t.improved else "",
            fmt_seconds(eta),
        )
        if t.stop_reason:
            logger.info("[%s] %s", t.name, t.stop_reason)


class Validation(HookBase):
    """Validates when the trainer says it is due (its metric becomes ``trainer.metric``), then
    closes the epoch's timing (``epoch_seconds``: training and validation)."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.validation_due():
            t.metric = t.validate_epoch()
        t.row["epoch_seconds"] = time.perf_counter() - t.epoch_start


class BestState(HookBase):
    """Keeps the weights of the best epoch by ``trainer.metric`` (higher is better, by more than
    ``tolerance``) and writes them to ``path`` (``best.pt``) when one is given."""

    def __init__(self, tolerance: float, path: Path | None = None, config: Any = None):
        self.tolerance, self.path, self.config = tolerance, path, config
        self.best_metric, self.best_epoch = -math.inf, -1
        self.state: dict[str, torch.Tensor] | None = None

    def after_epoch(self) -> None:
        t = self.trainer
        if t.metric is None or not t.metric > self.best_metric + self.tolerance:
            return
        t.improved = True
        self.best_metric, self.best_epoch = float(t.metric), t.epoch + 1
        self.state = t.clone_state()
        if t.is_main and self.path is not None:
            payload = {
                "model": self.state,
                "config": self.config,
                "epoch": t.epoch,
                "metrics": t.row,
            }
            save_checkpoint(payload, self.path)

    def result(self) -> tuple[dict[str, torch.Tensor], int, float]:
        """``(weights, epoch, metric)`` of the best epoch; the last weights when no epoch was
        validated (metric ``nan``)."""
        metric = self.best_metric if math.isfinite(self.best_metric) else float("nan")
        if self.state is None:
            return self.trainer.clone_state(), len(self.trainer.history), metric
        return self.state, self.best_epoch, metric

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_metric, self.best_epoch = float(state["best_metric"]), int(state["best_epoch"])
        if self.path is not None and self.path.is_file():
            self.state = load_checkpoint(self.path)["model"]


class EarlyStopping(HookBase):
    """Stops after ``patience`` validations in a row without an improvement (``None``/0: never).
    Under torchrun every rank follows rank 0's decision."""

    def __init__(self, patience: int | None, monitor: str, best: BestState, device: Any = None):
        self.patience, self.monitor, self.best = patience, monitor, best
        self.device = device  # set under torchrun: the decision is broadcast from rank 0
        self.bad_epochs, self.stopped = 0, False

    def _due(self) -> bool:
        return bool(self.patience and self.bad_epochs >= self.patience)

    def before_train(self) -> None:  # a run resumed after it had decided to stop
        self.stopped = self.trainer.stop = self._due()

    def after_epoch(self) -> None:
        t = self.trainer
        if t.improved:
            self.bad_epochs = 0
        elif t.metric is not None:
            self.bad_epochs += 1
        stop = self._due() if self.device is None else broadcast_flag(self._due(), self.device)
        if stop:
            self.stopped = t.stop = True
            t.stop_reason = (
                f"early stopping: {self.monitor} has not improved for {self.bad_epochs} epochs "
                f"(best {self.best.best_metric:.4f} at epoch {self.best.best_epoch})"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad_epochs = int(state["bad_epochs"])


class Checkpointer(HookBase):
    """Writes ``trainer.checkpoint_state()`` to ``path`` (``last.pt``, atomically) after every
    epoch, on rank 0; a run killed at any moment resumes from the last completed epoch."""

    def __init__(self, path: Path | None):
        self.path = path

    def after_epoch(self) -> None:
        if self.trainer.is_main and self.path is not None:
            save_checkpoint(self.trainer.checkpoint_state(), self.path)


class DivergenceGuard(HookBase):
    """Stops with :class:`TrainingError` when an epoch's mean loss is over ``factor`` times the
    first epoch's; ``advice`` ends the message (what to change, where the last good state is)."""

    def __init__(self, factor: float, advice: Any):
        self.factor, self.advice = factor, advice
        self.first: float | None = None

    def before_train(self) -> None:
        history = self.trainer.history
        self.first = history[0]["train_loss"] if history else None

    def after_epoch(self) -> None:
        t = self.trainer
        loss = t.row["train_loss"]
        if self.first is None:
            self.first = loss
        elif loss > self.factor * self.first:
            raise TrainingError(
                f"[{t.name}] training diverged at epoch {t.epoch + 1}: mean loss {loss:.4g} "
                f"is over "
                f"{self.factor:g}x the first epoch's ({self.first:.4g}). {self.advice()}."
            )


class TimeBudget(HookBase):
    """Training laid over ``budget`` seconds instead of a number of epochs (as Ultralytics'
    ``time``): the time counted is the trainer's ``train_seconds`` (steps and validations; a
    resumed run keeps what its earlier part used).

    After ``probe`` steps and after every epoch, the run's length is re-estimated from the mean
    step time and the mean validation time (estimated by the trainer until one was timed):
    ``max_epochs`` follows it and ``set_total(optimizer steps)`` stretches the decay (cosine) to
    end at the budget. The run stops before a step that would end past the budget, keeping time
    for the final validation, so it ends at most one step after the limit and, when what is left
    does not fit another step (and, at an epoch's end, its validation), that much before it.
    Register it before the Validation hook: the epoch it stops in is then validated and saved as
    best/last.
    """

    def __init__(
        self,
        budget: float,
        set_total: Any = None,
        accumulate: int = 1,
        val_every: int = 1,
        probe: int = 5,
    ):
        self.budget, self.set_total, self.accumulate = budget, set_total, max(1, accumulate)
        self.val_every, self.probe = max(1, val_every), probe
        self.step_seconds: list[float] = []
        self.stopped = False
        self.spent_budget: float | None = None

    def before_train(self) -> None:
        t = self.trainer
        t.max_epochs = max(t.max_epochs, t.start_epoch + 1)  # a resumed run plans again
        spent = self.spent_budget is not None and self.budget <= self.spent_budget
        if t.history and (spent or t.train_seconds >= self.budget):
            self._stop("the time budget was used up before this resume")

    def state_dict(self) -> dict[str, Any]:
        return {"time_budget_spent": self.budget if self.stopped else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent_budget = state.get("time_budget_spent")  # a budget the run already reached

    def before_step(self) -> None:
        self.step_start = time.perf_counter()

    def after_step(self) -> None:
        t = self.trainer
        self.step_seconds.append(time.perf_counter() - self.step_start)
        if len(self.step_seconds) == self.probe:
            self._plan(done_in_epoch=t.step + 1)
        if t.train_seconds + self._step() + self._final_validation() > self.budget:
            self._stop(f"time budget reached after step {t.step + 1}/{t.steps}")

    def after_epoch(self) -> None:  # before Validation: a stop here still validates this epoch
        t = self.trainer
        if self.stopped:
            return
        self._plan(done_in_epoch=t.steps)
        upcoming = self._validation() if t.validation_due() else 0.0
        if (
            not self.stopped
            and t.train_seconds + upcoming + self._step() + self._final_validation() > self.budget
        ):
            self._stop("time budget reached at the end of the epoch")

    # ------------------------------------------------------------------ estimates
    def _step(self) -> float:
        """Mean step time, the first step (loader and kernel start-up) left out once others ran."""
        timed = self.step_seconds[1:] or self.step_seconds
        return sum(timed) / len(timed) if timed else 0.0

    def _validation(self) -> float:
        timed = [r["val_seconds"] for r in self.trainer.history if "val_seconds" in r]
        return timed[-1] if timed else self.trainer.validation_estimate(self._step())

    def _final_validation(self) -> float:
        return self._validation()

    def _plan(self, done_in_epoch: int) -> None:
        """``max_epochs`` and the schedule's length from the time left and the measured costs."""
        t = self.trainer
        per_epoch = t.steps * self._step() + self._validation() / self.val_every
        if per_epoch <= 0:
            return
        left = max(0.0, self.budget - t.train_seconds)
        total_epochs = t.epoch + done_in_epoch / max(1, t.steps) + left / per_epoch
        t.max_epochs = max(t.epoch + 1, math.ceil(total_epochs))
        if self.set_total is not None:
            self.set_total(max(1, round(total_epochs * math.ceil(t.steps / self.accumulate))))

    def _stop(self, why: str) -> None:
        t = self.trainer
        self.stopped = t.stop = True
        t.max_epochs = t.epoch + 1
        t.stop_reason = f"{why}: {fmt_seconds(t.train_seconds)} used of {fmt_seconds(self.budget)}"


class SignalStop(HookBase):
    """SIGINT/SIGTERM while training: the first signal asks for a stop at the next step
    boundary (or after the epoch's validation and checkpoint, when it arrives during them),
    which raises :class:`TrainingInterrupted` saying how to resume; a second stops at once.
    The previous handlers are restored when training ends. Off under torchrun."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, last_path: Path | None, enabled: bool = True):
        self.last_path, self.enabled = last_path, enabled
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def before_train(self) -> None:
        self.trainer.stop_signal = self
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return
        for sig in filter(None, (getattr(signal, name, None) for name in self.SIGNALS)):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # not allowed here (embedded interpreter...)
                pass

    def after_train(self) -> None:
        for sig, handler in self.previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError, TypeError):
                pass

    def before_step(self) -> None:
        if self.requested:
            raise self.interrupted(self.trainer.where, self.trainer.epoch)

    def after_epoch(self) -> None:
        t = self.trainer
        if self.requested and t.epoch + 1 < t.max_epochs:
            raise self.interrupted(f"after epoch {t.epoch + 1}/{t.max_epochs}", t.epoch + 1)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        self.signum = signum
        logger.warning(
            "[%s] %s received: stopping at the next safe point (send it again to stop at once)",
            self.trainer.name,
            signal.Signals(signum).name,
        )

    def interrupted(self, where: str, completed: int) -> TrainingInterrupted:
        """The exception (and log line) for a stop request; ``completed`` epochs are saved."""
        last, epochs = self.last_path, self.trainer.max_epochs
        if last is not None and last.is_file() and completed > 0:
            saved = (
                f"{last} holds epoch {completed}/{epochs}, the last completed one; run again with "
                f"training.resume: true to continue from epoch {completed + 1}"
            )
        elif last is None:
            saved = (
                "no checkpoint directory was set, so nothing was saved "
                "and the run cannot be resumed"
            )
        else:
            saved = (
                "no epoch was completed, so there is nothing to resume: "
                "the next run starts from scratch"
            )
        name = signal.Signals(self.signum).name if self.signum is not None else "a signal"
        msg = f"[{self.trainer.name}] training interrupted by {name} {where}: {saved}"
        logger.warning(msg)
        return TrainingInterrupted(msg)
