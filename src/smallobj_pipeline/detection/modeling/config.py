"""Typed configuration: the model section (:class:`ModelConfig`) and the pydantic plumbing every
typed section of an experiment shares (:class:`ConfigSection`, :func:`parse_section`).

Every key is declared once, with its default and a one-line description (``Field(description=
...)``), as Detectron2's ``config/defaults.py`` does. Unknown keys are refused (``extra="forbid"``),
choices are ``Literal``, ranges ``Field(ge=..., le=...)``. Scalars are strict, as the hand-written
checks this replaces were: a bool is not an integer, a string is not a number. Counts and sizes
accept an integral float (``800.0``), lists accept tuples, and ``auto`` (any case) or ``null``
means "let the factory decide" wherever the description says so.

A :class:`pydantic.ValidationError` never reaches the user: :func:`parse_section` turns it into a
:class:`~smallobj_pipeline.detection.errors.ConfigError` naming each key by its path
(``model.anchor_sizes``, ``augmentation.crop.scale``) and, when given, the experiment.

:meth:`ModelConfig.resolved` replaces every ``auto`` by the value the factory uses (torchvision's
defaults or the rules in the descriptions) and checks the combinations pydantic cannot express
per key (frozen batch norm without pretrained weights, anchors per location...).
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError
from pydantic_core import PydanticCustomError

from .. import constants as K
from ..errors import ConfigError
from . import weights as W

AUTO = "auto"
FROZEN_BN_EPS = 1e-5
FROZEN_BN_EPS_COCO_V1 = 0.0  # torchvision's overwrite_eps(model, 0.0) for the legacy COCO v1 file

S = TypeVar("S", bound="ConfigSection")


# ---------------------------------------------------------------------- shared value types
def is_auto(value: Any) -> bool:
    """``None`` or the string ``auto`` (any case, surrounding spaces ignored)."""
    return value is None or (isinstance(value, str) and value.strip().lower() == AUTO)


def _auto_is_none(value: Any) -> Any:
    return None if is_auto(value) else value


def _integral(value: Any) -> Any:
    """An integral float (``800.0``) as an int; a bool is refused (``True == 1`` in Python)."""
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def none_is(default: Any) -> BeforeValidator:
    """``null`` stands for ``default``."""
    return BeforeValidator(lambda value: default if value is None else value)


Number = Annotated[float, Strict()]  # int or float; not a bool, not a string
Fraction = Annotated[float, Strict(), Field(ge=0.0, le=1.0)]
PositiveNumber = Annotated[float, Strict(), Field(gt=0.0)]
Integer = Annotated[int, BeforeValidator(_integral), Strict()]  # 800 or 800.0
PositiveInt = Annotated[Integer, Field(ge=1)]
AutoPositiveInt = Annotated[PositiveInt | None, BeforeValidator(_auto_is_none)]


# ---------------------------------------------------------------------- sections and errors
class ConfigSection(BaseModel):
    """One section of an experiment's config: unknown keys refused, every key described."""

    model_config = ConfigDict(extra="forbid")
    SECTION: ClassVar[str] = "config"

    @classmethod
    def field_names(cls) -> list[str]:
        return list(cls.model_fields)

    @classmethod
    def from_dict(cls: type[S], cfg: Mapping[str, Any] | None, experiment: str | None = None) -> S:
        return parse_section(cls, cfg, experiment=experiment)

    def to_dict(self) -> dict[str, Any]:
        """Plain values in declaration order (nested sections as dicts), deep-copied."""
        return {
            name: value.to_dict() if isinstance(value, ConfigSection) else copy.deepcopy(value)
            for name, value in ((n, getattr(self, n)) for n in type(self).model_fields)
        }


