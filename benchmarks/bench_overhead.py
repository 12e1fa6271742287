"""4. Pipeline overhead: the wall time of ``kedro run --pipeline=train`` (the real CLI, in a fresh
process, on an isolated copy of the project) minus the time spent training (the trainer's own
``train_seconds``, per-epoch validation included) and evaluating (the ``evaluate_model`` nodes);
and the start-up time from launching the command to the first training step.

The run uses the bundled sample (generated beforehand, as on every run but the first) and the
project's quick experiment set (``conf/base``) with one
epoch each: the overhead (start-up, validation with great-expectations, split, statistics and
their plot, the augmentation preview, model construction, saving, the report) does not grow with
epochs, so it is projected onto a 5-minute run as ``overhead / 300 s``. Times come from the run's
own log (a timestamp per record, through ``KEDRO_LOGGING_CONFIG``) and its ``metrics.json`` files.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import common as C
import yaml

TITLE = "Pipeline overhead and start-up"
REFERENCE_RUN_S = 300.0
TARGET_OVERHEAD = 0.10
TARGET_STARTUP_S = 15.0

LOGGING = """\
version: 1
disable_existing_loggers: false
formatters:
  bench:
    format: "%(created).3f|%(name)s|%(message)s"
handlers:
  file:
    class: logging.FileHandler
    level: INFO
    formatter: bench
    filename: {log}
    encoding: utf8
loggers:
  kedro:
    level: INFO
  smallobj_pipeline:
    level: INFO
root:
  level: WARNING
  handlers: [file]
