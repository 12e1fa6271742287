"""One experiment end to end, as library calls: resolve its config, train it, evaluate it.

An experiment is a named set of overrides of shared defaults (see
``conf/base/parameters_experiments.yml``). Its resolved config is a plain dict with sections
``model``, ``training``, ``augmentation``, ``small_object_defaults``, ``evaluation``,
``intensity`` (how pixels are scaled, from the dataset statistics, see :mod:`.intensity`) and
``derived`` (what the small-object defaults and ``in_channels: auto`` filled in, and why).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from ..data.augment import AugmentationConfig, build_transform
from ..data.coco import CocoDataset
from ..data.dataset import DetectionDataset
from ..data.intensity import FIXED, Intensity, choose_in_channels
from ..errors import ConfigError, DatasetError, WeightsError
from ..evaluation.inference import predict_dataset
from ..evaluation.metrics import evaluate_detections
from ..evaluation.sliced import SliceConfig
from ..modeling.anchors import SmallObjectSwitches, resolve_small_object_defaults
from ..modeling.config import (
    ConfigSection,
    Fraction,
    ModelConfig,
    PositiveInt,
    is_auto,
    parse_section,
)
from ..modeling.factory import build_model, count_parameters
from ..modeling.weights import resolve_weight_file
from .elastic import launch_training
from .runtime import evaluation_device, place_training
from .trainer import TrainConfig, Trainer, TrainResult, seed_everything

logger = logging.getLogger(__name__)

SECTIONS = (
    "model",
    "training",
    "augmentation",
    "small_object_defaults",
    "evaluation",
    "description",
    "skip_if_weights_missing",
)
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# the numbers of the model file that the evaluation's metrics repeat, in this order
MODEL_FILE_METRICS = (
    "params_total",
    "params_trainable",
    "best_epoch",
    "epochs_run",
    "train_seconds",
    "seconds_per_epoch",
    "stopped_by",
    "time_budget",
)


class EvaluationConfig(ConfigSection):
    """The ``evaluation`` section: how the test split is predicted and scored."""

    SECTION: ClassVar[str] = "evaluation"

    score_threshold: Fraction = Field(
        0.5, description="detections kept by the IoU, precision and recall metrics"
    )
    batch_size: PositiveInt = Field(1, description="test images per inference batch")
    slicing: SliceConfig | None = Field(
        None, description="val/test images predicted tile by tile (set when training is tiled)"
    )


@dataclass(frozen=True)
class Experiment:
    """A resolved experiment config, parsed: one typed section each (:func:`parse_experiment`)."""

    name: str
    model: ModelConfig  # resolved: every auto replaced by the value the factory uses
    training: TrainConfig
    augmentation: AugmentationConfig
    small_object_defaults: SmallObjectSwitches
    evaluation: EvaluationConfig
    intensity: dict[str, Any] | None  # how pixels are scaled (data.intensity), None: fixed


@contextmanager
def experiment_errors(name: str) -> Iterator[None]:
    """A :class:`ConfigError` raised inside names the experiment ``name``."""
    prefix = f"experiment {name!r}: "
    try:
        yield
    except ConfigError as exc:
        if str(exc).startswith(prefix):
            raise
        raise ConfigError(prefix + str(exc)) from None


def parse_experiment(cfg: Mapping[str, Any], name: str | None = None) -> Experiment:
    """Every section of an experiment's config checked and typed (:class:`ConfigError` naming
    the key and the experiment). ``cfg`` is what :func:`resolve_experiment` returns (and
    ``config.json`` holds)."""
    name = name or str(cfg.get("name") or "experiment")
    with experiment_errors(name):
        return Experiment(
            name=name,
            model=parse_section(ModelConfig, cfg.get("model")).resolved(),
            training=TrainConfig.from_dict(cfg.get("training")),
            augmentation=parse_section(AugmentationConfig, cfg.get("augmentation")),
            small_object_defaults=parse_section(
                SmallObjectSwitches, cfg.get("small_object_defaults")
            ),
            evaluation=parse_section(EvaluationConfig, cfg.get("evaluation")),
            intensity=cfg.get("intensity"),
        )


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Recursive dict merge: ``override`` wins; nested dicts merge; lists and scalars replace."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def model_intensity(model_file: dict[str, Any]) -> Intensity:
    """How a model file's training scaled pixels (``fixed``, ``v / 257``, for files written
    before intensity modes existed)."""
    spec = model_file.get("intensity")
    return Intensity.from_dict(spec) if spec is not None else FIXED


def check_experiment_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"experiment name {name!r} is not valid: use letters, digits and underscores, starting "
            "with a letter (it becomes a Kedro namespace and a folder name)"
        )
    return name


def resolve_experiment(
    name: str,
    defaults: dict[str, Any],
    overrides: dict[str, Any] | None,
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge ``overrides`` onto ``defaults``, check every section (:func:`parse_experiment`,
    before the data pipeline's work is spent) and fill the small-object defaults and
    ``in_channels: auto`` from ``stats``. Returns the resolved config as plain data (what
    ``config.json`` holds): the sections as declared, plus ``derived`` (what was filled in, and
    why), ``intensity`` and ``name``."""
    check_experiment_name(name)
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"experiment {name!r}: unknown section(s) {unknown}; valid sections: {list(SECTIONS)}"
        )
    cfg = deep_merge(defaults, overrides)
    for section in ("model", "training", "augmentation", "small_object_defaults", "evaluation"):
        cfg.setdefault(section, {})
    stats = stats or {}
    model_in = dict(cfg["model"])
    channels_note = _auto_in_channels(name, model_in, stats)
    task_note = _auto_task(name, model_in, stats)
    parse_experiment({**cfg, "model": model_in}, name)
    model_cfg, derived = resolve_small_object_defaults(
        model_in, stats, cfg["small_object_defaults"]
    )
    if channels_note:
        derived["in_channels"] = channels_note
    if task_note:
        derived["task"] = task_note
    cfg["model"] = model_cfg
    _slicing_from_tiling(cfg, derived, stats.get("tiling"))
    cfg["derived"] = derived
    cfg["intensity"] = (stats.get("intensity") or {}).get("spec")
    cfg["name"] = name
    if derived:
        logger.info("[%s] small-object defaults: %s", name, derived)
    return cfg