def parse_section(
    cls: type[S],
    data: Mapping[str, Any] | ConfigSection | None,
    section: str | None = None,
    experiment: str | None = None,
) -> S:
    """``data`` (a mapping; ``None`` is empty) as a ``cls``, or :class:`ConfigError` naming each
    bad key as ``section.key`` and, when given, the ``experiment``."""
    section = section or cls.SECTION
    if isinstance(data, cls):
        return data
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(
            _in_experiment(experiment)
            + f"{section} must be a mapping of {cls.field_names()}, got {type(data).__name__}"
        )
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        problems = describe_errors(exc, cls, section)
        raise ConfigError(_in_experiment(experiment) + "; ".join(problems)) from None


def _in_experiment(experiment: str | None) -> str:
    return f"experiment {experiment!r}: " if experiment else ""


class _Where(typing.NamedTuple):
    path: str  # section.key[index].key, as shown to the user
    key: str  # the same without list indices: one message per key
    owner: type[BaseModel]  # the section class the last key belongs to
    description: str | None  # that key's description
    inner: type[BaseModel] | None  # the section class of the value there, if it is one


def describe_errors(exc: ValidationError, cls: type[BaseModel], section: str) -> list[str]:
    """One message per mapping with unknown keys, listing the valid ones, then one per bad key
    in the words of the project's messages (``model.variant must be one of ['v1', 'v2'], got
    'v3'``), in the order pydantic found them."""
    unknown: dict[str, tuple[list[str], type[BaseModel]]] = {}
    per_key: dict[str, list[tuple[Mapping[str, Any], _Where]]] = {}
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            where = _walk(err["loc"][:-1], cls, section)
            unknown.setdefault(where.path, ([], where.inner or cls))[0].append(str(err["loc"][-1]))
        else:
            where = _walk(err["loc"], cls, section)
            per_key.setdefault(where.key, []).append((err, where))
    messages = [
        f"{path}: unknown key(s) {keys}; valid keys are {list(owner.model_fields)}"
        for path, (keys, owner) in unknown.items()
    ]
    return messages + [_message(errors) for errors in per_key.values()]


def _message(errors: list[tuple[Mapping[str, Any], _Where]]) -> str:
    """One key's errors as one sentence. A union reports one error per alternative: the deepest
    are those whose type the value matched; a constraint among them (too big, too short) is the
    problem, else the value matched no alternative's type and all are listed."""
    depth = max(len(err["loc"]) for err, _ in errors)
    deepest = [(err, where) for err, where in errors if len(err["loc"]) == depth]
    constraints = [(err, where) for err, where in deepest if err["type"] not in _TYPES]
    err, where = (constraints or deepest)[0]
    wanted = (
        _requirement(err)
        if constraints
        else " or ".join(dict.fromkeys(_requirement(e) for e, _ in deepest))
    )
    text = f"{where.path} must be {wanted}, got {err['input']!r}"
    return f"{text} [{where.description}]" if where.description else text


# what each pydantic error type asks for, in the words of the project's messages
_BOUNDS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}
_TYPES = {
    "int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
    "string_type": "a string", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "literal_error": None,
}  # fmt: skip


