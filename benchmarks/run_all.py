"""Run the benchmarks and write the results as one markdown page.

    python benchmarks/run_all.py              # full run (about 90 min on 2 CPU cores) ->
    docs/benchmarks.md
    python benchmarks/run_all.py --quick      # smoke run (tiny sizes)  ->
    benchmarks/results/benchmarks_quick.md
    python benchmarks/run_all.py --only evaluation,scaling   # some sections ->
    benchmarks/results/...

``make bench`` runs the full one. Every figure of the page comes from the run that wrote it;
ratios compare the project with the alternative measured in the same run on the same machine;
absolute times are for context. The raw numbers go to a JSON file next to the page.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import logging
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402

from smallobj_pipeline.detection.io import write_text  # noqa: E402  (src on the path via common)

SECTIONS = {
    "throughput": "bench_throughput",
    "evaluation": "bench_evaluation",
    "accuracy": "bench_accuracy",
    "time_to_accuracy": "bench_time_to_accuracy",
    "overhead": "bench_overhead",
    "memory": "bench_memory",
    "scaling": "bench_scaling",
    "bitdepth": "bench_bitdepth",
    "large_scenes": "bench_large_scenes",
}
FULL_OUT = C.REPO / "docs" / "benchmarks.md"
PARTIAL_DIR = HERE / "results"


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _status(met: bool | str | None) -> str:
    if met == "report":
        return "reported"
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def render(
    results: dict[str, dict[str, Any]],
    info: dict[str, Any],
    command: str,
    started: _dt.datetime,
    total_s: float,
    quick: bool,
) -> str:
    lines = ["# Benchmarks", ""]
    if quick:
        lines += [
            "> **Smoke run (`--quick`)**: tiny sizes that only check that every benchmark works. "
            "Its figures say nothing about speed or accuracy; `make bench` gives the real ones.",
            "",
        ]
    lines += [
        "The pipeline measured against what a user would write instead, in one run on one machine. "
        "Ratios compare two things measured in this run; absolute times are given for context only "
        "and depend on the machine and its load.",
        "",
        f"- Command: `{command}`" + (" (`make bench`)" if command.endswith("run_all.py") else ""),
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()} (total {total_s / 60:.1f} min)",
        f"- Machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
        f"{info['ram_gib']} GiB RAM ({info['ram_available_gib']} GiB available at the start), "
        f"swap {info['swap_gib']} GiB, {info['os']}",
        f"- Device: {info['device']}; Python {info['python']}, torch {info['torch']}, "
        f"torchvision {info['torchvision']}",
        f"- Load average at the start: {info['load_average']}",
        "",
        "## Summary",
        "",
    ]
    rows = []
    for name, res in results.items():
        if res.get("error"):
            rows.append(
                [res.get("title", name), "failed", "", "**error**", res["error"].splitlines()[-1]]
            )
            continue
        for row in res.get("summary", []):
            rows.append(
                [
                    row["figure"],
                    row["value"],
                    row["target"],
                    _status(row["met"]),
                    row.get("note", ""),
                ]
            )
    lines += [C.table(["figure", "value", "target", "status", "note"], rows), ""]
    for i, (name, res) in enumerate(results.items(), 1):
        lines += [f"## {i}. {res.get('title', name)}", ""]
        if res.get("error"):
            lines += ["This section failed:", "", "```", res["error"].rstrip(), "```", ""]
        else:
            lines += [res["markdown"].rstrip(), ""]
        lines += [f"_Section time: {res['seconds']:.0f} s._", ""]
    lines += [
        "## How to reproduce",
        "",
        "`make bench` (or `PYTHONPATH=src .venv/bin/python benchmarks/run_all.py`) rewrites this "
        "page and "
        "`docs/benchmarks.json` (the raw numbers). `--only SECTION[,SECTION]` runs some sections "
        "and "
        "`--quick` a smoke version; both write under `benchmarks/results/` so this page only ever "
        "holds "
        f"one complete run. Sections: {', '.join(f'`{s}`' for s in SECTIONS)}. The code is in "
        "`benchmarks/`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny sizes, seconds per section"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated sections among {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown output (default: docs/benchmarks.md for a full run of every section, "
        "else benchmarks/results/benchmarks[_quick].md)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch folder for generated data (default: a temporary folder, removed at the end)",
    )
    args = parser.parse_args(argv)

    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    complete = not args.quick and names == list(SECTIONS)
    out = args.out or (
        FULL_OUT
        if complete
        else PARTIAL_DIR / ("benchmarks_quick.md" if args.quick else "benchmarks.md")
    )

    # The trainer logs its epochs, steps and ETA through `logging` (Kedro's handlers in a pipeline
    # run); here a plain stderr handler shows them, so a long section is never silent.
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("PIL", "matplotlib", "great_expectations", "urllib3", "faster_coco_eval"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    command = "python benchmarks/run_all.py" + (
        "".join(" " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    )
    started = _dt.datetime.now().astimezone()
    info = C.machine_info()
    print(f"[bench] {command}: sections {names}; output {out}", file=sys.stderr, flush=True)

    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="smallobj-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    try:
        for name in names:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                module = importlib.import_module(SECTIONS[name])
                res = module.run(args.quick, workdir / name)
            except Exception:  # one failed section must not lose the others
                res = {
                    "title": getattr(sys.modules.get(SECTIONS[name]), "TITLE", name),
                    "error": traceback.format_exc(),
                }
                print(res["error"], file=sys.stderr, flush=True)
            res["seconds"] = time.perf_counter() - start
            results[name] = res
            print(f"[bench] {name} done in {res['seconds']:.1f} s", file=sys.stderr, flush=True)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - t0

    write_text(out, render(results, info, command, started, total, args.quick))
    raw = {
        "command": command,
        "date": started.isoformat(),
        "machine": info,
        "quick": args.quick,
        "total_seconds": total,
        "sections": {
            k: {kk: vv for kk, vv in v.items() if kk != "markdown"} for k, v in results.items()
        },
    }
    write_text(
        out.with_suffix(".json"),
        json.dumps(raw, indent=1, default=_json_default, allow_nan=True) + "\n",
    )
    print(
        f"[bench] wrote {out} and {out.with_suffix('.json')} in {total / 60:.1f} min",
        file=sys.stderr,
        flush=True,
    )
    return 1 if any(r.get("error") for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
