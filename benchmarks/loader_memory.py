"""Peak memory of the training data loader on a large dataset (a benchmark, not a test).

Writes ``--num-images`` images of ``--size`` px (default 2,000 x 1,024 px, 1 channel) with their
COCO annotations into a temporary folder, then iterates one epoch of the training DataLoader
exactly as :class:`~smallobj_pipeline.detection.engine.trainer.Trainer` builds it (seeded sampler,
augmentation, collate), and reports the process's peak resident memory against the size of the
dataset on disk and decoded. Images are read lazily, one per ``__getitem__``: the peak should
stay near the baseline plus a few batches, whatever the number of images.

To keep the set-up quick, ``--unique`` distinct images are rendered and the others are hard
links to them (``--copy`` writes real copies instead): every image is still opened and decoded
from its own path.

    python benchmarks/loader_memory.py                          # 2000 x 1024 px
    python benchmarks/loader_memory.py --num-images 200 --size 512
    python benchmarks/loader_memory.py --workers 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))


def rss_mib() -> float:
    """Current resident memory of this process (MiB)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def make_dataset(
    root: Path, num_images: int, size: int, unique: int, copy: bool, seed: int
) -> Path:
    from smallobj_pipeline.detection.data.sample import generate_sample_dataset

    unique = max(1, min(unique, num_images))
    generate_sample_dataset(
        root, num_images=unique, image_size=size, seed=seed, min_objects=10, max_objects=40
    )
    data = json.loads((root / "annotations.json").read_text())
    images, annotations = list(data["images"]), list(data["annotations"])
    next_ann = max(a["id"] for a in annotations) + 1
    for i in range(unique, num_images):
        src = data["images"][i % unique]
        name = f"images/{i:05d}.png"
        (os.link if not copy else shutil.copyfile)(root / src["file_name"], root / name)
        images.append({**src, "id": i + 1, "file_name": name})
        for a in data["annotations"]:
            if a["image_id"] == src["id"]:
                annotations.append({**a, "id": next_ann, "image_id": i + 1})
                next_ann += 1
    data["images"], data["annotations"] = images, annotations
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers (0: the CPU default)"
    )
    parser.add_argument(
        "--unique", type=int, default=20, help="distinct images rendered (the rest are links)"
    )
    parser.add_argument(
        "--copy", action="store_true", help="copy instead of hard-linking the repeated images"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to write the dataset (default: a temp dir)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the numbers to this JSON file"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from smallobj_pipeline.detection.data.augment import build_transform
    from smallobj_pipeline.detection.data.coco import CocoDataset
    from smallobj_pipeline.detection.data.dataset import DetectionDataset
    from smallobj_pipeline.detection.engine.trainer import TrainConfig, Trainer

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="loader_memory_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        root = make_dataset(
            tmp / "coco", args.num_images, args.size, args.unique, args.copy, args.seed
        )
        setup_s = time.perf_counter() - t0
        coco = CocoDataset.from_dir(root)
        on_disk = sum((root / img["file_name"]).stat().st_size for img in coco.images)
        decoded_uint8 = sum(
            int(img["width"]) * int(img["height"]) for img in coco.images
        )  # 1 channel
        transform = build_transform(
            {"hflip": 0.5, "vflip": 0.5, "rotate90": 0.5, "crop": {"p": 0.3, "scale": [0.5, 1.0]}},
            train=True,
            seed=args.seed,
        )
        train_set = DetectionDataset(
            coco, [img["id"] for img in coco.images], in_channels=1, transform=transform
        )
        cfg = TrainConfig.from_dict(
            {"batch_size": args.batch_size, "num_workers": args.workers, "device": "cpu"}
        )
        trainer = Trainer(torch.nn.Identity(), train_set, None, cfg, name="loader_memory")
        loader = trainer.epoch_data(0)

        baseline = rss_mib()
        peak_before = peak_rss_mib()
        samples, n_images, t0 = [], 0, time.perf_counter()
        for step, (images, targets) in enumerate(loader):
            n_images += len(images)
            if step % 10 == 0:
                samples.append(rss_mib())
            del images, targets
        iterate_s = time.perf_counter() - t0
        peak = peak_rss_mib()
        children_peak = peak_rss_mib(resource.RUSAGE_CHILDREN)
        mib = 2**20
        result = {
            "num_images": args.num_images,
            "image_size": args.size,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "images_loaded": n_images,
            "dataset_on_disk_mib": round(on_disk / mib, 1),
            "dataset_decoded_uint8_mib": round(decoded_uint8 / mib, 1),
            "dataset_decoded_float32_mib": round(4 * decoded_uint8 / mib, 1),
            "rss_before_loop_mib": round(baseline, 1),
            "rss_during_loop_max_sampled_mib": round(max(samples), 1) if samples else None,
            "peak_rss_mib": round(peak, 1),
            "peak_rss_before_loop_mib": round(peak_before, 1),
            "peak_growth_during_loop_mib": round(max(0.0, peak - peak_before), 1),
            "workers_peak_rss_mib": round(children_peak, 1) if args.workers else None,
            # what the loop added to the peak, as a fraction of the decoded dataset (all in memory:
            # >= 1)
            "peak_growth_over_decoded_float32": round(
                max(0.0, peak - peak_before) / (4 * decoded_uint8 / mib), 4
            ),
            "setup_seconds": round(setup_s, 1),
            "iterate_seconds": round(iterate_s, 1),
            "images_per_second": round(n_images / iterate_s, 1) if iterate_s else None,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"{result['images_loaded']} images of {args.size} px in {result['iterate_seconds']} s "
        f"({result['images_per_second']} img/s, batch {args.batch_size}, {args.workers} workers)\n"
        f"dataset: {result['dataset_on_disk_mib']} MiB on disk, "
        f"{result['dataset_decoded_uint8_mib']} MiB decoded "
        f"(uint8), {result['dataset_decoded_float32_mib']} MiB as float32 tensors\n"
        f"process RSS: {result['rss_before_loop_mib']} MiB before the loop, peak "
        f"{result['peak_rss_mib']} MiB "
        f"(+{result['peak_growth_during_loop_mib']} MiB during the loop)"
        + (f", workers' peak {result['workers_peak_rss_mib']} MiB" if args.workers else "")
    )
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