"""


def make_project(root: Path, quick: bool) -> Path:
    """conf (without local) + pyproject + an empty src, like ``tests/kedro_project.py``."""
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(C.REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(C.REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()
    defaults = C.experiment_defaults()
    defaults["training"].update({"epochs": 1, "log_every": 1})
    local: dict[str, Any] = {"experiment_defaults": defaults}  # top-level keys replace base's
    if quick:
        defaults["training"].update({"batch_size": 2, "warmup_iters": 0})
        defaults["model"].update({"box_batch_size_per_image": 32, "rpn_post_nms_top_n_test": 100})
        local["dataset"] = {
            "root": "data/01_raw/sample",
            "sample": {
                "root": "data/01_raw/sample",
                "num_images": 8,
                "image_size": 96,
                "seed": 2,
                "min_objects": 3,
                "max_objects": 6,
            },
        }
        local["split"] = {
            "use_existing": True,
            "seed": 1,
            "ratios": {"train": 0.5, "val": 0.25, "test": 0.25},
        }
        local["experiments"] = {"tiny": {"description": "smoke"}}
    (root / "conf/local/parameters.yml").write_text(yaml.safe_dump(local, sort_keys=False))
    # the sample exists beforehand, as on every run but the first: its one-off generation is not
    # overhead
    from smallobj_pipeline.detection.data.sample import generate_sample_dataset

    sample = (local.get("dataset") or C.data_params()["dataset"])["sample"]
    generate_sample_dataset(
        root / sample["root"], **{k: v for k, v in sample.items() if k != "root"}
    )
    return root


def parse_log(path: Path) -> list[tuple[float, str, str]]:
    records = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split("|", 2)
        if len(parts) == 3:
            try:
                records.append((float(parts[0]), parts[1], parts[2]))
            except ValueError:
                continue
    return records


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    project = make_project(workdir / "project", quick)
    log = workdir / "kedro_records.log"
    log.unlink(missing_ok=True)
    (workdir / "logging.yml").write_text(LOGGING.format(log=json.dumps(str(log))))
    kedro = Path(sys.executable).parent / "kedro"
    cmd = [str(kedro)] if kedro.exists() else [sys.executable, "-m", "kedro"]
    cmd += ["run", "--pipeline=train"]
    env = C.child_env({"KEDRO_LOGGING_CONFIG": str(workdir / "logging.yml")})
    res = C.run_child(cmd, workdir / "kedro_stdout.log", cwd=project, env=env, timeout=1500)
    if res["returncode"] != 0:
        raise RuntimeError(f"kedro run failed ({res['returncode']}):\n{C.tail(res['log'], 30)}")
    t0, wall = res["start_time"], res["wall_s"]
    records = parse_log(log)

    nodes: dict[str, float] = {}
    running_since = last_completed = first_running = None
    gaps = 0.0  # between one node's end and the next one's start: the catalog loading its inputs
    t_train_start = t_first_step = t_first_record = None
    for t, name, msg in records:
        t_first_record = t if t_first_record is None else t_first_record
        if msg.startswith("Running node:"):
            running_since = t
            first_running = t if first_running is None else first_running
            if last_completed is not None:
                gaps += t - last_completed
        elif msg.startswith("Completed node:") and running_since is not None:
            nodes[msg.split(":", 1)[1].strip()] = t - running_since
            running_since, last_completed = None, t
        elif (
            name.endswith("detection.experiment")
            and "Faster R-CNN" in msg
            and t_train_start is None
        ):
            t_train_start = t
        elif name.endswith("detection.trainer") and " step 1/" in msg and t_first_step is None:
            t_first_step = t

    reporting = project / "data" / "08_reporting"
    experiments = sorted(p.parent.name for p in reporting.glob("*/metrics.json"))
    train_s = {
        e: float(json.loads((reporting / e / "metrics.json").read_text())["train_seconds"])
        for e in experiments
    }
    eval_s = {n.split(".")[0]: d for n, d in nodes.items() if n.endswith(".evaluate_model")}
    train_total, eval_total = sum(train_s.values()), sum(eval_s.values())
    overhead = wall - train_total - eval_total
    startup = (t_train_start - t0) if t_train_start else None
    first_step = (t_first_step - t0) if t_first_step else None
    frac_run = overhead / wall
    frac_ref = overhead / REFERENCE_RUN_S
    met_overhead = frac_ref < TARGET_OVERHEAD
    met_startup = startup is not None and startup < TARGET_STARTUP_S

    # where the overhead goes: the phases partition the wall time
    t_end = t0 + wall
    parts = [
        [
            "launch to Kedro's logging set-up (Python start, first Kedro imports)",
            (t_first_record or t0) - t0,
        ],
        [
            "then to the first node (CLI and plugins, session, config loading, pipeline registry "
            "importing "
            "torch / torchvision / great-expectations, catalog)",
            (first_running or t_end) - (t_first_record or t0),
        ],
    ]
    for e in experiments:
        node = nodes.get(f"{e}.train_model")
        if node is not None:
            parts.append(
                [
                    f"`{e}.train_model` outside the trainer (model build, datasets, saving "
                    "model.pt)",
                    node - train_s[e],
                ]
            )
    others = sorted(
        ((n, d) for n, d in nodes.items() if not n.endswith((".train_model", ".evaluate_model"))),
        key=lambda x: -x[1],
    )
    for n, d in others[:8]:
        parts.append([f"node `{n}`", d])
    if len(others) > 8:
        parts.append([f"{len(others) - 8} other nodes", sum(d for _, d in others[8:])])
    parts.append(["catalog loading node inputs between nodes", gaps])
    parts.append(
        ["after the last node (session end, process exit)", t_end - (last_completed or t_end)]
    )
    rest = overhead - sum(p[1] for p in parts)
    if abs(rest) > 0.05:
        parts.append(["unaccounted", rest])

    sample = (
        "a tiny 8-image sample, one experiment"
        if quick
        else "the bundled sample, 60 images of 256 px"
    )
    md = [
        f"`kedro run --pipeline=train` in a fresh process on an isolated copy of the project "
        f"({sample}; experiments {', '.join(f'`{e}`' for e in experiments)}, 1 epoch each). "
        "Peak resident memory of the run "
        f"{C.gib(res['peak_rss_bytes'])}.",
        "",
        C.table(
            ["", "seconds", "share of the run"],
            [
                ["wall time of the command", wall, 1.0],
                [
                    "training (trainer's `train_seconds`, validation included)",
                    train_total,
                    train_total / wall,
                ],
                ["evaluation (`evaluate_model` nodes)", eval_total, eval_total / wall],
                ["**overhead** (the rest)", overhead, frac_run],
                ["start-up: launch to the first training step (model built)", startup, None],
                ["launch to the end of the first training step", first_step, None],
            ],
        ),
        "",
        "Where the overhead goes:",
        "",
        C.table(["part", "seconds"], parts),
        "",
    ]
    note_o = note_s = ""
    if not met_overhead:
        note_o = (
            f"missed by {frac_ref - TARGET_OVERHEAD:.1%} of a 5-minute run "
            f"({overhead - TARGET_OVERHEAD * REFERENCE_RUN_S:.0f} s "
            f"too many); the largest parts: "
            + ", ".join(
                f"{p[0]} {p[1]:.1f} s" for p in sorted(parts, key=lambda p: -(p[1] or 0))[:3]
            )
        )
    if not met_startup:
        note_s = (
            "no training step was logged"
            if startup is None
            else f"missed by {startup - TARGET_STARTUP_S:.1f} s; before training the run imports "
            "torch and Kedro, "
            "validates the dataset with great-expectations, splits it, computes and plots "
            "statistics and "
            "draws the augmentation preview"
        )
    md.append(
        f"Overhead {overhead:.1f} s = **{frac_ref:.1%} of a 5-minute run** (target under "
        f"{TARGET_OVERHEAD:.0%}; {frac_run:.1%} of this {wall:.0f} s run): "
        f"{'met' if met_overhead else 'missed; ' + note_o}."
    )
    md.append("")
    md.append(
        f"Start-up to the first training step **{C.fmt(startup)} s** (target under "
        f"{TARGET_STARTUP_S:g} s): "
        f"{'met' if met_startup else 'missed; ' + note_s}."
    )
    summary = [
        C.target_row(
            "pipeline overhead, share of a 5-minute run",
            f"{frac_ref:.1%} ({overhead:.1f} s)",
            f"< {TARGET_OVERHEAD:.0%}",
            met_overhead,
            note_o,
        ),
        C.target_row(
            "start-up to the first training step",
            f"{C.fmt(startup)} s",
            f"< {TARGET_STARTUP_S:g} s",
            met_startup,
            note_s,
        ),
    ]
    return {
        "title": TITLE,
        "summary": summary,
        "markdown": "\n".join(md),
        "data": {
            "wall_s": wall,
            "train_s": train_s,
            "eval_s": eval_s,
            "overhead_s": overhead,
            "overhead_share_of_run": frac_run,
            "overhead_share_of_5min": frac_ref,
            "startup_s": startup,
            "first_step_end_s": first_step,
            "nodes_s": nodes,
            "peak_rss_bytes": res["peak_rss_bytes"],
            "parts": parts,
        },
    }
