"""The training settings (an experiment's ``training:`` section), each declared once with its
default and a one-line description, checked by pydantic through the project's typed-section
plumbing (:mod:`..modeling.config`: strict scalars, ``Literal`` choices, ``Field`` ranges,
errors as :class:`ConfigError` naming ``training.<key>``).

:func:`parse_settings` is how a flat settings section (this one, ``pretrain:``) is read: unknown
keys are refused first, in the message users know (``unknown training setting(s) [...]; valid
settings: [...]``), and a validator's own message (which names the key) is passed on as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .. import constants as K
from ..errors import ConfigError
from ..modeling.config import (
    ConfigSection,
    Flag,
    Fraction,
    Integer,
    Number,
    PositiveInt,
    PositiveNumber,
    describe_errors,
)

S = TypeVar("S", bound=ConfigSection)

NonNegativeInt = Annotated[Integer, Field(ge=0)]
NonNegative = Annotated[Number, Field(ge=0.0)]
Optimizer = Literal[K.OPTIMIZERS]  # type: ignore[valid-type]
Schedule = Literal["none", "step", "multistep", "cosine", "plateau"]

ENDPOINT_RE = re.compile(r"^[^\s:]+:\d+$")
DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a text such as ``"90"``, ``"90s"``, ``"20m"``, ``"1.5h"`` or
    ``"1h30m"``; ``None`` stays ``None``; anything else is left to the type check."""
    if not isinstance(value, str):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = DURATION_RE.match(value.strip().lower().replace(" ", ""))
    if not value.strip() or match is None:
        raise PydanticCustomError(
            "duration", "Input should be seconds or a duration such as '90s', '20m', '1h30m'"
        )
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600.0 + m * 60.0 + s


Duration = Annotated[PositiveNumber, BeforeValidator(parse_duration)]


def parse_settings(
    cls: type[S],
    cfg: Mapping[str, Any] | None,
    unknown_message: Callable[[list[str]], str],
    experiment: str | None = None,
) -> S:
    """``cfg`` as a ``cls`` or :class:`ConfigError` (prefixed with the ``experiment``, if given)."""
    prefix = f"experiment {experiment!r}: " if experiment else ""
    data = dict(cfg or {})
    unknown = sorted(set(data) - set(cls.model_fields))
    if unknown:
        raise ConfigError(prefix + unknown_message(unknown))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        own = [str(e["ctx"]["error"]) for e in exc.errors() if e["type"] == "value_error"]
        problems = own or describe_errors(exc, cls, cls.SECTION)
        raise ConfigError(prefix + "; ".join(problems)) from None


