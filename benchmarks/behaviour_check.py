"""Behaviour check of the training engine: a seeded CPU run of the quick experiment set and of
the backbone pretraining, dumped to JSON so that two versions of the code can be compared.

    PYTHONPATH=src python benchmarks/behaviour_check.py --out after.json [--compare before.json]

What it records, per experiment of ``conf/base/parameters_experiments.yml`` (trained for
``--epochs`` epochs on a small generated sample) and for ``train_classifier`` (crops of the same
sample): the per-epoch history (losses, ``map_50``, accuracy) and the learning rate of every
parameter group at every optimizer step (torch's global optimizer step hook). ``--compare``
checks that losses, ``map_50`` and accuracies are identical and prints the largest relative
learning-rate difference. The code under test is whatever ``smallobj_pipeline`` is on the path
(``PYTHONPATH=/old/checkout/src`` for a reference run); nothing here imports the repository's
``src`` by itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

for _k, _v in {"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "MPLBACKEND": "Agg"}.items():
    os.environ.setdefault(_k, _v)

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_pre_hook  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = {"num_images": 16, "image_size": 128, "seed": 5, "min_objects": 3, "max_objects": 8}
RATIOS = {"train": 0.5, "val": 0.25, "test": 0.25}
# besides the quick set: more steps per epoch, so the warm-up ends and the decay shows
EXTRA = {
    "lr_cosine": {"training": {"batch_size": 1, "warmup_iters": 5}},
    "lr_multistep": {
        "training": {"batch_size": 1, "warmup_iters": 3, "schedule": "multistep", "milestones": [1]}
    },
}
PRETRAIN = {
    "name": "check",
    "crop_size": 32,
    "epochs": 3,
    "batch_size": 16,
    "log_every": 1000,
    "warmup_epochs": 1.0,
}
COMPARED = ("train_loss", "val_loss", "map_50", "map", "train_accuracy", "val_accuracy")


def _import(*candidates: str) -> Any:
    """The first module of ``candidates`` that exists (new layout first, then the old one)."""
    import importlib

    for name in candidates:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(candidates)


class LRRecorder:
    """The learning rate of every parameter group at every optimizer step, for any optimizer."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.handle = register_optimizer_step_pre_hook(self._record)

    def _record(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.lrs.append([float(g["lr"]) for g in optimizer.param_groups])

    def take(self) -> list[list[float]]:
        out, self.lrs = self.lrs, []
        return out


def _dataset(root: Path) -> Any:
    from smallobj_pipeline.detection.data.coco import CocoDataset
    from smallobj_pipeline.detection.data.sample import generate_sample_dataset
    from smallobj_pipeline.detection.data.split import assign_splits
    from smallobj_pipeline.detection.data.stats import compute_stats

    generate_sample_dataset(root, **SAMPLE)
    coco = assign_splits(CocoDataset.from_dir(root), RATIOS, seed=1)
    intensity = yaml.safe_load((REPO / "conf/base/parameters_data.yml").read_text())["intensity"]
    return coco, compute_stats(coco, intensity)


def _plain_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in history]


def run_experiments(coco: Any, stats: dict[str, Any], epochs: int, work: Path, rec: LRRecorder):
    exp = _import("smallobj_pipeline.detection.engine.experiment")
    params = yaml.safe_load((REPO / "conf/base/parameters_experiments.yml").read_text())
    defaults = params["experiment_defaults"]
    defaults["training"].update({"epochs": epochs, "log_every": 1000, "device": "cpu"})
    out = {}
    for name, overrides in {**(params.get("experiments") or {}), **EXTRA}.items():
        cfg = exp.resolve_experiment(name, copy.deepcopy(defaults), copy.deepcopy(overrides), stats)
        rec.take()
        _, history = exp.train_experiment(coco, cfg, work / name)
        out[name] = {"history": _plain_rows(history), "lrs": rec.take()}
        print(f"{name}: {[round(r['train_loss'], 6) for r in history]}", file=sys.stderr)
    return out


def run_pretraining(coco: Any, work: Path, rec: LRRecorder) -> dict[str, Any]:
    mod = _import(
        "smallobj_pipeline.detection.pretraining.run",
        "smallobj_pipeline.detection.pretraining.pretrain",
    )
    rec.take()
    history, _ = mod.run_pretraining(
        {**PRETRAIN, "output_dir": str(work / "bb"), "device": "cpu"}, coco
    )
    return {"history": _plain_rows(history), "lrs": rec.take()}


def collect(epochs: int) -> dict[str, Any]:
    import smallobj_pipeline

    torch.set_num_threads(1)
    rec = LRRecorder()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        coco, stats = _dataset(work / "sample")
        return {
            "code": str(Path(smallobj_pipeline.__file__).parent),
            "torch": torch.__version__,
            "experiments": run_experiments(coco, stats, epochs, work, rec),
            "pretrain": run_pretraining(coco, work, rec),
        }


def _runs(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {**data["experiments"], "pretrain": data["pretrain"]}


def _same(a: Any, b: Any) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


def compare(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Prints every difference; returns the number of differing history values."""
    differing, worst = 0, 0.0
    for name, ref in _runs(before).items():
        new = _runs(after)[name]
        for row_a, row_b in zip(ref["history"], new["history"], strict=True):
            for key in COMPARED:
                if key in row_a and not _same(row_a[key], row_b.get(key)):
                    differing += 1
                    print(
                        f"{name} epoch {row_a['epoch']} {key}: {row_a[key]!r} -> {row_b.get(key)!r}"
                    )
        if len(ref["lrs"]) != len(new["lrs"]):
            print(f"{name}: {len(ref['lrs'])} optimizer steps before, {len(new['lrs'])} after")
            differing += 1
        for lrs_a, lrs_b in zip(ref["lrs"], new["lrs"], strict=False):
            for a, b in zip(lrs_a, lrs_b, strict=True):
                rel = abs(a - b) / abs(a) if a else abs(b)
                worst = max(worst, rel)
        steps = len(ref["lrs"])
        print(f"{name}: {len(ref['history'])} epochs, {steps} optimizer steps compared")
    print(
        f"history values differing: {differing}; max relative learning-rate difference: {worst:.3g}"
    )
    return differing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", required=True, help="where to write this run's JSON")
    parser.add_argument("--compare", help="a JSON written by an earlier run (the reference)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    data = collect(args.epochs)
    Path(args.out).write_text(json.dumps(data, indent=1))
    if args.compare:
        return 1 if compare(json.loads(Path(args.compare).read_text()), data) else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
