"""5. Memory: the peak resident memory of a training run, and the largest image size that trains
with batch 2 on this machine without swapping.

Every measurement runs in its own child process, which reports its own peak resident set size at
exit (``VmHWM`` of ``/proc/self/status``, the kernel's high-water mark), imports and model
included. Not ``wait4``'s ``ru_maxrss``: for a child started by ``subprocess`` it starts at the
parent's peak, here that of the benchmark process after the sections before it.

- Training run: the project's ``r18_small_object`` experiment (``train_experiment``) for one epoch
  on the bundled sample, with validation.
- Image size sweep: the same model with its input size set to the image size (no resize), batch
  2 of single-channel images with 60 small boxes each, two SGD steps per size, sizes growing until
  the next one is predicted (linear fit of the peak against the pixel count) to exceed the memory
  available at the start minus a 10 % margin, or fails, or the section's time budget runs out.
  On CUDA the limit is the GPU's memory and the peak is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import common as C

TITLE = "Memory"
SIZES = {False: [512, 1024, 1536, 2048, 2560, 3072, 3584, 4096], True: [128, 256]}
STEPS = {False: 2, True: 1}
BATCH = 2
SWEEP_BUDGET_S = {False: 420.0, True: 60.0}
MARGIN = 0.10


# ---------------------------------------------------------------------- child process
def _child_sizes(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from smallobj_pipeline.detection.modeling.factory import build_model

    dev = C.device()
    cfg = json.loads(Path(args.model_config).read_text())
    cfg.update(min_size=args.size, max_size=args.size)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=2).to(dev).train()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9
    )
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for _ in range(args.batch):
        images.append(torch.rand(1, args.size, args.size, generator=g).to(dev))
        xy = torch.rand(60, 2, generator=g) * (args.size - 30)
        wh = 8 + torch.rand(60, 2, generator=g) * 16
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1).to(dev),
                "labels": torch.randint(1, 3, (60,), generator=g).to(dev),
            }
        )
    times = []
    for _ in range(args.steps):
        C.sync(dev)
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        C.sync(dev)
        times.append(time.perf_counter() - start)
    out = {"size": args.size, "step_seconds": times}
    if dev.type == "cuda":
        out["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        out["cuda_total_bytes"] = int(torch.cuda.get_device_properties(0).total_memory)
    return out


def _child_training_run(args: argparse.Namespace) -> dict[str, Any]:
    from smallobj_pipeline.detection.engine.experiment import train_experiment

    coco = C.sample_dataset(Path(args.workdir), args.quick)
    overrides = dict(C.base_experiments().get("r18_small_object") or {})
    overrides.pop("description", None)
    overrides.setdefault("training", {})
    overrides["training"] = {**overrides["training"], "epochs": 1}
    cfg = C.resolved_config("r18_small_object", coco, overrides)
    start = time.perf_counter()
    model_file, history = train_experiment(coco, cfg, checkpoint_dir=None)
    out = {
        "seconds": time.perf_counter() - start,
        "train_images": len(coco.splits["train"]),
        "val_images": len(coco.splits["val"]),
        "batch": cfg["training"]["batch_size"],
        "input": [cfg["model"]["min_size"], cfg["model"]["max_size"]],
    }
    import torch

    if torch.cuda.is_available():
        out["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["sizes", "training"], required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--model-config", default="")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    out = _child_sizes(args) if args.mode == "sizes" else _child_training_run(args)
    out["vm_hwm_bytes"] = C.vm_hwm_bytes()
    print("RESULT " + json.dumps(out), flush=True)


def _result(log: str) -> dict[str, Any] | None:
    for line in reversed(Path(log).read_text(errors="replace").splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return None


# ---------------------------------------------------------------------- parent
def run(quick: bool, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    dev = C.device()
    cuda = dev.type == "cuda"
    me = [sys.executable, str(Path(__file__).resolve())]

    # 1. a training run
    coco = C.sample_dataset(workdir, quick)  # generated here, loaded by the child
    cmd = me + ["--mode", "training", "--workdir", str(workdir)] + (["--quick"] if quick else [])
    tr = C.run_child(cmd, workdir / "training.log", timeout=900)
    tr_out = _result(tr["log"]) if tr["returncode"] == 0 else None
    if tr_out is None:
        raise RuntimeError(f"training run failed ({tr['returncode']}):\n{C.tail(tr['log'], 25)}")
    tr["peak_rss_bytes"] = tr_out.get("vm_hwm_bytes") or tr["peak_rss_bytes"]

    # 2. image size sweep
    model_cfg = C.resolved_config("memory", coco)["model"]
    cfg_path = workdir / "model_config.json"
    cfg_path.write_text(json.dumps(model_cfg))
    available = C.available_ram()
    if cuda:
        import torch

        limit_total = int(torch.cuda.get_device_properties(0).total_memory)
    else:
        limit_total = available
    limit = limit_total * (1 - MARGIN)
    points: list[dict[str, Any]] = []
    stop_reason = "every planned size trained"
    sweep_start = time.perf_counter()
    for size in SIZES[quick]:
        px = size * size
        if len(points) >= 2:
            xs = [p["size"] ** 2 for p in points[-3:]]
            a, b = C.linear_fit(xs, [p["peak"] for p in points[-3:]])
            at, bt = C.linear_fit(xs, [p["step_s"] for p in points[-3:]])
            predicted, predicted_t = a + b * px, max(0.0, at + bt * px)
            if predicted > limit:
                stop_reason = (
                    f"{size} px not tried: predicted peak {C.gib(predicted)} exceeds the "
                    f"{'GPU memory' if cuda else 'available memory'} minus {MARGIN:.0%} "
                    f"({C.gib(limit)})"
                )
                break
            elapsed = time.perf_counter() - sweep_start
            if elapsed + STEPS[quick] * predicted_t * 1.3 + 15 > SWEEP_BUDGET_S[quick]:
                stop_reason = (
                    f"{size} px not tried: predicted {STEPS[quick] * predicted_t:.0f} s would pass "
                    "the "
                    f"section's time budget ({SWEEP_BUDGET_S[quick]:.0f} s)"
                )
                break
        cmd = me + [
            "--mode",
            "sizes",
            "--size",
            str(size),
            "--batch",
            str(BATCH),
            "--steps",
            str(STEPS[quick]),
            "--model-config",
            str(cfg_path),
        ]
        res = C.run_child(cmd, workdir / f"size_{size}.log", timeout=600)
        out = _result(res["log"]) if res["returncode"] == 0 else None
        if out is None:
            killed = res["returncode"] in (-9, 137)
            stop_reason = (
                f"{size} px failed (exit {res['returncode']}"
                + (", killed: out of memory" if killed else "")
                + f"): {C.tail(res['log'], 1)}"
            )
            break
        res["peak_rss_bytes"] = out.get("vm_hwm_bytes") or res["peak_rss_bytes"]
        peak = out["cuda_peak_bytes"] if cuda else res["peak_rss_bytes"]
        points.append(
            {
                "size": size,
                "peak": peak,
                "rss": res["peak_rss_bytes"],
                "cuda_peak": out.get("cuda_peak_bytes"),
                "step_s": C.median(out["step_seconds"]),
                "wall_s": res["wall_s"],
            }
        )

    largest = points[-1]["size"] if points else None
    extrapolated = None
    # extrapolate only from a sweep that reached a quarter of the limit (at most ~2x in side)
    if len(points) >= 3 and points[-1]["peak"] >= 0.25 * limit:
        a, b = C.linear_fit([p["size"] ** 2 for p in points[-3:]], [p["peak"] for p in points[-3:]])
        if b > 0 and limit > a:
            extrapolated = int(math.sqrt((limit - a) / b))
    what = "GPU memory (torch.cuda.max_memory_allocated)" if cuda else "peak resident memory"
    md = [
        "Training run: `r18_small_object` (the project's quick experiment), one epoch on the "
        "sample's "
        f"{tr_out['train_images']} training images (batch {tr_out['batch']}, input "
        f"{tr_out['input'][0]} px) plus "
        f"validation on {tr_out['val_images']}: peak resident memory "
        f"**{C.gib(tr['peak_rss_bytes'])}** "
        f"({tr_out['seconds']:.0f} s)"
        + (f", GPU {C.gib(tr_out.get('cuda_peak_bytes'))}" if cuda else "")
        + ".",
        "",
        f"Image size sweep, batch {BATCH}, ResNet18-FPN (the sample's model config, input = image "
        "size), "
        f"{STEPS[quick]} SGD step{'s' if STEPS[quick] != 1 else ''} per size. Available memory at "
        f"the start {C.gib(available)} of {C.gib(C.total_ram())}, "
        f"swap {C.gib(C.swap_total())}"
        + (
            " (none: a size that does not fit fails instead of swapping)"
            if C.swap_total() == 0
            else ""
        )
        + ".",
        "",
        C.table(
            ["image size", "peak resident memory"]
            + (["GPU peak"] if cuda else [])
            + ["s per step", "child wall s"],
            [
                [f"{p['size']} px", C.gib(p["rss"])]
                + ([C.gib(p["cuda_peak"])] if cuda else [])
                + [p["step_s"], p["wall_s"]]
                for p in points
            ],
        ),
        "",
        f"Largest size trained with batch {BATCH}: **{largest} px** ({what}); the sweep stopped: "
        f"{stop_reason}.",
    ]
    if extrapolated:
        md.append(
            "Extrapolated from the fit of the peak against the pixel count, the largest square "
            "image that "
            f"fits in {C.gib(limit)} is about {extrapolated} px."
        )
    summary = [
        C.target_row(
            "peak resident memory of a training run (sample, r18_small_object)",
            C.gib(tr["peak_rss_bytes"]),
            "(report)",
            "report",
        ),
        C.target_row(
            f"largest image size that trains with batch {BATCH}",
            f"{largest} px" + (f" (about {extrapolated} px extrapolated)" if extrapolated else ""),
            "(report)",
            "report" if largest is not None else False,
        ),
    ]
    return {
        "title": TITLE,
        "summary": summary,
        "markdown": "\n".join(md),
        "data": {
            "training_run": {
                **tr_out,
                "peak_rss_bytes": tr["peak_rss_bytes"],
                "wall_s": tr["wall_s"],
            },
            "sweep": points,
            "stop_reason": stop_reason,
            "largest_size": largest,
            "extrapolated_size": extrapolated,
            "available_bytes": available,
            "limit_bytes": limit,
        },
    }


if __name__ == "__main__":
    child_main(sys.argv[1:])
