"""The GPU check (``make bench-gpu``): the CUDA paths of the project's trainer measured on one
machine in at most about 8 minutes, from scratch (random weights, generated images, no
download). It prints one table and writes ``docs/benchmarks-gpu.md`` and ``.json`` (atomically).

Sections, each a group of rows of the table:

1. trainer vs tutorial: the project's :class:`Trainer` with its defaults (mixed precision,
   channels-last, loader workers with pinned memory, ``cudnn.benchmark``) against the plain
   loop of torchvision's detection tutorial (``bench_throughput``'s, reused as it is), on the
   same model, images and optimizer; images/s, GPU utilisation, peak GPU memory;
2. speed settings: the trainer with one of those settings switched off at a time;
3. batch size: the trainer at batch 2, 4 and 8;
4. DDP: one epoch of a few steps on every visible GPU through the project's own launch path
   (``train_experiment`` with ``training.devices``: the elastic launcher, NCCL), or 2 gloo
   processes on CPU in a dry run;
5. resume: an uninterrupted run against one interrupted after its first epoch (``last.pt``) and
   resumed (the logic of tests/test_trainer.py's resume check), next to a second uninterrupted
   run, which shows the device's own run-to-run noise (cuDNN autotuning and atomics are not
   bit-reproducible; ``training.deterministic`` acts on CPU only).

``--dry-run`` runs every section at a tiny size (64 px, 1 step, gloo on CPU) to check the code
paths, in a few tens of seconds on 2 CPU cores; it writes to ``--out`` or a temporary folder,
never over ``docs/benchmarks-gpu.md`` unless ``--out`` names it. Without a GPU and without
``--dry-run`` it stops with a message saying so.

GPU utilisation: ``torch.cuda.utilization()`` (pynvml) or ``nvidia-smi`` sampled in a thread
(``common.GpuUtilisation``); "n/a" when neither is there.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_throughput as T
import common as C

DEFAULT_OUT = C.REPO / "docs" / "benchmarks-gpu.md"
BATCHES = (2, 4, 8)
# steps per timed run, warm-up steps (0: no warm-up run), alternating repeats of trainer vs
# tutorial, the batch of the comparison, DDP steps per process, resume steps per epoch and
# whether a second uninterrupted run measures the noise (bit-identical on CPU: not in a dry run)
SIZES = {
    False: {"steps": 60, "warmup": 10, "repeats": 2, "batch": 8, "ddp_steps": 20, "resume": 8,
            "noise_run": 1},
    True: {"steps": 1, "warmup": 0, "repeats": 1, "batch": 2, "ddp_steps": 1, "resume": 1,
           "noise_run": 0},
}  # fmt: skip
SETTINGS_OFF = (
    ("without mixed precision", {"amp": False}),
    ("without channels-last", {"channels_last": False}),
    ("without loader workers", {"num_workers": 0}),
    ("without cudnn.benchmark", {"cudnn_benchmark": False}),
)
DRY_MODEL = {  # few proposals and sampled RoIs: a CPU step of a fraction of a second
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 64,
}


@dataclass
class Bench:
    """What every section shares: device, images, the resolved experiment, initial weights."""

    dev: Any
    dry: bool
    coco: Any
    cfg: dict[str, Any]
    training: dict[str, Any]
    init_state: dict[str, Any]
    workdir: Path
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.dev.type == "cuda"

    def images(self, n: int, offset: int = 0):
        from smallobj_pipeline.detection.data.dataset import DetectionDataset

        ids = [img["id"] for img in self.coco.images]
        cycled = (ids * (n // len(ids) + 2))[offset : offset + n]
        return DetectionDataset(self.coco, cycled, int(self.cfg["model"]["in_channels"]), None)

    def model(self):
        """A fresh model with the shared initial weights, on the device."""
        from smallobj_pipeline.detection.modeling.factory import build_model

        model = build_model(self.cfg["model"], num_classes=self.coco.num_classes)
        model.load_state_dict(self.init_state)
        return model.to(self.dev)

    def train_config(self, **overrides: Any):
        from smallobj_pipeline.detection.engine.trainer import TrainConfig

        return TrainConfig.from_dict({**self.training, **overrides})


# ---------------------------------------------------------------------- set-up
def make_bench(dry: bool, workdir: Path) -> Bench:
    import torch

    from smallobj_pipeline.detection.engine.trainer import seed_everything
    from smallobj_pipeline.detection.modeling.factory import build_model

    dev = C.device()
    if dry:
        coco = C.generate(workdir / "dry", num_images=6, image_size=64, seed=4, min_objects=2,
                          max_objects=4, min_side=6, max_side=12)  # fmt: skip
    else:
        # boxes only: the trainer vs tutorial comparison is of Faster R-CNN (no masks, so the
        # model's task "auto" stays detection)
        coco = C.generate(workdir / "sample", **{**C.sample_kwargs(False), "segmentation": False})
    size = int(coco.images[0]["width"])
    model = {"pretrained": "none", "min_size": size, "max_size": size, **(DRY_MODEL if dry else {})}
    cfg = C.resolved_config("bench_gpu", coco, {"model": model})
    training = dict(cfg["training"])
    training.update(
        epochs=1, val_loss=False, warmup_iters=0, schedule="none", grad_clip_norm=None,
        early_stopping_patience=None, resume=False, lr=0.002, log_every=10_000,
        device=dev.type, amp=True, channels_last=True, cudnn_benchmark=True,
        num_workers="auto",
    )  # fmt: skip
    seed_everything(int(training["seed"]), True)
    init = build_model(cfg["model"], num_classes=coco.num_classes).state_dict()
    init_state = {k: v.detach().clone() for k, v in init.items()}
    if dev.type == "cpu":
        torch.set_num_threads(max(1, min(2, C.usable_cores())))
    return Bench(dev, dry, coco, cfg, training, init_state, workdir, dict(SIZES[dry]))


@contextlib.contextmanager
def peak_gpu_memory(dev) -> Iterator[dict[str, int | None]]:
    """``{"bytes": torch.cuda.max_memory_allocated}`` over the block (None on CPU)."""
    import torch

    out: dict[str, int | None] = {"bytes": None}
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    yield out
    if cuda:
        torch.cuda.synchronize(dev)
        out["bytes"] = int(torch.cuda.max_memory_allocated(dev))


def timed_run(bench: Bench, loop: str, batch: int, steps: int, **overrides: Any) -> dict:
    """One run of ``steps`` steps of ``batch`` images: the project's trainer (``loop``
    "project", with ``overrides`` of its settings) or the tutorial's loop ("tutorial")."""
    dataset = bench.images(steps * batch)
    train_cfg = bench.train_config(batch_size=batch, **overrides)
    model = bench.model()
    with C.GpuUtilisation(bench.dev) as gpu, peak_gpu_memory(bench.dev) as mem:
        if loop == "project":
            seconds = T._project_run(model, dataset, train_cfg, bench.dev)
        else:
            seconds = T._plain_run(model, dataset, batch, train_cfg, bench.dev, train_cfg.seed)
    return {
        "loop": loop,
        "batch": batch,
        "steps": steps,
        "seconds": seconds,
        "images_per_s": steps * batch / seconds,
        "gpu_util": gpu.mean,
        "peak_gpu_bytes": mem["bytes"],
        "settings": overrides,
    }


