"""One experiment end to end, as library calls: resolve its config, train it, evaluate it.

An experiment is a named set of overrides of shared defaults (see
``conf/base/parameters_experiments.yml``). Its resolved config is a plain dict with sections
``model``, ``training``, ``augmentation``, ``small_object_defaults``, ``evaluation``,
``intensity`` (how pixels are scaled, from the dataset statistics, see :mod:`.intensity`) and
``derived`` (what the small-object defaults and ``in_channels: auto`` filled in, and why).
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..data.coco import CocoDataset
from ..data.dataset import DetectionDataset
from ..data.intensity import FIXED, Intensity, choose_in_channels
from ..errors import ConfigError, DatasetError
from ..evaluation.inference import predict_dataset, select_device
from .trainer import TrainConfig, Trainer, seed_everything

logger = logging.getLogger(__name__)

SECTIONS = (
    "model", "training", "augmentation", "small_object_defaults", "evaluation", "description", "skip_if_weights_missing",
)
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Recursive dict merge: ``override`` wins; nested dicts merge; lists and scalars replace."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_auto(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() == "auto")


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
    """Merge ``overrides`` onto ``defaults`` and fill the small-object defaults from ``stats``."""
    from ..modeling.anchors import resolve_small_object_defaults

    check_experiment_name(name)
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"experiment {name!r}: unknown section(s) {unknown}; valid sections: {list(SECTIONS)}")
    cfg = deep_merge(defaults, overrides)
    for section in ("model", "training", "augmentation", "small_object_defaults", "evaluation"):
        cfg.setdefault(section, {})
    switches = cfg["small_object_defaults"]
    model_in = dict(cfg["model"])
    channels_note = None
    if _is_auto(model_in.get("in_channels", "auto")):
        intensity_info = (stats or {}).get("intensity") or {}
        model_in["in_channels"], reason = choose_in_channels(intensity_info.get("channels"))
        channels_note = {"value": model_in["in_channels"], "why": reason}
        logger.info("[%s] model.in_channels auto: %s", name, reason)
    model_cfg, derived = resolve_small_object_defaults(model_in, stats or {}, switches)
    if channels_note:
        derived["in_channels"] = channels_note
    cfg["model"] = model_cfg
    cfg["derived"] = derived
    cfg["intensity"] = ((stats or {}).get("intensity") or {}).get("spec")
    cfg["name"] = name
    TrainConfig.from_dict(cfg["training"])  # fail now, not after the data pipeline
    if derived:
        logger.info("[%s] small-object defaults: %s", name, derived)
    return cfg


def missing_weights(name: str, defaults: dict[str, Any] | None, overrides: dict[str, Any] | None) -> str | None:
    """Why experiment ``name`` should be skipped for a missing weight file, or ``None``.

    ``skip_if_weights_missing`` (an experiment's top-level key): ``true`` skips the experiment
    when its pretrained file (``backbone`` or ``full``) cannot be found locally, ``false`` never
    skips (the run stops with the missing-file error). Unset (or ``auto``): ``full`` experiments
    are skipped (torchvision's COCO detector files cannot be made offline), ``backbone`` ones are
    not (an in-project backbone is made by the ``pretrain_backbone`` pipeline). The reason names
    the missing file and the folder it is looked up in. An invalid config is not judged here
    (the run reports it).
    """
    from ..errors import WeightsError
    from ..modeling.weights import resolve_weight_file

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
        raise ConfigError(f"experiment {name!r}: skip_if_weights_missing must be true, false or auto, got {skip!r}")
    if not skip:
        return None
    try:
        resolve_weight_file(
            model.get("weights_path"), pretrained, str(model.get("backbone", "resnet50")),
            variant=str(model.get("variant", "v1")), search_dirs=model.get("weights_dir"),
        )
    except WeightsError as exc:
        return str(exc)
    except ConfigError:
        return None
    return None


def _split_ids(coco: CocoDataset, split: str) -> list[int]:
    ids = coco.splits.get(split)
    if not ids:
        raise DatasetError(f"{coco.root}: the '{split}' split is empty or missing (splits: {sorted(coco.splits)})")
    return ids


def build_datasets(coco: CocoDataset, cfg: dict[str, Any]) -> tuple[DetectionDataset, DetectionDataset]:
    from ..data.augment import build_transform

    in_channels = int(cfg["model"].get("in_channels", 1))
    transform = build_transform(cfg.get("augmentation"), train=True)
    intensity = cfg.get("intensity")
    train_set = DetectionDataset(coco, _split_ids(coco, "train"), in_channels, transform, intensity)
    val_set = DetectionDataset(coco, coco.splits.get("val", []), in_channels, None, intensity)
    return train_set, val_set


def train_experiment(
    coco: CocoDataset, cfg: dict[str, Any], checkpoint_dir: str | Path | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one experiment. Returns ``(model_file, history)``.

    ``model_file`` holds the best epoch's weights, the resolved config that rebuilds the model,
    the label -> category id mapping and the run's summary numbers.
    """
    from ..modeling.factory import build_model, count_parameters

    name = cfg.get("name", "experiment")
    train_cfg = TrainConfig.from_dict(cfg["training"])
    # new layers are initialised from the global RNG: seed it so the run does not depend on what
    # else ran in this process before (other experiments, other nodes)
    seed_everything(train_cfg.seed, train_cfg.deterministic)
    model = build_model(cfg["model"], num_classes=coco.num_classes)
    counts = count_parameters(model)
    logger.info(
        "[%s] %s Faster R-CNN %s, pretrained=%s: %.2f M parameters (%.2f M trainable)",
        name, cfg["model"].get("backbone"), cfg["model"].get("variant"), cfg["model"].get("pretrained"),
        counts["total"] / 1e6, counts["trainable"] / 1e6,
    )
    train_set, val_set = build_datasets(coco, cfg)
    model_config = dict(getattr(model, "smallobj_config", cfg["model"]))
    trainer = Trainer(model, train_set, val_set, train_cfg, checkpoint_dir, model_config=model_config, name=name)
    result = trainer.fit()
    model_file = {
        "model": result.best_state,
        "model_config": model_config,
        "intensity": Intensity.from_dict(cfg.get("intensity")).to_dict(),
        "experiment": cfg,
        "num_classes": coco.num_classes,
        "category_of_label": {int(k): int(v) for k, v in coco.category_of_label.items()},
        "params_total": int(counts["total"]),
        "params_trainable": int(counts["trainable"]),
        "best_epoch": int(result.best_epoch),
        "best_metric": float(result.best_metric),
        "epochs_run": int(result.epochs_run),
        "train_seconds": float(result.train_seconds),
        "seconds_per_epoch": float(result.seconds_per_epoch),
        "stopped_early": bool(result.stopped_early),
        "train_image_size": _median_image_side(coco, train_set.image_ids),
    }
    return model_file, result.history


def _median_image_side(coco: CocoDataset, image_ids: list[int]) -> int:
    sides = sorted(max(int(coco.images_by_id[i]["width"]), int(coco.images_by_id[i]["height"])) for i in image_ids)
    return sides[len(sides) // 2] if sides else 0


def load_model(model_file: dict[str, Any], device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the detector from a model file (no pretrained files needed) and load its weights."""
    from ..modeling.factory import build_model

    model = build_model(model_file["model_config"], num_classes=int(model_file["num_classes"]), load_weights=False)
    missing, unexpected = model.load_state_dict(model_file["model"], strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"model file does not match its config: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    return model.to(device).eval()


def evaluate_experiment(
    model_file: dict[str, Any], coco: CocoDataset, cfg: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate the best checkpoint on the test split: COCO metrics, IoU per prediction / per
    ground truth, precision/recall, timing and parameter counts. Returns ``(metrics, predictions)``."""
    from ..evaluation.metrics import evaluate_detections

    evaluation = cfg.get("evaluation", {})
    device = select_device(cfg.get("training", {}).get("device", "auto"))
    model = load_model(model_file, device)
    in_channels = int(model_file["model_config"].get("in_channels", 1))
    test_ids = _split_ids(coco, "test")
    test_set = DetectionDataset(coco, test_ids, in_channels, None, model_intensity(model_file))
    predictions, timing = predict_dataset(
        model, test_set, device, batch_size=int(evaluation.get("batch_size", 1)), time_images=True
    )
    metrics = evaluate_detections(
        coco.to_coco_dict(test_ids),
        predictions,
        score_threshold=float(evaluation.get("score_threshold", 0.5)),
        per_class=True,
    )
    metrics.update(
        {
            "experiment": cfg.get("name"),
            "params_total": model_file["params_total"],
            "params_trainable": model_file["params_trainable"],
            "best_epoch": model_file["best_epoch"],
            "epochs_run": model_file["epochs_run"],
            "train_seconds": model_file["train_seconds"],
            "seconds_per_epoch": model_file["seconds_per_epoch"],
            "infer_ms_per_image": timing.get("ms_per_image", float("nan")),
            "test_images": len(test_ids),
            "device": str(device),
        }
    )
    return metrics, predictions
