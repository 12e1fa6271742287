"""7. Time to accuracy against the tutorial loop: the project's defaults versus the plain training
loop a user copies from torchvision's detection tutorial, at equal wall time, on generated
datasets of different object sizes, each at two time budgets.

The two arms:

- **project**: the pipeline's own path (``resolve_experiment`` -> ``train_experiment``) with the
  ``experiment_defaults`` of ``conf/base/parameters_experiments.yml`` untouched except
  ``training.time_budget``. Its per-epoch validation runs on the test images and counts against
  its budget (it is part of what the project does while training).
- **tutorial loop**: torchvision's ``FasterRCNN`` on ``resnet_fpn_backbone("resnet18")`` from
  scratch with trainable BatchNorm, torchvision's anchors (32-512 px), input at the native image
  size, 3-channel input (gray images repeated), random horizontal flip, batch 4, SGD (lr 0.01,
  momentum 0.9, weight decay 5e-4) with ``OneCycleLR`` over the steps that fit in the budget:
  the loop is timed on 3 untimed steps first, as a user times one epoch before choosing the
  number of epochs. It is evaluated after every epoch with the clock stopped.

Both are scored by the same code (the project's ``predict_dataset`` + ``evaluate_detections``,
faster-coco-eval) on the same test images. The "final" figure of an arm is its last evaluation
(no best-epoch selection on the test images). "Time to the loop's map_50" is the training time
(validation included) at which the project's curve first reaches the loop's final map_50 at the
same budget; the ratio divides it by the loop's training time (evaluation excluded). The ratio is
taken at the project's evaluations (an upper bound: it may have crossed the level earlier); the
"interpolated" column estimates the crossing linearly between evaluations.

The datasets are generated (``generate_sample_dataset``) so that anyone can re-run them: a
6-12 px gray set, a 10-24 px RGB set with 10 classes and a 20-60 px gray set.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import common as C
from bench_throughput import tutorial_collate

TITLE = "Time to accuracy: the project's defaults vs the tutorial loop at equal wall time"

TEN_SHAPES = (
    "ring", "cross", "x", "triangle", "diamond", "disc", "square", "tee", "ell", "dotted_ring",
)  # fmt: skip
DATASETS: dict[str, dict[str, Any]] = {
    "tiny 6-12 px, gray, 5 classes": {
        "min_side": 6, "max_side": 12, "min_objects": 15, "max_objects": 40,
        "classes": TEN_SHAPES[:5], "channels": 1, "seed": 71,
    },
    "small 10-24 px, RGB, 10 classes": {
        "min_side": 10, "max_side": 24, "min_objects": 8, "max_objects": 24,
        "classes": TEN_SHAPES, "channels": 3, "seed": 72,
    },
    "medium 20-60 px, gray, 3 classes": {
        "min_side": 20, "max_side": 60, "min_objects": 2, "max_objects": 8,
        "classes": TEN_SHAPES[:3], "channels": 1, "seed": 73,
    },
}  # fmt: skip
# images per dataset (80 % train, 20 % test), image side, budgets in seconds
SETTINGS = {
    # CPU: 48 training images, so that even the short budget holds 3 evaluations of the project
    ("cpu", False): {"images": 60, "image_size": 160, "budgets": (120, 360)},
    ("cpu", True): {"images": 10, "image_size": 64, "budgets": (6, 12)},
    ("cuda", False): {"images": 500, "image_size": 256, "budgets": (300, 900)},
    ("cuda", True): {"images": 10, "image_size": 64, "budgets": (6, 12)},
}
TARGET_RATIO = 0.5  # the project reaches the loop's final map_50 in at most half the loop's time
LOOP = {"batch": 4, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "calibration_steps": 3}


# ---------------------------------------------------------------------- data
def datasets(workdir: Path, quick: bool, s: dict[str, Any]) -> dict[str, Any]:
    """Every dataset of :data:`DATASETS`, generated once into ``workdir``, split 80/20 with the
    test images also as the validation split (so the project's per-epoch validation is the test
    curve)."""
    out = {}
    for i, (name, kwargs) in enumerate(DATASETS.items()):
        kw = dict(kwargs, image_size=s["image_size"], num_images=s["images"])
        kw["classes"] = list(kw["classes"])
        if quick:
            kw.update(min_objects=min(kw["min_objects"], 4), max_objects=min(kw["max_objects"], 6))
            kw.update(max_side=min(kw["max_side"], 24), min_side=min(kw["min_side"], 12))
        coco = C.generate(workdir / f"data{i}", **kw)
        ids = [img["id"] for img in coco.images]
        n_train = int(round(0.8 * len(ids)))
        out[name] = C.with_splits(coco, ids[:n_train], ids[n_train:], ids[n_train:])
    return out


def evaluate(model, coco, in_channels: int, dev) -> dict[str, float]:
    """map_50 / map / map_small of ``model`` on the test split, by the project's evaluation."""
    from smallobj_pipeline.detection.data.dataset import DetectionDataset
    from smallobj_pipeline.detection.evaluation.inference import predict_dataset
    from smallobj_pipeline.detection.evaluation.metrics import evaluate_detections

    ids = coco.splits["test"]
    results, _ = predict_dataset(model, DetectionDataset(coco, ids, in_channels), dev, 4)
    metrics = evaluate_detections(coco.to_coco_dict(ids), results, per_class=False)
    return {k: float(metrics[k]) for k in ("map_50", "map", "map_small")}