# ---------------------------------------------------------------------- sections
def section_loops(bench: Bench) -> dict[str, Any]:
    """Trainer vs tutorial loop, alternating, after one warm-up run of each; medians."""
    s = bench.sizes
    # a dry run on CPU goes through a loader worker here ("auto" is 0 workers on CPU)
    workers = {"num_workers": 1} if bench.dry and not bench.cuda else {}
    for loop in ("project", "tutorial") if s["warmup"] else ():
        timed_run(bench, loop, s["batch"], s["warmup"], **workers)
    runs = [
        timed_run(bench, loop, s["batch"], s["steps"], **workers)
        for _ in range(s["repeats"])
        for loop in ("project", "tutorial")
    ]
    out: dict[str, Any] = {"runs": runs}
    for loop in ("project", "tutorial"):
        mine = [r for r in runs if r["loop"] == loop]
        out[loop] = {
            key: C.median([r[key] for r in mine if r[key] is not None]) if any(
                r[key] is not None for r in mine) else None
            for key in ("images_per_s", "gpu_util", "peak_gpu_bytes")
        }  # fmt: skip
    out["ratio"] = out["project"]["images_per_s"] / out["tutorial"]["images_per_s"]
    return out


def section_settings(bench: Bench) -> dict[str, Any]:
    """The trainer with one speed setting switched off at a time."""
    s = bench.sizes
    return {
        label: timed_run(bench, "project", s["batch"], s["steps"], **off)
        for label, off in SETTINGS_OFF
    }


def section_batches(bench: Bench) -> dict[str, Any]:
    s = bench.sizes
    return {f"batch {b}": timed_run(bench, "project", b, s["steps"]) for b in BATCHES}


