"""The training settings (an experiment's ``training:`` section), each declared once with its
default and a one-line comment, checked by pydantic.

:class:`SettingsModel` is the base of every settings section read from the parameters files
(this one and ``pretrain:``): unknown keys are refused, and pydantic's errors become the
project's :class:`ConfigError` with a message naming the section and the key
(``training.lr must be > 0, got 0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError

Schedule = Literal["none", "step", "multistep", "cosine", "plateau"]

# what each pydantic error type requires, in the words of the project's messages
_BOUNDS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}
_TYPES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "none_required": "null",
}


def _requirement(error: Mapping[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _BOUNDS:
        return f"{_BOUNDS[kind]} {next(iter(ctx.values()))}"
    if kind == "literal_error":
        return f"one of [{ctx['expected'].replace(' or ', ', ')}]"
    if kind in _TYPES:
        return _TYPES[kind]
    return str(error["msg"]).removeprefix("Input should be ")


def config_error(exc: ValidationError, model: type[SettingsModel]) -> ConfigError:
    """The first problem of ``exc`` as one message naming ``model.SECTION`` and the key."""
    errors = exc.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return ConfigError(model.unknown_message(unknown))
    first = errors[0]
    if first["type"] == "value_error":  # a validator's own message, which names the key
        return ConfigError(str(first["ctx"]["error"]))
    key = first["loc"][0]
    alternatives = [e for e in errors if e["loc"][:1] == (key,)]  # a union's branches
    wanted = " or ".join(dict.fromkeys(_requirement(e) for e in alternatives))
    return ConfigError(f"{model.SECTION}.{key} must be {wanted}, got {first['input']!r}")


class SettingsModel(BaseModel):
    """A settings section: unknown keys refused, errors as :class:`ConfigError`."""

    model_config = ConfigDict(extra="forbid")
    SECTION: ClassVar[str] = "settings"

    @classmethod
    def unknown_message(cls, unknown: list[str]) -> str:
        return (
            f"{cls.SECTION}: unknown setting(s) {unknown}; valid settings: {list(cls.model_fields)}"
        )

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None):
        """The section from a parameters mapping (``None``: every default)."""
        try:
            return cls.model_validate(dict(cfg or {}))
        except ValidationError as exc:
            raise config_error(exc, cls) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


NonNegativeInt = Annotated[int, Field(ge=0)]


class TrainConfig(SettingsModel):
    """Every knob of the training loop (``training:`` of an experiment)."""

    SECTION: ClassVar[str] = "training"

    epochs: int = Field(10, ge=1)  # passes over the training split
    batch_size: int = Field(4, ge=1)  # images per step (per process under torchrun)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # constants.OPTIMIZERS
    lr: float = Field(0.01, gt=0)  # base learning rate (the heads'; see backbone_lr_mult)
    momentum: float = Field(0.9, ge=0)  # SGD momentum
    weight_decay: float = Field(1e-4, ge=0)  # L2 penalty of SGD, decoupled decay of AdamW
    backbone_lr_mult: float = Field(1.0, ge=0)  # < 1 gives the (pretrained) backbone a lower lr
    warmup_iters: int = Field(50, ge=0)  # linear warm-up over this many optimizer steps
    warmup_factor: float = Field(0.001, gt=0, le=1)  # the warm-up starts at this fraction of lr
    schedule: Schedule = "cosine"  # learning-rate decay after (and during) the warm-up
    step_size: int = 10  # epochs, for "step"
    milestones: list[int] = [8, 11]  # epochs, for "multistep"
    gamma: float = Field(0.1, gt=0, le=1)  # decay factor for step / multistep / plateau
    plateau_patience: int = Field(3, ge=0)  # validations without gain before "plateau" decays
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine floor, as a fraction of lr
    grad_clip_norm: float | None = Field(None, ge=0)  # clip the gradient norm (null/0: never)
    accumulate_steps: int = Field(1, ge=1)  # batches per optimizer step
    early_stopping_patience: NonNegativeInt | None = None  # epochs without gain (null/0: off)
    monitor: str = "map_50"  # validation metric for best.pt, early stopping and plateau
    val_every: int = Field(1, ge=1)  # validate every N epochs (and after the last one)
    val_loss: bool = True  # also compute the detection losses on the validation split
    score_threshold: float = Field(0.5, ge=0, le=1)  # detections kept by the IoU/precision metrics
    amp: bool = True  # mixed precision (CUDA only)
    cudnn_benchmark: bool = True  # cuDNN autotuner (CUDA only)
    channels_last: bool = True  # NHWC convolutions (oneDNN on CPU, tensor cores with AMP on CUDA)
    fused_optimizer: bool = True  # one fused kernel for the SGD/AdamW update where torch has it
    num_workers: Literal["auto"] | NonNegativeInt = "auto"  # "auto": 0 on CPU, min(4, cpus) on CUDA
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    seed: int = 42  # model initialisation, sampling and augmentation
    deterministic: bool = True  # deterministic algorithms on CPU
    resume: bool = False  # continue from last.pt when it exists
    log_every: int = Field(10, ge=1)  # steps between progress lines
    divergence_factor: float = Field(20.0, gt=0)  # epoch loss above this x the first one's: error
    sync_bn: bool = False  # SyncBatchNorm under torchrun

    @classmethod
    def unknown_message(cls, unknown: list[str]) -> str:
        return f"unknown training setting(s) {unknown}; valid settings: {sorted(cls.model_fields)}"