# ---------------------------------------------------------------------- the tutorial loop
def tutorial_model(num_classes: int, image_size: int):
    """What the tutorial builds, from scratch: ResNet18-FPN (trainable BatchNorm, all layers),
    torchvision's anchors and heads, input kept at the native size."""
    import torch
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    backbone = resnet_fpn_backbone(
        backbone_name="resnet18",
        weights=None,
        norm_layer=torch.nn.BatchNorm2d,
        trainable_layers=5,
    )
    return FasterRCNN(
        backbone, num_classes=num_classes + 1, min_size=image_size, max_size=image_size
    )


def _flip_collate(batch, generator):
    """The tutorial's ``RandomHorizontalFlip(0.5)``, image and boxes together."""
    import torch

    images, targets = [], []
    for image, target in batch:
        target = dict(target)
        if torch.rand(1, generator=generator).item() < 0.5:
            image = image.flip(-1)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = image.shape[-1] - target["boxes"][:, [2, 0]]
            target["boxes"] = boxes
        images.append(image)
        targets.append(target)
    return images, targets


def _loop_step(model, optimizer, images, targets, dev) -> float:
    images = [im.to(dev) for im in images]
    targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
    losses = sum(model(images, targets).values())
    optimizer.zero_grad()
    losses.backward()
    optimizer.step()
    return float(losses.item())


def _steps_that_fit(coco, train_set, budget: float, dev, seed: int) -> int:
    """Time :data:`LOOP` ``calibration_steps`` steps on a throwaway model (not counted): what a
    user does before choosing the number of epochs."""
    import torch
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    model = tutorial_model(coco.num_classes, int(coco.images[0]["width"])).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loader = DataLoader(
        train_set, batch_size=LOOP["batch"], shuffle=True, collate_fn=tutorial_collate
    )
    times = []
    for i, (images, targets) in enumerate(loader):
        start = time.perf_counter()
        _loop_step(model, opt, images, targets, dev)
        C.sync(dev)
        times.append(time.perf_counter() - start)
        if i >= LOOP["calibration_steps"]:
            break
    step = C.median(times[1:] if len(times) > 1 else times)
    return max(1, int(budget / step))


def tutorial_arm(coco, budget: float, dev, seed: int = 0) -> dict[str, Any]:
    """Train the tutorial loop for ``budget`` seconds; returns its curve (one point per epoch
    and a last one at the end) and its final metrics."""
    import torch
    from torch.utils.data import DataLoader

    from smallobj_pipeline.detection.data.dataset import DetectionDataset

    torch.use_deterministic_algorithms(False)
    train_set = DetectionDataset(coco, coco.splits["train"], 3)
    total_steps = _steps_that_fit(coco, train_set, budget, dev, seed)
    torch.manual_seed(seed)
    model = tutorial_model(coco.num_classes, int(coco.images[0]["width"])).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=LOOP["lr"], momentum=LOOP["momentum"], weight_decay=LOOP["weight_decay"]
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LOOP["lr"], total_steps=total_steps
    )
    flips = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        train_set,
        batch_size=LOOP["batch"],
        shuffle=True,
        collate_fn=lambda b: _flip_collate(b, flips),
        generator=torch.Generator().manual_seed(seed),
    )
    clock, step, curve, diverged = 0.0, 0, [], False
    while step < total_steps and clock < budget and not diverged:
        model.train()
        for images, targets in loader:
            start = time.perf_counter()
            loss = _loop_step(model, optimizer, images, targets, dev)
            scheduler.step()
            C.sync(dev)
            clock += time.perf_counter() - start
            step += 1
            diverged = not math.isfinite(loss)
            if step >= total_steps or clock >= budget or diverged:
                break
        curve.append({"seconds": clock, "steps": step, **evaluate(model, coco, 3, dev)})
    return {"curve": curve, "final": curve[-1], "seconds": clock, "steps": step,
            "planned_steps": total_steps, "diverged": diverged}  # fmt: skip