def section_ddp(bench: Bench) -> dict[str, Any]:
    """One epoch of ``ddp_steps`` steps per process through ``train_experiment``, the path of
    ``kedro run`` (``training.devices``: the elastic launcher starts one process per GPU)."""
    import torch

    from smallobj_pipeline.detection.engine.experiment import train_experiment

    world = torch.cuda.device_count() if bench.cuda else 2
    batch, steps = bench.sizes["batch"], bench.sizes["ddp_steps"]
    coco = copy.copy(bench.coco)
    ids = [img["id"] for img in coco.images]
    coco.splits = {
        "train": (ids * (world * batch * steps // len(ids) + 1))[: world * batch * steps],
        "val": [],
    }
    cfg = copy.deepcopy(bench.cfg)
    cfg["training"] = {**bench.training, "batch_size": batch, "devices": world,
                       "device": bench.dev.type}  # fmt: skip
    cfg["augmentation"] = {**cfg.get("augmentation", {}), "enabled": False}
    start = time.perf_counter()
    _model_file, history = train_experiment(coco, cfg, None)
    wall = time.perf_counter() - start
    epoch_s = float(history[0]["epoch_seconds"])
    images = len(coco.splits["train"])
    return {
        "processes": world,
        "backend": "nccl" if bench.cuda else "gloo",
        "launched": world > 1,
        "steps_per_process": steps,
        "batch_per_process": batch,
        "epoch_seconds": epoch_s,
        "images_per_s": images / epoch_s,
        "wall_seconds": wall,
        "train_loss": float(history[0]["train_loss"]),
    }


def _fit(bench: Bench, ckpt: Path, cut: bool = False, **overrides: Any):
    """The resume check's run (tests/test_trainer.py's set-up at the benchmark's size): 2 epochs
    of ``resume`` steps with warm-up, cosine decay and validation; ``cut``: interrupted after
    the first epoch's checkpoint, as a kill would. Returns (history, weights on the CPU)."""
    from smallobj_pipeline.detection.engine.hooks import HookBase
    from smallobj_pipeline.detection.engine.trainer import Trainer, TrainingInterrupted

    class Cut(HookBase):
        def after_epoch(self) -> None:
            raise TrainingInterrupted("cut after epoch 1")

    class CutTrainer(Trainer):
        def _hooks(self):  # after the trainer's own hooks, so last.pt is written first
            return [*super()._hooks(), Cut()]

    s = bench.sizes
    n = s["resume"] * s["batch"]
    cfg = bench.train_config(
        epochs=2, batch_size=s["batch"], warmup_iters=2, schedule="cosine", val_loss=True,
        seed=7, **overrides,
    )  # fmt: skip
    trainer = (CutTrainer if cut else Trainer)(
        bench.model(), bench.images(n), bench.images(2, offset=n), cfg, checkpoint_dir=ckpt,
        name="resume",
    )  # fmt: skip
    try:
        result = trainer.fit()
    except TrainingInterrupted:
        return None, None
    weights = {k: v.detach().float().cpu() for k, v in trainer.model.state_dict().items()}
    return result.history, weights


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(float((a[k] - b[k]).abs().max()) if a[k].numel() else 0.0 for k in a)


def section_resume(bench: Bench) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-gpu-resume-") as tmp:
        root = Path(tmp)
        hist_a, w_a = _fit(bench, root / "a")
        hist_b, w_b = _fit(bench, root / "b") if bench.sizes["noise_run"] else (None, None)
        _fit(bench, root / "cut", cut=True)
        gc.collect()  # the cut run's loader (and its workers) go now, not in a later fork
        cut_epochs = len(_load_history(root / "cut" / "last.pt"))
        hist_r, w_r = _fit(bench, root / "cut", resume=True)
    loss = [h[-1]["train_loss"] if h else None for h in (hist_a, hist_b, hist_r)]
    repeat_diff = _max_diff(w_a, w_b) if w_b else None
    resume_diff = _max_diff(w_a, w_r)
    identical = resume_diff == 0.0 and loss[0] == loss[2]
    within = resume_diff <= max(2 * (repeat_diff or 0.0), 1e-6)
    return {
        "epochs_before_cut": cut_epochs,
        "resumed_epochs": [h["epoch"] for h in hist_r],
        "final_loss_uninterrupted": loss[0],
        "final_loss_repeat": loss[1],
        "final_loss_resumed": loss[2],
        "max_weight_diff_repeat": repeat_diff,
        "max_weight_diff_resumed": resume_diff,
        "verdict": "bit-identical" if identical else (
            "within the run-to-run noise" if within else "DIFFERS beyond the run-to-run noise"),
        "passed": identical or within,
    }  # fmt: skip


def _load_history(path: Path) -> list[dict[str, Any]]:
    from smallobj_pipeline.detection.checkpoint import load_checkpoint

    return list(load_checkpoint(path)["history"])


SECTIONS = {
    "loops": section_loops,
    "settings": section_settings,
    "batches": section_batches,
    "ddp": section_ddp,
    "resume": section_resume,
}


# ---------------------------------------------------------------------- the table and the page
def _util(bench_cuda: bool, value: float | None) -> str:
    return C.fmt(value) if bench_cuda else "- (CPU)"


def _speed_row(section: str, run: str, r: dict[str, Any], cuda: bool, result: str = "") -> list:
    return [section, run, r["images_per_s"], _util(cuda, r["gpu_util"]),
            C.gib(r["peak_gpu_bytes"]) if cuda else "- (CPU)", result]  # fmt: skip


def _failed(section: str, res: dict[str, Any]) -> list | None:
    if "error" in res or "skipped" in res:
        return [section, "-", "-", "-", "-", res.get("error") or res["skipped"]]
    return None


def table_rows(results: dict[str, Any], cuda: bool, training: dict[str, Any]) -> list[list]:
    from smallobj_pipeline.detection.engine.runtime import loader_workers

    rows: list[list] = []
    loops = results["loops"]
    workers = (loops.get("runs") or [{}])[0].get("settings", {}).get("num_workers")
    workers = training.get("num_workers") if workers is None else workers
    workers = loader_workers(workers, cuda)
    if not (row := _failed("trainer vs tutorial", loops)):
        rows.append(_speed_row("trainer vs tutorial", "tutorial loop (fp32, NCHW, no workers)",
                               loops["tutorial"], cuda))  # fmt: skip
        rows.append(_speed_row(
            "trainer vs tutorial",
            f"project trainer (AMP, channels-last, workers {workers}, cudnn.benchmark)",
            loops["project"], cuda, f"x{loops['ratio']:.2f} the tutorial's images/s",
        ))  # fmt: skip
        base = loops["project"]["images_per_s"]
    else:
        rows.append(row)
        base = None
    for key, label in (("settings", "speed settings"), ("batches", "batch size")):
        if row := _failed(label, results[key]):
            rows.append(row)
            continue
        for run, r in results[key].items():
            rel = f"{r['images_per_s'] / base:.2f} of the defaults' images/s" if base else ""
            rows.append(_speed_row(label, run, r, cuda, rel if key == "settings" else ""))
    rows.append(_ddp_row(results["ddp"], cuda))
    rows.append(_resume_row(results["resume"]))
    return rows


def _ddp_row(d: dict[str, Any], cuda: bool) -> list:
    if row := _failed("DDP", d):
        return row
    where = f"{d['processes']} GPU(s), {d['backend']}" if cuda else f"{d['processes']} CPU "
    where += "" if cuda else "processes, gloo"
    note = (
        f"1 epoch of {d['steps_per_process']} step(s) of {d['batch_per_process']} per process in "
        f"{d['epoch_seconds']:.2f} s ({d['wall_seconds']:.1f} s with launch); loss "
        f"{d['train_loss']:.4f}"
    )
    if not d["launched"]:
        note += "; 1 GPU visible: trained in this process (DDP needs 2 or more)"
    return ["DDP", where, d["images_per_s"], "-", "-", note]


def _resume_row(r: dict[str, Any]) -> list:
    if row := _failed("resume", r):
        return row
    repeat = r["max_weight_diff_repeat"]
    note = (
        f"{r['verdict']}: max weight difference {r['max_weight_diff_resumed']:.3g} resumed"
        + ("" if repeat is None else f" vs {repeat:.3g} between two uninterrupted runs")
        + f"; final loss {r['final_loss_uninterrupted']:.5f} vs "
        f"{r['final_loss_resumed']:.5f} resumed"
    )
    return ["resume", "2 epochs vs cut after epoch 1 + resume", "-", "-", "-", note]


def page(report: dict[str, Any], rows: list[list]) -> str:
    info, dry = report["machine"], report["dry_run"]
    head = ["# GPU check: the trainer's CUDA paths", ""]
    if dry:
        head += ["**Dry run**: every code path at a tiny size (64 px images, 1 step); the "
                 "numbers only show that it runs, not how fast.", ""]  # fmt: skip
    head += [
        f"`{report['command']}` on {info['device']} ({info['cpu']}, {info['cores']} cores), "
        f"torch {info['torch']}, torchvision {info['torchvision']}; "
        f"{report['date']}, {report['seconds']:.0f} s in all.",
        "",
        C.table(["section", "run", "images/s", "GPU util %", "peak GPU memory", "result"], rows),
        "",
        "Set-up: the project's sample configuration (ResNet18-FPN Faster R-CNN from scratch, "
        f"input {report['image_size']} px, generated images), SGD lr 0.002 without warm-up "
        f"or clipping, no augmentation. Timed runs of {report['sizes']['steps']} step(s) after a "
        f"warm-up of {report['sizes']['warmup']}; trainer vs tutorial alternates "
        f"{report['sizes']['repeats']} time(s) (medians) at batch {report['sizes']['batch']}. "
        "GPU utilisation is sampled every 0.1 s during each run; peak GPU memory is "
        "`torch.cuda.max_memory_allocated`. Resume: tests/test_trainer.py's check (2 epochs, "
        "warm-up and cosine decay, validation) at this size.",
        "",
        "Regenerate: `make bench-gpu` (about 8 minutes on one GPU); "
        '`make bench-gpu BENCH_ARGS="--dry-run --out /tmp/gpu-check"` checks it on a CPU.',
    ]
    return "\n".join(head) + "\n"


# ---------------------------------------------------------------------- command line
def out_paths(out: str | None, dry: bool) -> tuple[Path, Path]:
    """(page, json): ``--out`` a ``.md`` file or a folder; a dry run without ``--out`` writes to
    a new temporary folder, a GPU run to docs/benchmarks-gpu.md."""
    if out is None:
        md = Path(tempfile.mkdtemp(prefix="bench-gpu-")) / DEFAULT_OUT.name if dry else DEFAULT_OUT
    else:
        md = Path(out) if out.endswith(".md") else Path(out) / DEFAULT_OUT.name
    return md, md.with_suffix(".json")


def run_sections(bench: Bench, budget: float, start: float) -> tuple[dict, dict]:
    """Every section in order; a failing one is reported in its row and the others still run;
    past ``budget`` seconds the remaining ones are skipped (and say so)."""
    import traceback

    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name, fn in SECTIONS.items():
        elapsed = time.perf_counter() - start
        if elapsed > budget:
            results[name] = {"skipped": f"skipped: {elapsed:.0f} s used of the {budget:.0f} s"}
            continue
        print(f"[bench-gpu] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = fn(bench)
        except Exception as exc:  # reported in the table; the next sections still run
            traceback.print_exc()
            results[name] = {"error": f"FAILED: {type(exc).__name__}: {exc}"[:300]}
        seconds[name] = time.perf_counter() - t0
        print(f"[bench-gpu] {name}: {seconds[name]:.1f} s", file=sys.stderr, flush=True)
    return results, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes; runs on a CPU")
    parser.add_argument("--out", default=None, help="page (.md) or folder for the page and JSON")
    parser.add_argument("--workdir", default=str(C.REPO / "benchmarks" / "results" / "gpu"),
                        help="generated images (cached)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which the remaining sections are skipped")  # fmt: skip
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            "bench-gpu: no CUDA GPU is visible here (torch.cuda.is_available() is False), so "
            "there is nothing to measure; run it on a machine with a GPU, or check its code "
            "paths on the CPU with: make bench-gpu BENCH_ARGS=--dry-run",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    md_path, json_path = out_paths(args.out, args.dry_run)
    bench = make_bench(args.dry_run, Path(args.workdir))
    results, section_seconds = run_sections(bench, args.budget, start)
    report = {
        "dry_run": args.dry_run,
        "command": "make bench-gpu"
        + (f' BENCH_ARGS="{" ".join(argv or sys.argv[1:])}"' if (argv or sys.argv[1:]) else ""),
        "date": time.strftime("%Y-%m-%d"),
        "machine": C.machine_info(),
        "image_size": int(bench.coco.images[0]["width"]),
        "sizes": bench.sizes,
        "training": {k: v for k, v in bench.training.items() if k != "milestones"},
        "sections": results,
        "section_seconds": section_seconds,
        "seconds": time.perf_counter() - start,
    }
    rows = table_rows(results, bench.cuda, bench.training)
    print(C.table(["section", "run", "images/s", "GPU util %", "peak GPU memory", "result"], rows))
    atomic_write(md_path, lambda tmp: tmp.write_text(page(report, rows)))
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(report, indent=1, default=str)))
    print(f"[bench-gpu] wrote {md_path} and {json_path.name}", file=sys.stderr)
    failed = [n for n, r in results.items() if "error" in r]
    return 1 if failed else 0


def atomic_write(path: Path, writer) -> None:
    from smallobj_pipeline.detection.io import atomic_write as write

    write(path, writer)


if __name__ == "__main__":
    raise SystemExit(main())