def _slicing_from_tiling(
    cfg: dict[str, Any], derived: dict[str, Any], tiling: Mapping[str, Any] | None
) -> None:
    """A tiled training split: validation and test images are predicted whole, tile by tile on
    the training grid (unless the experiment sets ``evaluation.slicing`` itself)."""
    if not (tiling and tiling.get("tiled")) or cfg["evaluation"].get("slicing") is not None:
        return
    tile, overlap = int(tiling["tile_size"]), int(tiling["overlap_px"])
    cfg["evaluation"]["slicing"] = {
        "enabled": True, "tile_size": tile, "overlap": overlap, "include_full_image": False,
    }  # fmt: skip
    derived["evaluation.slicing"] = {
        "value": cfg["evaluation"]["slicing"],
        "why": (
            f"the training split is tiled ({tiling.get('reason')}): validation and test images "
            f"are predicted whole, in {tile} px tiles overlapping by {overlap} px, merged"
        ),
    }


def _auto_task(name: str, model: dict[str, Any], stats: Mapping[str, Any]) -> dict[str, Any] | None:
    """Set ``model["task"]`` when it is ``auto`` (or unset): instance segmentation when every
    non-crowd object (of every split: training validates and is scored on masks) has a
    segmentation, else detection; returns the note for ``derived``. An explicit
    ``instance_segmentation`` on objects without masks is refused here, before training."""
    masks = stats.get("masks") or {}
    objects, with_mask = int(masks.get("objects", 0)), int(masks.get("with_mask", 0))
    missing = list(masks.get("without_mask_ids") or [])
    ids = f" (annotation ids {missing}{', ...' if objects - with_mask > len(missing) else ''})"
    if model.get("task") == "instance_segmentation" and with_mask < objects:
        raise ConfigError(
            f"experiment {name!r}: model.task instance_segmentation needs a segmentation for "
            f"every object, but {objects - with_mask} of {objects} objects have none"
            f"{ids if missing else ''}; add their masks, or set model.task: detection (or auto)"
        )
    if not is_auto(model.get("task", "auto")):
        return None
    if objects and with_mask == objects:
        model["task"] = "instance_segmentation"
        reason = f"every one of the {objects} objects has a segmentation (Mask R-CNN)"
    else:
        model["task"] = "detection"
        reason = (
            f"{with_mask} of {objects} objects have a segmentation{ids if missing else ''}: "
            "boxes only (Faster R-CNN); set model.task: instance_segmentation to require masks"
            if with_mask
            else "the annotations have no segmentation: boxes only (Faster R-CNN)"
        )
    logger.info("[%s] model.task auto: %s", name, reason)
    return {"value": model["task"], "why": reason}


