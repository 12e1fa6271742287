"""The benchmark runner (``make bench``): a partial or smoke run never overwrites the page of the
last full run, the evaluation benchmark proves the project's numbers equal pycocotools', and a
failing section is reported without losing the others."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import run_all  # noqa: E402


@pytest.fixture
def partial_dir(tmp_path, monkeypatch):
    out = tmp_path / "results"
    monkeypatch.setattr(run_all, "PARTIAL_DIR", out)
    return out


def test_smoke_evaluation_run_writes_results_page_and_keeps_full_page(partial_dir, tmp_path):
    full_page = run_all.FULL_OUT
    before = full_page.read_bytes() if full_page.exists() else None

    rc = run_all.main(["--quick", "--only", "evaluation", "--workdir", str(tmp_path / "work")])

    assert rc == 0
    page = (partial_dir / "benchmarks_quick.md").read_text()
    assert "Smoke run" in page
    assert "python benchmarks/run_all.py --quick --only evaluation" in page
    # the summary row proving equality with pycocotools, and its status
    row = next(
        line
        for line in page.splitlines()
        if line.startswith("| evaluation numbers equal to pycocotools")
    )
    assert "| met |" in row
    raw = json.loads((partial_dir / "benchmarks_quick.json").read_text())
    ev = raw["sections"]["evaluation"]
    assert ev["seconds"] > 0
    assert raw["quick"] is True
    # the full run's page is only written by a full run
    assert (full_page.read_bytes() if full_page.exists() else None) == before


def test_failing_section_is_reported_and_others_kept(partial_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(
        run_all, "SECTIONS", {"evaluation": "bench_evaluation", "broken": "no_such_bench_module"}
    )

    rc = run_all.main(
        ["--quick", "--only", "broken,evaluation", "--workdir", str(tmp_path / "work")]
    )

    assert rc == 1
    page = (partial_dir / "benchmarks_quick.md").read_text()
    assert "This section failed" in page
    assert "No module named 'no_such_bench_module'" in page
    assert "## 2. Evaluation speed" in page
    assert "| evaluation numbers equal to pycocotools" in page


def test_unknown_section_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--only", "througput"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "througput" in err and "throughput" in err


def test_child_peak_memory_is_the_childs_own_not_the_parents(tmp_path):
    """The memory figures come from child processes: a child of a large parent must report its
    own peak (``ru_maxrss`` from ``wait4`` would report the parent's)."""
    import common

    ballast = bytearray(400 * 2**20)  # a 400 MiB parent
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    small = common.run_child([sys.executable, "-c", "pass"], tmp_path / "small.log")
    big = common.run_child(
        [
            sys.executable,
            "-c",
            "import time; b = bytearray(300 * 2**20); b[::4096] = b'1' * len(b[::4096]); "
            "time.sleep(0.3)",
        ],
        tmp_path / "big.log",
    )
    del ballast
    assert small["returncode"] == big["returncode"] == 0
    assert small["peak_rss_bytes"] < 100 * 2**20
    assert 300 * 2**20 <= big["peak_rss_bytes"] < 400 * 2**20


def test_time_to_accuracy_smoke_runs_both_arms_within_the_budget_and_draws_curves(
    tmp_path, monkeypatch
):
    import bench_time_to_accuracy as tta

    first = next(iter(tta.DATASETS))
    monkeypatch.setattr(tta, "DATASETS", {first: tta.DATASETS[first]})
    quick = dict(tta.SETTINGS[("cpu", True)], budgets=(4,))
    monkeypatch.setattr(tta, "SETTINGS", {("cpu", True): quick, ("cuda", True): quick})

    res = tta.run(True, tmp_path)

    loop = res["data"]["results"][f"{first}/4/tutorial loop"]
    project = res["data"]["results"][f"{first}/4/project"]
    for arm in (loop, project):
        assert arm["curve"], "every arm is evaluated at least once"
        assert all(0.0 <= p["map_50"] <= 1.0 for p in arm["curve"])
        seconds = [p["seconds"] for p in arm["curve"]]
        assert seconds == sorted(seconds)
    assert loop["steps"] >= 1 and loop["seconds"] < 4 + 3  # stops at the budget (+ one step)
    assert project["stopped_by"] == "time_budget"
    assert project["seconds"] < 4 + 3
    assert (tmp_path / "time_to_accuracy.png").stat().st_size > 1000
    row = next(line for line in res["markdown"].splitlines() if line.startswith(f"| {first}"))
    assert "| 4 s |" in row
    assert res["summary"][0]["met"] in (True, False)