def _requirement(err: Mapping[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _BOUNDS:
        return f"{_BOUNDS[kind]} {next(iter(ctx.values()))}"
    if kind == "literal_error":
        return f"one of [{ctx['expected'].replace(' or ', ', ')}]"
    if kind in ("too_short", "too_long"):
        return err["msg"].replace("List should have", "a list of").replace(" after validation", "")
    if kind == "missing":
        return "present"
    return _TYPES.get(kind) or str(err["msg"]).removeprefix("Input should be ")


def _walk(loc: tuple[Any, ...], cls: type[BaseModel], section: str) -> _Where:
    """Where ``loc`` points, union alternatives' tags left out."""
    path = key = section
    owner, description = cls, None
    model: type[BaseModel] | None = cls
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
        elif model is not None and item in model.model_fields:
            info = model.model_fields[item]
            path, key = f"{path}.{item}", f"{key}.{item}"
            owner, description = model, info.description
            model = _nested_model(info.annotation)
    return _Where(path, key, owner, description, model)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------- model section
def _weights_path(value: Any) -> Any:
    return value if value is None else str(value)


def _weights_dir(value: Any) -> Any:
    if isinstance(value, str | Path):
        return [str(value)]
    if isinstance(value, list | tuple):
        return [str(d) for d in value]
    return value


SizesPerLevel = Annotated[
    list[PositiveNumber | Annotated[list[PositiveNumber], Field(min_length=1)]],
    Field(min_length=K.NUM_FEATURE_MAPS, max_length=K.NUM_FEATURE_MAPS),
]
RatiosPerLevel = Annotated[
    list[list[PositiveNumber]],
    Field(min_length=K.NUM_FEATURE_MAPS, max_length=K.NUM_FEATURE_MAPS),
]
SharedRatios = Annotated[list[PositiveNumber], Field(min_length=1)]

# the type of each kind of model setting
Variant = Literal[K.VARIANTS]  # type: ignore[valid-type]
Backbone = Literal[K.BACKBONES]  # type: ignore[valid-type]
Pretrained = Annotated[
    Literal["none", "backbone", "full"],
    BeforeValidator(lambda v: "none" if v in (None, False) else v),
]
WeightsPath = Annotated[str | None, BeforeValidator(_weights_path)]
WeightsDirs = Annotated[list[str] | None, BeforeValidator(_weights_dir)]
Channels = Annotated[Literal[1, 3], BeforeValidator(_integral)]
Norm = Annotated[
    Literal["auto", "frozen_bn", "bn", "gn"], BeforeValidator(lambda v: AUTO if v is None else v)
]
AutoEps = Annotated[Annotated[Number, Field(ge=0.0)] | None, BeforeValidator(_auto_is_none)]
TrainableLayers = Annotated[int, Strict(), Field(ge=0, le=5)] | None
Flag = Annotated[bool, Strict()]
AnchorSizes = Annotated[SizesPerLevel | None, BeforeValidator(_auto_is_none)]
AspectRatios = Annotated[SharedRatios | RatiosPerLevel | None, BeforeValidator(_auto_is_none)]
InputSize = Annotated[
    PositiveInt | Annotated[list[PositiveInt], Field(min_length=1)] | None,
    BeforeValidator(_auto_is_none),
]
PerChannel = Annotated[Number | list[Number] | None, BeforeValidator(_auto_is_none)]
PositivePerChannel = Annotated[
    PositiveNumber | list[PositiveNumber] | None, BeforeValidator(_auto_is_none)
]
HeadInit = Literal["default", "xavier", "normal"]
Task = Literal["auto", "detection", "instance_segmentation"]


class ModelConfig(ConfigSection):
    """Model settings (the ``model`` section). ``auto``/``None`` values are replaced by
    :meth:`resolved`; the resolved config is what ``model.smallobj_config`` holds.

    ``head_init``: ``default`` is torchvision's (RPN head N(0, 0.01), box head and predictor
    PyTorch's Linear init); ``xavier`` Xavier-uniform on RPN head, box head and predictor;
    ``normal`` Detectron's (RPN head and box classifier N(0, 0.01), box regressor N(0, 0.001),
    biases 0, He et al. 2018). Convolutions are Kaiming-initialised in every mode.
    """

    SECTION: ClassVar[str] = "model"

    # fmt: off
    task: Task = Field(AUTO, description=(
        "auto | detection | instance_segmentation (auto: masks when every object has one)"))
    variant: Variant = Field("v1", description="v1 | v2 (fasterrcnn_resnet50_fpn_v2-style heads)")
    backbone: Backbone = Field("resnet50", description="ResNet body under the FPN (layers 1-4)")
    pretrained: Pretrained = Field("none", description=(
        "none | backbone (ImageNet ResNet) | full (COCO detector, resnet50); local files only"))
    weights_path: WeightsPath = Field(None, description=(
        "weight file: a path, a bare name searched in weights_dir, or null/torchvision"))
    weights_dir: WeightsDirs = Field(None, description=(
        "folder(s) searched for bare weight names; null: data/06_models/backbones"))
    in_channels: Channels = Field(1, description="1 (conv1 replaced by a 1-channel conv) | 3")
    conv1_init: Literal["sum", "mean"] = Field("sum", description=(
        "1-channel conv1 from the pretrained RGB kernel: sum | mean over RGB"))
    train_conv1_when_adapted: Flag = Field(True, description=(
        "1 channel + pretrained: conv1 stays trainable whatever trainable_layers"))
    norm: Norm = Field(AUTO, description=(
        "auto | frozen_bn | bn | gn; auto: v1 pretrained frozen_bn, v2 pretrained bn, scratch gn"))
    frozen_bn_eps: AutoEps = Field(None, description=(
        "frozen BN's eps; auto/null: 0.0 for torchvision's COCO v1 file, else 1e-5"))
    trainable_layers: TrainableLayers = Field(None, description=(
        "0-5 (layer4, layer3, layer2, layer1, conv1+bn1); null: 3 pretrained, 5 not"))
    zero_init_residual: Flag = Field(False, description=(
        "from scratch: the last norm of each residual block starts at 0"))
    anchor_sizes: AnchorSizes = Field(None, description=(
        "5 sizes (one per FPN level) or 5 lists of sizes, px; auto/null: 32, 64, 128, 256, 512"))
    aspect_ratios: AspectRatios = Field(
        default_factory=lambda: list(K.TORCHVISION_ASPECT_RATIOS), description=(
            "height/width ratios shared by every level, or 5 lists; auto/null: 0.5, 1.0, 2.0"))
    min_size: InputSize = Field(None, description=(
        "short side of the resized input, or a list (random choice in training); auto/null: 800"))
    max_size: AutoPositiveInt = Field(None, description="cap on the long side; auto/null: 1333")
    image_mean: PerChannel = Field(None, description=(
        "per-channel mean, one value or a list; null: ImageNet's (3 channels) or 0.449 (1)"))
    image_std: PositivePerChannel = Field(None, description=(
        "per-channel std, one value or a list; null: ImageNet's (3 channels) or 0.226 (1)"))
    rpn_pre_nms_top_n_train: AutoPositiveInt = Field(None, description=(
        "proposals per level before NMS, training; auto: max(2000, rpn_post_nms_top_n_train)"))
    rpn_pre_nms_top_n_test: AutoPositiveInt = Field(None, description=(
        "proposals per level before NMS, inference; auto: max(1000, rpn_post_nms_top_n_test)"))
    rpn_post_nms_top_n_train: AutoPositiveInt = Field(None, description=(
        "proposals kept after NMS, training; auto: 2000"))
    rpn_post_nms_top_n_test: AutoPositiveInt = Field(None, description=(
        "proposals kept after NMS, inference; auto: 1000"))
    rpn_nms_thresh: Fraction = Field(0.7, description="IoU threshold of the RPN's NMS")
    rpn_fg_iou_thresh: Fraction = Field(0.7, description="anchor IoU making an RPN positive")
    rpn_bg_iou_thresh: Fraction = Field(0.3, description="anchor IoU below which an RPN negative")
    rpn_batch_size_per_image: PositiveInt = Field(256, description="anchors sampled per image")
    rpn_positive_fraction: Fraction = Field(0.5, description="share of positives among them")
    rpn_score_thresh: Fraction = Field(0.0, description="proposals below this objectness dropped")
    box_score_thresh: Fraction = Field(0.05, description="detections below this score dropped")
    box_nms_thresh: Fraction = Field(0.5, description="IoU threshold of the per-class NMS")
    box_detections_per_img: AutoPositiveInt = Field(None, description=(
        "detections kept per image; auto: 100"))
    box_fg_iou_thresh: Fraction = Field(0.5, description="proposal IoU making a box-head positive")
    box_bg_iou_thresh: Fraction = Field(0.5, description="proposal IoU below which a negative")
    box_batch_size_per_image: PositiveInt = Field(512, description="RoIs sampled per image")
    box_positive_fraction: Fraction = Field(0.25, description="share of positives among them")
    head_init: HeadInit = Field("default", description=(
        "default (torchvision's) | xavier | normal (Detectron's); see the class docstring"))
    mask_head_convs: Annotated[int, Strict(), Field(ge=1, le=8)] = Field(4, description=(
        "Mask R-CNN: 3x3 convs of the mask head (torchvision: 4); fewer is cheaper on CPU"))
    mask_head_dim: PositiveInt = Field(256, description=(
        "Mask R-CNN: channels of the mask head's convs and deconv (torchvision: 256)"))
    # fmt: on

    # ------------------------------------------------------------------ derived flags
    @property
    def with_masks(self) -> bool:
        """Mask R-CNN (instance segmentation) rather than Faster R-CNN."""
        return self.task == "instance_segmentation"

    @property
    def is_pretrained(self) -> bool:
        return self.pretrained != "none"

    @property
    def conv1_adapted(self) -> bool:
        """conv1 differs from the 3-channel one pretrained weights were made for."""
        return self.is_pretrained and self.in_channels != 3

    def uses_torchvision_coco_v1(self) -> bool:
        """The legacy COCO v1 file of torchvision (Faster or Mask R-CNN), whose frozen BN uses
        eps 0."""
        if self.pretrained != "full" or self.variant != "v1":
            return False
        spec = self.weights_path
        if spec is None or spec.strip().lower() in ("torchvision", "default", ""):
            return True
        return Path(spec).name == W.torchvision_weight_filename("full", "resnet50", "v1", self.task)

    # ------------------------------------------------------------------ resolution
    def resolved(self) -> ModelConfig:
        """A copy with every combination checked and every auto value replaced
        (:class:`ConfigError`)."""
        if self.pretrained == "full" and self.backbone != "resnet50":
            raise ConfigError(
                "pretrained 'full' (COCO Faster R-CNN weights) exists only for backbone resnet50 "
                f"(v1 and v2), not {self.backbone}: use pretrained 'backbone' (ImageNet weights "
                "for the ResNet) or 'none'"
            )
        norm = self._resolved_norm()
        eps = self.frozen_bn_eps
        if eps is None:
            eps = FROZEN_BN_EPS_COCO_V1 if self.uses_torchvision_coco_v1() else FROZEN_BN_EPS
        return self.model_copy(
            update={
                "task": "detection" if self.task == AUTO else self.task,
                "norm": norm,
                "frozen_bn_eps": float(eps),
                "trainable_layers": self._resolved_trainable_layers(),
                **self._resolved_anchors(),
                **self._resolved_input(),
                **self._resolved_proposals(),
            }
        )

    def _resolved_norm(self) -> str:
        norm = self.norm
        if norm == AUTO:
            if not self.is_pretrained:
                return "gn"  # He et al. 2018, "Rethinking ImageNet Pre-training": GN from scratch
            return "frozen_bn" if self.variant == "v1" else "bn"  # as torchvision's builders
        if norm == "frozen_bn" and not self.is_pretrained:
            raise ConfigError(
                "model.norm 'frozen_bn' with pretrained 'none' is meaningless: frozen batch norm "
                "keeps its statistics and affine parameters fixed, and without pretrained weights "
                "those are the random/identity initial values. Use norm 'gn' (recommended from "
                "scratch), 'bn', or 'auto'."
            )
        if norm == "gn" and self.is_pretrained:
            raise ConfigError(
                f"model.norm 'gn' with pretrained '{self.pretrained}': the pretrained weights were "
                "trained with batch norm, whose statistics GroupNorm cannot use. Use norm "
                "'frozen_bn', 'bn' or 'auto', or pretrained 'none' with gn."
            )
        return norm

    def _resolved_trainable_layers(self) -> int:
        if self.trainable_layers is None:
            return 3 if self.is_pretrained else 5
        if not self.is_pretrained and self.trainable_layers != 5:
            raise ConfigError(
                f"model.trainable_layers {self.trainable_layers} with pretrained 'none' would "
                "freeze randomly initialised layers: set trainable_layers to 5 or null, or use "
                "pretrained weights"
            )
        return self.trainable_layers

    def _resolved_anchors(self) -> dict[str, Any]:
        if self.anchor_sizes is None:
            sizes = [[size] for size in K.TORCHVISION_ANCHOR_SIZES]
        else:
            sizes = [
                [_plain(s) for s in level] if isinstance(level, list) else [_plain(level)]
                for level in self.anchor_sizes
            ]
        if self.aspect_ratios is None:
            ratios: list = list(K.TORCHVISION_ASPECT_RATIOS)
        elif isinstance(self.aspect_ratios[0], list):
            ratios = [[_plain(r) for r in level] for level in self.aspect_ratios]
        else:
            ratios = [_plain(r) for r in self.aspect_ratios]
        per_location = {
            len(s) * len(r) for s, r in zip(sizes, ratios_per_level(ratios), strict=True)
        }
        if len(per_location) != 1:
            raise ConfigError(
                "model.anchor_sizes / aspect_ratios give a different number of anchors per "
                f"location on different FPN levels ({sorted(per_location)}); the shared RPN head "
                "needs the same number"
            )
        return {"anchor_sizes": sizes, "aspect_ratios": ratios}

    def _resolved_input(self) -> dict[str, Any]:
        min_size = K.TORCHVISION_MIN_SIZE if self.min_size is None else self.min_size
        return {
            "min_size": list(min_size) if isinstance(min_size, list) else min_size,
            "max_size": K.TORCHVISION_MAX_SIZE if self.max_size is None else self.max_size,
            "image_mean": self._per_channel(
                "image_mean", self.image_mean, K.IMAGENET_MEAN, K.IMAGENET_GRAY_MEAN
            ),
            "image_std": self._per_channel(
                "image_std", self.image_std, K.IMAGENET_STD, K.IMAGENET_GRAY_STD
            ),
        }

    def _per_channel(
        self, name: str, value: Any, rgb: tuple[float, ...], gray: float
    ) -> list[float]:
        channels = self.in_channels
        if value is None:
            return list(rgb) if channels == 3 else [gray]
        values = [float(v) for v in (value if isinstance(value, list) else [value])]
        if len(values) == 1 and channels == 3:
            values = values * 3
        if len(values) != channels:
            raise ConfigError(
                f"model.{name} needs {channels} value(s) for in_channels {channels}, got {values}"
            )
        return values

    def _resolved_proposals(self) -> dict[str, int]:
        post_train = _or(self.rpn_post_nms_top_n_train, K.TORCHVISION_RPN_POST_NMS["train"])
        post_test = _or(self.rpn_post_nms_top_n_test, K.TORCHVISION_RPN_POST_NMS["test"])
        pre_train = max(K.TORCHVISION_RPN_PRE_NMS["train"], post_train)
        pre_test = max(K.TORCHVISION_RPN_PRE_NMS["test"], post_test)
        return {
            "rpn_post_nms_top_n_train": post_train,
            "rpn_post_nms_top_n_test": post_test,
            "rpn_pre_nms_top_n_train": _or(self.rpn_pre_nms_top_n_train, pre_train),
            "rpn_pre_nms_top_n_test": _or(self.rpn_pre_nms_top_n_test, pre_test),
            "box_detections_per_img": _or(
                self.box_detections_per_img, K.TORCHVISION_DETECTIONS_PER_IMG
            ),
        }


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _plain(value: float) -> float | int:
    """An integral size or ratio as an int (``8.0`` -> ``8``), as the resolved config writes it."""
    return int(value) if float(value).is_integer() else float(value)


def ratios_per_level(ratios: list) -> list[list]:
    """Aspect ratios of each FPN level: per-level lists as they are, shared ratios repeated."""
    return ratios if isinstance(ratios[0], list) else [ratios] * K.NUM_FEATURE_MAPS