# ---------------------------------------------------------------------- the project
def project_arm(
    coco, budget: float, overrides: dict[str, Any] | None = None, name: str = "tta"
) -> dict[str, Any]:
    """Train with the project's defaults (plus ``overrides``) for ``budget`` seconds; the curve
    is its per-epoch validation on the test images against its cumulative epoch time."""
    from smallobj_pipeline.detection.engine.experiment import deep_merge, train_experiment

    over = deep_merge(copy.deepcopy(overrides or {}), {"training": {"time_budget": budget}})
    cfg = C.resolved_config(name, coco, over)
    start = time.perf_counter()
    model_file, history = train_experiment(coco, cfg, None)
    wall = time.perf_counter() - start
    clock, curve = 0.0, []
    for row in history:
        clock += float(row.get("epoch_seconds", 0.0))
        if row.get("map_50") is not None:
            scores = {k: float(row.get(k, 0.0)) for k in ("map_50", "map", "map_small")}
            curve.append({"seconds": clock, "epoch": int(row["epoch"]), **scores})
    mc = cfg["model"]
    return {
        "curve": curve,
        "final": curve[-1] if curve else {"seconds": clock, "map_50": 0.0, "map": 0.0},
        "seconds": clock,
        "wall_s": wall,
        "stopped_by": model_file.get("stopped_by"),
        "epochs": model_file.get("epochs_run"),
        "input_px": [mc["min_size"], mc["max_size"]],
        "anchor_p2": mc["anchor_sizes"][0],
        "norm": mc.get("norm"),
    }


def time_to(curve: list[dict[str, Any]], level: float, interpolate: bool = False) -> float | None:
    """Seconds at which ``curve`` first reaches ``level`` at one of its evaluations (None:
    never). ``interpolate``: linearly between that evaluation and the one before (the origin,
    0 s and map 0, before the first), an estimate of when it was crossed between evaluations."""
    before = {"seconds": 0.0, "map_50": 0.0}
    for point in curve:
        if point["map_50"] >= level - 1e-12:
            if not interpolate or point["map_50"] <= before["map_50"]:
                return float(point["seconds"])
            frac = (level - before["map_50"]) / (point["map_50"] - before["map_50"])
            span = point["seconds"] - before["seconds"]
            return float(before["seconds"] + max(0.0, frac) * span)
        before = point
    return None