def _auto_in_channels(
    name: str, model: dict[str, Any], stats: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Set ``model["in_channels"]`` when it is ``auto`` (or unset) from the training images'
    channels; returns the note for ``derived``."""
    if not is_auto(model.get("in_channels", "auto")):
        return None
    channels = (stats.get("intensity") or {}).get("channels")
    model["in_channels"], reason = choose_in_channels(channels)
    logger.info("[%s] model.in_channels auto: %s", name, reason)
    return {"value": model["in_channels"], "why": reason}


def missing_weights(
    name: str, defaults: dict[str, Any] | None, overrides: dict[str, Any] | None
) -> str | None:
    """Why experiment ``name`` should be skipped for a missing weight file, or ``None``.

    ``skip_if_weights_missing`` (an experiment's top-level key): ``true`` skips the experiment
    when its pretrained file (``backbone`` or ``full``) cannot be found locally, ``false`` never
    skips (the run stops with the missing-file error). Unset (or ``auto``): ``full`` experiments
    are skipped (torchvision's COCO detector files cannot be made offline), ``backbone`` ones are
    not (an in-project backbone is made by the ``pretrain_backbone`` pipeline). The reason names
    the missing file and the folder it is looked up in. An invalid config is not judged here
    (the run reports it).
    """
    overrides = overrides or {}
    model = deep_merge((defaults or {}).get("model") or {}, overrides.get("model") or {})
    pretrained = model.get("pretrained")
    pretrained = "none" if pretrained in (None, False) else str(pretrained)
    if pretrained not in ("backbone", "full"):
        return None
    skip = overrides.get("skip_if_weights_missing", "auto")
    if skip is None or (isinstance(skip, str) and skip.strip().lower() == "auto"):
        skip = pretrained == "full"
    if not isinstance(skip, bool):
        raise ConfigError(
            f"experiment {name!r}: skip_if_weights_missing must be true, false or auto, "
            f"got {skip!r}"
        )
    if not skip:
        return None
    try:
        resolve_weight_file(
            model.get("weights_path"),
            pretrained,
            str(model.get("backbone", "resnet50")),
            variant=str(model.get("variant", "v1")),
            search_dirs=model.get("weights_dir"),
        )
    except WeightsError as exc:
        return str(exc)
    except ConfigError:
        return None
    return None


def _split_ids(coco: CocoDataset, split: str) -> list[int]:
    ids = coco.splits.get(split)
    if not ids:
        raise DatasetError(
            f"{coco.root}: the '{split}' split is empty or missing (splits: {sorted(coco.splits)})"
        )
    return ids


def build_datasets(coco: CocoDataset, exp: Experiment) -> tuple[DetectionDataset, DetectionDataset]:
    """The training split (augmented) and the validation split of ``coco``."""
    in_channels, masks = exp.model.in_channels, exp.model.with_masks
    transform = build_transform(exp.augmentation, train=True)
    train_set = DetectionDataset(
        coco, _split_ids(coco, "train"), in_channels, transform, exp.intensity, masks=masks
    )
    val_ids = coco.splits.get("val", [])
    val_set = DetectionDataset(coco, val_ids, in_channels, None, exp.intensity, masks=masks)
    return train_set, val_set


def train_experiment(
    coco: CocoDataset, cfg: dict[str, Any], checkpoint_dir: str | Path | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one experiment (``cfg`` as :func:`resolve_experiment` returns it). Returns
    ``(model_file, history)``.

    ``model_file`` holds the best epoch's weights, the resolved config that rebuilds the model,
    the label -> category id mapping and the run's summary numbers. Several processes (every
    GPU, ``training.devices``; several machines, ``training.nnodes``) are launched from here.
    """
    exp = parse_experiment(cfg)
    placement = place_training(exp.training)  # claims free GPUs for device: auto
    if placement.launch:
        return launch_training(coco, cfg, checkpoint_dir, placement)
    exp = dataclasses.replace(exp, training=placement.training)
    # new layers are initialised from the global RNG: seed it so the run does not depend on what
    # else ran in this process before (other experiments, other nodes)
    seed_everything(exp.training.seed, exp.training.deterministic)
    model = build_model(exp.model, num_classes=coco.num_classes)
    counts = count_parameters(model)
    logger.info(
        "[%s] %s %s R-CNN %s, pretrained=%s: %.2f M parameters (%.2f M trainable)",
        exp.name, exp.model.backbone, "Mask" if exp.model.with_masks else "Faster",
        exp.model.variant, exp.model.pretrained,
        counts["total"] / 1e6, counts["trainable"] / 1e6,
    )  # fmt: skip
    train_set, val_set = build_datasets(coco, exp)
    model_config = dict(model.smallobj_config)
    trainer = Trainer(
        model, train_set, val_set, exp.training, checkpoint_dir,
        model_config=model_config, name=exp.name, slicing=exp.evaluation.slicing,
    )  # fmt: skip
    result = trainer.fit()
    model_file = {
        "model": result.best_state,
        "model_config": model_config,
        "intensity": Intensity.from_dict(exp.intensity).to_dict(),
        "experiment": cfg,
        "num_classes": coco.num_classes,
        "category_of_label": {int(k): int(v) for k, v in coco.category_of_label.items()},
        "params_total": int(counts["total"]),
        "params_trainable": int(counts["trainable"]),
        **_run_summary(result),
        "train_image_size": _median_image_side(coco, train_set.image_ids),
    }
    return model_file, result.history


def _run_summary(result: TrainResult) -> dict[str, Any]:
    """The numbers of a finished run that the model file keeps."""
    return {
        "best_epoch": int(result.best_epoch),
        "best_metric": float(result.best_metric),
        "epochs_run": int(result.epochs_run),
        "train_seconds": float(result.train_seconds),
        "seconds_per_epoch": float(result.seconds_per_epoch),
        "stopped_early": bool(result.stopped_early),
        "stopped_by": result.stopped_by,
        "time_budget": result.time_budget,
    }


def _median_image_side(coco: CocoDataset, image_ids: list[int]) -> int:
    sides = sorted(
        max(int(coco.images_by_id[i]["width"]), int(coco.images_by_id[i]["height"]))
        for i in image_ids
    )
    return sides[len(sides) // 2] if sides else 0


def load_model(model_file: dict[str, Any], device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the detector from a model file (no pretrained files needed) and load its weights."""
    model = build_model(
        model_file["model_config"], num_classes=int(model_file["num_classes"]), load_weights=False
    )
    missing, unexpected = model.load_state_dict(model_file["model"], strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"model file does not match its config: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}"
        )
    return model.to(device).eval()


def evaluate_experiment(
    model_file: dict[str, Any], coco: CocoDataset, cfg: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate the best checkpoint on the test split: COCO metrics, IoU per prediction / per
    ground truth, precision/recall, timing and parameter counts. Returns
    ``(metrics, predictions)``."""
    exp = parse_experiment(cfg)
    device = evaluation_device(exp.training.device)  # the GPU it trained on, for auto
    model = load_model(model_file, device)
    in_channels = int(model_file["model_config"].get("in_channels", 1))
    test_ids = _split_ids(coco, "test")
    test_set = DetectionDataset(coco, test_ids, in_channels, None, model_intensity(model_file))
    slicing = exp.evaluation.slicing
    predictions, timing = predict_dataset(
        model, test_set, device, exp.evaluation.batch_size, time_images=True, slicing=slicing
    )
    metrics = evaluate_detections(
        coco.to_coco_dict(test_ids),
        predictions,
        score_threshold=exp.evaluation.score_threshold,
        per_class=True,
        segm=model_file["model_config"].get("task") == "instance_segmentation",
    )
    metrics["experiment"] = cfg.get("name")
    metrics.update({key: model_file[key] for key in MODEL_FILE_METRICS if key in model_file})
    metrics.update(
        {
            "infer_ms_per_image": timing.get("ms_per_image", float("nan")),
            "test_images": len(test_ids),
            "device": str(device),
            "evaluated_on": "whole images, "
            + (slicing.describe() if slicing and slicing.enabled is True else "one pass"),
        }
    )
    return metrics, predictions