class TrainConfig(ConfigSection):
    """Every knob of the training loop (the ``training`` section of an experiment)."""

    SECTION: ClassVar[str] = "training"

    # fmt: off
    epochs: PositiveInt = Field(10, description=(
        "passes over the training split (ignored when time_budget is set)"))
    time_budget: Duration | None = Field(None, description=(
        "train for this long (seconds, or '20m', '1h30m'; validation included), the LR schedule "
        "laid over it; null: train for epochs"))
    batch_size: PositiveInt = Field(4, description="images per step, per process when several")
    optimizer: Optimizer = Field("sgd", description="sgd | adamw")
    lr: PositiveNumber = Field(0.01, description="base learning rate (the heads')")
    momentum: NonNegative = Field(0.9, description="SGD momentum")
    weight_decay: NonNegative = Field(1e-4, description="L2 penalty (SGD), decoupled decay (AdamW)")
    backbone_lr_mult: NonNegative = Field(1.0, description=(
        "the backbone body's learning rate is lr x this (< 1: a gentler pretrained backbone)"))
    warmup_iters: NonNegativeInt = Field(50, description="linear warm-up, in optimizer steps")
    warmup_factor: PositiveNumber = Field(0.001, le=1.0, description=(
        "the warm-up starts at this fraction of lr"))
    schedule: Schedule = Field("cosine", description=(
        "decay over the whole run, warm-up included: none | step | multistep | cosine | plateau"))
    step_size: Integer = Field(10, description="epochs between decays, for step")
    milestones: list[Integer] = Field([8, 11], description="epochs of the decays, for multistep")
    gamma: PositiveNumber = Field(0.1, le=1.0, description=(
        "decay factor for step / multistep / plateau"))
    plateau_patience: NonNegativeInt = Field(3, description=(
        "validations without improvement before plateau decays"))
    min_lr_ratio: Fraction = Field(0.0, description="cosine floor, as a fraction of lr")
    grad_clip_norm: NonNegative | None = Field(None, description=(
        "gradient norm clipped to this (null or 0: no clipping)"))
    accumulate_steps: PositiveInt = Field(1, description="batches per optimizer step")
    early_stopping_patience: NonNegativeInt | None = Field(None, description=(
        "stop after this many validations without improvement (null or 0: never)"))
    monitor: str = Field("map_50", description=(
        "validation metric for best.pt, early stopping and plateau (higher is better)"))
    val_every: PositiveInt = Field(1, description="validate every N epochs (and after the last)")
    val_loss: Flag = Field(True, description="also the detection losses on the validation split")
    score_threshold: Fraction = Field(0.5, description=(
        "detections kept by the validation's IoU, precision and recall"))
    amp: Flag = Field(True, description="mixed precision (CUDA only)")
    cudnn_benchmark: Flag = Field(True, description="cuDNN autotuner (CUDA only)")
    channels_last: Flag = Field(True, description=(
        "NHWC convolutions (oneDNN on CPU, tensor cores with AMP on CUDA)"))
    fused_optimizer: Flag = Field(True, description=(
        "one fused kernel for the SGD/AdamW update where torch has it"))
    num_workers: Literal["auto"] | NonNegativeInt = Field("auto", description=(
        "loader processes; auto: 0 on CPU, min(4, cpus) on CUDA"))
    device: str = Field("auto", description=(
        "auto (free GPUs claimed, else CPU) | cpu | cuda | cuda:N"))
    devices: Literal["auto"] | PositiveInt = Field("auto", description=(
        "processes on this machine: auto = every visible GPU, 1 on CPU (N on CPU: N gloo, tests)"))
    nnodes: PositiveInt = Field(1, description="machines training this experiment together")
    node_rank: NonNegativeInt = Field(0, description=(
        "this machine's rank, 0 .. nnodes-1 (node 0 holds rank 0, which writes the files)"))
    rdzv_endpoint: str | None = Field(None, description=(
        "host:port on node 0 that every node connects to (nnodes > 1)"))
    seed: Integer = Field(42, description="initialisation, sampling and augmentation")
    deterministic: Flag = Field(True, description="deterministic algorithms on CPU")
    resume: Flag = Field(False, description="continue from last.pt when it exists")
    log_every: PositiveInt = Field(10, description="steps between progress lines")
    divergence_factor: PositiveNumber = Field(20.0, description=(
        "an epoch's mean loss over this x the first epoch's stops the run"))
    sync_bn: Flag = Field(False, description="SyncBatchNorm when several processes train")
    # fmt: on

    @model_validator(mode="after")
    def _nodes(self) -> TrainConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(
                f"training.node_rank must be below training.nnodes ({self.nnodes}), "
                f"got {self.node_rank}"
            )
        if self.nnodes > 1 and not ENDPOINT_RE.match(self.rdzv_endpoint or ""):
            raise ValueError(
                "training.rdzv_endpoint must be host:port (node 0's address, the same on every "
                f"node) when training.nnodes is {self.nnodes}, got {self.rdzv_endpoint!r}"
            )
        return self

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None, experiment: str | None = None) -> TrainConfig:
        return parse_settings(cls, cfg, cls.unknown_message, experiment)

    @classmethod
    def unknown_message(cls, unknown: list[str]) -> str:
        valid = sorted(cls.model_fields)
        return f"unknown training setting(s) {unknown}; valid settings: {valid}"
