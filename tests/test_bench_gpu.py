"""`make bench-gpu` is ready for the first GPU: its dry run goes through every section on the CPU
(trainer vs tutorial, the speed settings, batch 2/4/8, a 2-process gloo DDP epoch through the
project's launcher, the resume check) and writes the page and JSON where it is told, never over
docs/benchmarks-gpu.md; without a GPU a plain run stops with a message saying why."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_gpu.py"
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?(e-?\d+)?$")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rows(page: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] not in ("section", "---"):
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-gpu")
    docs_page = REPO / "docs" / "benchmarks-gpu.md"
    before = docs_page.read_bytes() if docs_page.exists() else None
    proc = _run("--dry-run", "--out", str(out), "--workdir", str(out / "work"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (docs_page.read_bytes() if docs_page.exists() else None) == before
    return (
        proc,
        (out / "benchmarks-gpu.md").read_text(),
        json.loads((out / "benchmarks-gpu.json").read_text()),
    )


def test_dry_run_fills_every_section_of_the_table_with_numbers(dry_run):
    proc, page, _ = dry_run
    assert "Dry run" in page and "| section | run | images/s |" in proc.stdout
    rows = _rows(page)
    sections = {section for section, _ in rows}
    assert sections == {"trainer vs tutorial", "speed settings", "batch size", "DDP", "resume"}
    speed = [key for key in rows if key[0] in ("trainer vs tutorial", "speed settings")]
    runs = " ".join(run for _, run in speed)
    for needed in ("tutorial loop", "project trainer", "mixed precision", "channels-last",
                   "loader workers", "cudnn.benchmark"):  # fmt: skip
        assert needed in runs, needed
    assert {run for s, run in rows if s == "batch size"} == {"batch 2", "batch 4", "batch 8"}
    for key in [*speed, *(k for k in rows if k[0] in ("batch size", "DDP"))]:
        assert NUMBER.match(rows[key][0]) and float(rows[key][0].replace(",", "")) > 0, key
    project = next(v for k, v in rows.items() if k[1].startswith("project trainer"))
    assert re.search(r"x\d+\.\d+ the tutorial's images/s", project[3])
    ((ddp_run, ddp),) = [(run, v) for (s, run), v in rows.items() if s == "DDP"]
    assert ddp_run == "2 CPU processes, gloo" and "loss" in ddp[3]


def test_dry_run_resume_on_cpu_is_bit_identical_and_the_json_has_every_figure(dry_run):
    _, page, raw = dry_run
    ((resume,),) = [[v[3]] for (s, _), v in _rows(page).items() if s == "resume"]
    assert resume.startswith("bit-identical"), resume
    sections = raw["sections"]
    assert not [name for name, res in sections.items() if "error" in res or "skipped" in res]
    assert sections["resume"]["resumed_epochs"] == [1, 2]
    assert sections["resume"]["epochs_before_cut"] == 1
    assert sections["ddp"]["processes"] == 2 and sections["ddp"]["launched"] is True
    assert sections["loops"]["ratio"] > 0 and raw["dry_run"] is True


def test_makefile_runs_it_with_bench_args():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^bench-gpu: install\n\t\$\(VENV\)/bin/python benchmarks/bench_gpu.py "
                     r"\$\(BENCH_ARGS\)$", makefile, re.M)  # fmt: skip
    assert re.search(r"^\.PHONY:.* bench-gpu", makefile, re.M)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_without_a_gpu_a_plain_run_stops_and_says_why(tmp_path):
    proc = _run("--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert "no CUDA GPU" in proc.stderr and "--dry-run" in proc.stderr
    assert not list(tmp_path.iterdir())
