"""The training loop and its hooks, in the style of Detectron2's ``engine/train_loop.py``.

:class:`TrainerBase` runs epochs of steps and calls its hooks around them; a subclass says what
one step is (:meth:`~TrainerBase.run_step`: one batch forward, backward and optimizer step), what
an epoch's loader and summary are, and how to validate. Everything else (learning-rate stepping,
logging and ETA, validation, best and last checkpoints, early stopping, the divergence guard, the
stop on SIGINT/SIGTERM) is a :class:`HookBase` in :mod:`.hooks`, so detector training
(:mod:`.trainer`) and backbone pretraining (:mod:`..pretraining.classifier`) share one loop.

What the hooks share lives on the trainer: ``epoch`` and ``step`` (0-based), ``steps`` (in this
epoch), ``row`` (this epoch's history row, appended to ``history`` when the epoch ends and
filled in by the hooks), ``metric`` (this epoch's validation metric, ``None`` when it did not
validate), ``improved``, ``stop`` (set to end the loop after this epoch, or after this step when a
step hook sets it) and ``stop_reason``.
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Sequence
from typing import Any

import torch


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, divergence); the message says where and why."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM; ``last.pt`` holds the last completed epoch."""


class HookBase:
    """Code the loop calls at fixed points; ``self.trainer`` is set when it is registered.

    ``state_dict``/``load_state_dict``: what the hook keeps across an interruption (merged
    into ``last.pt`` under its own keys)."""

    trainer: TrainerBase

    def before_train(self) -> None: ...

    def after_train(self) -> None:
        """Called also when training fails or is interrupted."""

    def before_epoch(self) -> None: ...

    def after_epoch(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainerBase:
    """Epochs of steps with hooks. Subclasses set ``model`` (the module whose weights are kept),
    ``train_model`` (what a step calls: the model, or its DistributedDataParallel wrapper),
    ``optimizer``, ``max_epochs`` and ``name``, and define :meth:`run_step`, :meth:`epoch_data`
    and :meth:`epoch_row`."""

    name = "train"
    max_epochs = 1
    is_main = True  # rank 0 (or the only process): logs, validates and writes files
    model: torch.nn.Module
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self) -> None:
        self.hooks: list[HookBase] = []
        self.history: list[dict[str, Any]] = []
        self.start_epoch = self.epoch = self.step = self.steps = 0
        self.row: dict[str, Any] = {}
        self.metric: float | None = None
        self.improved = self.stop = self.optimizer_stepped = False
        self.stop_reason = ""
        self.prior_seconds = 0.0  # training time of the epochs before a resume
        self.stop_signal: Any = None  # set by the SignalStop hook: .requested, .interrupted()

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        for hook in hooks:
            if hook is not None:
                hook.trainer = weakref.proxy(self)  # no reference cycle
                self.hooks.append(hook)

    def train(self) -> None:
        """From ``start_epoch`` to ``max_epochs`` (a hook may change it), or until a hook sets
        ``stop``; set after a step, ``stop`` also ends the epoch there (``steps`` becomes the
        number of steps run)."""
        self.fit_start = time.perf_counter()
        try:
            self._call("before_train")
            for self.epoch in itertools.count(self.start_epoch):
                if self.stop or self.epoch >= self.max_epochs:
                    break
                self.before_epoch()
                for self.step in range(self.steps):
                    self._call("before_step")
                    self.run_step()
                    self._call("after_step")
                    if self.stop:
                        self.steps = self.step + 1
                        break
                self.after_epoch()
        finally:
            self._call("after_train")

    def _call(self, point: str) -> None:
        for hook in self.hooks:
            getattr(hook, point)()

    def before_epoch(self) -> None:
        self.epoch_start = time.perf_counter()
        self.row = {"epoch": self.epoch + 1}
        loader = self.epoch_data(self.epoch)
        self.steps, self._batches = len(loader), iter(loader)
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self._call("before_epoch")

    def after_epoch(self) -> None:
        self.row.update(self.epoch_row())
        self.row["lr"] = self.lr
        self.row["train_seconds"] = time.perf_counter() - self.epoch_start
        self.history.append(self.row)  # the hooks complete it
        self.metric, self.improved = None, False
        self._call("after_epoch")

    # ------------------------------------------------------------------ for subclasses
    def run_step(self) -> None:
        """One batch: ``next_batch()``, forward, backward, optimizer step (set
        ``optimizer_stepped`` when it stepped), running sums for :meth:`epoch_row`."""
        raise NotImplementedError

    def epoch_data(self, epoch: int) -> Any:
        """The training loader of ``epoch`` (anything with ``len`` and ``iter``)."""
        raise NotImplementedError

    def epoch_row(self) -> dict[str, Any]:
        """This epoch's training numbers for the history (``train_loss`` first)."""
        raise NotImplementedError

    def validation_due(self) -> bool:
        """Whether this epoch validates (see the Validation hook)."""
        return False

    def validation_estimate(self, step_seconds: float) -> float:
        """Seconds one validation should take, before one was timed (for the TimeBudget hook)."""
        return 0.0

    def validate_epoch(self) -> float | None:
        """Validate, add the numbers to ``row``, return the monitored metric."""
        return None

    def checkpoint_state(self) -> dict[str, Any]:
        """What ``last.pt`` holds (see the Checkpointer hook)."""
        raise NotImplementedError

    def step_text(self) -> str:
        """The running numbers on a step's progress line."""
        return ""

    def epoch_text(self) -> str:
        """The numbers on an epoch's progress line."""
        return ""

    # ------------------------------------------------------------------ helpers
    def next_batch(self) -> Any:
        try:
            return next(self._batches)
        except Exception:  # a loader worker killed by the same Ctrl-C: report the interruption
            if self.stop_signal is not None and self.stop_signal.requested:
                raise self.stop_signal.interrupted(self.where, self.epoch) from None
            raise

    @property
    def where(self) -> str:
        return (
            f"during epoch {self.epoch + 1}/{self.max_epochs}, after step {self.step}/{self.steps}"
        )

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def train_seconds(self) -> float:
        return self.prior_seconds + (time.perf_counter() - self.fit_start)

    def clone_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the model's weights."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def hook_states(self) -> dict[str, Any]:
        return {k: v for hook in self.hooks for k, v in hook.state_dict().items()}

    def load_hook_states(self, state: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.load_state_dict(state)