# ---------------------------------------------------------------------- report
def _figure(results: dict[str, Any], budgets, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(DATASETS)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for budget, style in zip(budgets, ("--", "-"), strict=False):
            for arm, colour in (("project", "tab:blue"), ("tutorial loop", "tab:orange")):
                r = results.get(f"{name}/{budget}/{arm}")
                if not r:
                    continue
                xs = [0.0] + [p["seconds"] for p in r["curve"]]
                ys = [0.0] + [p["map_50"] for p in r["curve"]]
                ax.plot(xs, ys, style, color=colour, marker=".", label=f"{arm}, {budget:g} s")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training seconds")
        ax.set_ylabel("test map_50")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def _rows(results: dict[str, Any], budgets) -> tuple[list[list[Any]], list[float | None]]:
    rows, ratios = [], []
    for name in DATASETS:
        for budget in budgets:
            p = results[f"{name}/{budget}/project"]
            t = results[f"{name}/{budget}/tutorial loop"]
            level = t["final"]["map_50"]
            reach = time_to(p["curve"], level)
            ratio = reach / t["seconds"] if reach is not None and t["seconds"] else None
            between = time_to(p["curve"], level, interpolate=True)
            ratios.append(ratio)
            rows.append([
                name, f"{budget:g} s", t["final"]["map_50"], p["final"]["map_50"],
                t["final"]["map"], p["final"]["map"], t["seconds"], p["seconds"],
                C.fmt(reach), C.fmt(ratio) if ratio is not None else "never",
                C.fmt(between / t["seconds"]) if between is not None and t["seconds"] else "-",
            ])  # fmt: skip
    return rows, ratios


def run(quick: bool, workdir: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    dev = C.device()
    s = SETTINGS[(dev.type, quick)]
    data = datasets(workdir, quick, s)
    results: dict[str, Any] = {}
    for name, coco in data.items():
        for budget in s["budgets"]:
            results[f"{name}/{budget}/tutorial loop"] = tutorial_arm(coco, budget, dev)
            results[f"{name}/{budget}/project"] = project_arm(coco, budget, overrides)
    figure = (C.REPO / "docs" / "figures" if not quick else workdir) / "time_to_accuracy.png"
    _figure(results, s["budgets"], figure)
    rows, ratios = _rows(results, s["budgets"])
    met = all(r is not None and r <= TARGET_RATIO for r in ratios)
    worst = max((r for r in ratios if r is not None), default=None)
    never = sum(r is None for r in ratios)
    value = f"worst {C.fmt(worst)}" + (f", {never} never" if never else "")
    summary = [
        C.target_row(
            "project time to the tutorial loop's final map_50 / loop time, every dataset x budget",
            value,
            f"<= {TARGET_RATIO:g}",
            met,
        )
    ]
    md = [
        "The project's `experiment_defaults` (only `training.time_budget` set) against the plain "
        "torchvision tutorial loop (ResNet18-FPN from scratch, BatchNorm, torchvision anchors, "
        "native size, horizontal flip, batch 4, SGD + OneCycle over the steps that fit), same "
        f"budget, same test images, scored by the same COCO code; device {dev}; "
        f"{s['images']} images of {s['image_size']} px per dataset (80 % train, 20 % test).",
        "",
        C.table(
            [
                "dataset",
                "budget",
                "loop map_50",
                "project map_50",
                "loop map",
                "project map",
                "loop s",
                "project s",
                "project s to loop's map_50",
                "ratio",
                "ratio, interpolated",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"Curves (test map_50 against training seconds): `{figure.relative_to(C.REPO)}`"
        if figure.is_relative_to(C.REPO)
        else f"Curves: `{figure}`",
    ]
    for key, r in results.items():
        if r.get("stopped_by") is not None:
            md.append(
                f"- {key}: {r['epochs']} epochs, input {r['input_px'][1]} px, P2 anchor "
                f"{r['anchor_p2']}, norm {r['norm']}, stopped by {r['stopped_by']}"
            )
        else:
            md.append(f"- {key}: {r['steps']} of {r['planned_steps']} planned steps")
    return {
        "title": TITLE,
        "summary": summary,
        "markdown": "\n".join(md),
        "data": {"settings": s, "datasets": DATASETS, "results": results, "figure": str(figure)},
    }


def main() -> int:
    """One cell of the benchmark, for ablations of the defaults: ``--dataset`` (index into
    :data:`DATASETS`), ``--budget`` seconds, ``--arm project|loop``, ``--overrides`` (a JSON
    experiment override for the project arm, e.g. ``'{"model": {"norm": "bn"}}'``). Prints the
    final metrics and the curve as one JSON line."""
    import argparse
    import json
    import logging

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dataset", type=int, required=True, choices=range(len(DATASETS)))
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--arm", choices=("project", "loop"), default="project")
    parser.add_argument("--overrides", type=json.loads, default={})
    parser.add_argument("--workdir", type=Path, default=C.REPO / "benchmarks" / "results" / "tta")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dev = C.device()
    data = datasets(args.workdir, False, SETTINGS[(dev.type, False)])
    name = list(data)[args.dataset]
    if args.arm == "loop":
        res = tutorial_arm(data[name], args.budget, dev)
    else:
        res = project_arm(data[name], args.budget, args.overrides)
    curve = [(round(p["seconds"]), round(p["map_50"], 3)) for p in res["curve"]]
    out = {"dataset": name, "budget": args.budget, "arm": args.arm, "overrides": args.overrides,
           "final": res["final"], "curve": curve}  # fmt: skip
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
