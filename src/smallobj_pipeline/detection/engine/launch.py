"""Train one experiment from its resolved config outside Kedro, e.g. where a cluster scheduler
starts ``torchrun`` itself (SLURM, Kubernetes' PyTorchJob)::

    torchrun --nnodes=2 --node_rank=R --nproc_per_node=gpu --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 --rdzv_id=E -m smallobj_pipeline.detection.engine.launch \\
        --config data/06_models/E/config.json --data data/05_model_input/coco \\
        --model-out data/06_models/E/model.pt --history-out data/08_reporting/E/history.csv

(``config.json`` is what ``kedro run --pipeline=train --namespaces=E --to-nodes=E.resolve_config``
writes.) Under ``torchrun`` every process trains with DistributedDataParallel and rank 0 writes
the files. Without it, it trains like the Kedro node: in one process, or launching one process
per GPU itself (``training.devices``, :mod:`.elastic`). ``kedro run`` needs none of this.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from ..checkpoint import save_checkpoint
from ..data.coco import CocoDataset
from ..io import atomic_write
from .experiment import train_experiment
from .runtime import distributed, end_distributed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", required=True, help="resolved experiment config (JSON, from resolve_config)"
    )
    parser.add_argument("--data", required=True, help="COCO directory with train/val split files")
    parser.add_argument("--model-out", required=True, help="where to write model.pt")
    parser.add_argument("--history-out", required=True, help="where to write history.csv")
    parser.add_argument(
        "--checkpoint-dir", default=None, help="best/last checkpoints (default: next to model.pt)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = json.loads(Path(args.config).read_text())
    coco = CocoDataset.from_dir(args.data)
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else Path(args.model_out).parent
    model_file, history = train_experiment(coco, cfg, ckpt_dir)
    distributed_run, rank, _ = distributed()
    if rank == 0:
        save_checkpoint(model_file, args.model_out)
        atomic_write(args.history_out, lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
    if distributed_run:
        end_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
