"""Champions with history, without training: champions/<version>/model.pt files and registries
written as a retrain writes them (record_decision), then the real rollback pipeline through a
Kedro session; the retrain lock with concurrent claimants in separate processes; a rollback
killed while writing the registry (the fault injection of tests/test_interruptions.py).

The end-to-end retrain -> promote -> rollback run is in tests/test_predict_retrain.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from kedro_project import cli_params, make_project, run_pipeline

from smallobj_pipeline import run_lock
from smallobj_pipeline.detection.checkpoint import load_checkpoint, save_checkpoint
from smallobj_pipeline.detection.engine.registry import (
    NoPreviousChampion,
    champion_history,
    record_decision,
    record_rollback,
)
from smallobj_pipeline.detection.evaluation.predict import resolve_model_path
from smallobj_pipeline.detection.io import write_json
from smallobj_pipeline.pipelines.retraining import lock
from smallobj_pipeline.pipelines.retraining.lock import ChampionsBusy

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120
VERSIONS = ["2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z", "2026-01-03T00.00.00.000Z"]

# A `kedro run` of a pipeline that dies (os._exit, no cleanup) at the atomic rename of the first
# file whose name ends with argv[3] (argv[4:]: runtime params as `--params` gives them).
KILLED_AT_RENAME = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from omegaconf import OmegaConf

    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(sys.argv[3]):
            os._exit(9)
        real_replace(src, dst)

    os.replace = replace
    project = Path(sys.argv[1])
    bootstrap_project(project)
    params = OmegaConf.to_container(OmegaConf.from_dotlist(sys.argv[4:]))
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=[sys.argv[2]])
""")

# Claims the retrain lock of argv[1], says so, holds it until stdin gets a line (or it is killed).
CLAIMANT = textwrap.dedent("""
    import sys
    from smallobj_pipeline.pipelines.retraining import lock
    try:
        claim = lock.claim(sys.argv[1])
    except lock.ChampionsBusy as exc:
        print("BUSY", exc.message.replace(chr(10), " "), flush=True)
        raise SystemExit(75)
    print("CLAIMED", flush=True)
    sys.stdin.readline()
    lock.release(claim)
""")


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "SMALLOBJ_LOCK_WAIT"}
    out["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), out.get("PYTHONPATH", "")])
    out.update({"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "MPLBACKEND": "Agg"})
    return out


def _project(tmp_path: Path, models: str = "data/06_models") -> Path:
    retrain = {
        "experiment": "r18_small_object",
        "metric": "map_50",
        "margin": 0.0,
        "challenger_dir": f"{models}/challenger",
        "lock_dir": models,
        "rollback_reason": "manual rollback",
    }
    project = make_project(tmp_path, {"retrain": retrain})
    (project / "conf/local/globals.yml").write_text(f"models_dir: {models}\n")
    return project


def _promote(registry: dict | None, models: Path, version: str, value: float) -> dict:
    """What a promoting retrain writes: champions/<version>/{model.pt,metrics.json}, then the
    registry (returned and saved)."""
    _, registry = record_decision(
        registry, {"map_50": value}, None if registry is None else {"map_50": 0.0}, "map_50",
        0.0, "f" * 16, "prod", version,
    )  # fmt: skip
    folder = models / "champions" / version
    save_checkpoint({"model": {"w": torch.full((3,), value)}}, folder / "model.pt")
    write_json(folder / "metrics.json", registry["champion"])
    write_json(models / "registry.json", registry)
    return registry


def _champion_weight(project: Path) -> float:
    """The first weight of the model `make predict` (predict.model: champion) loads."""
    models = project / "data/06_models"
    path = resolve_model_path("champion", models, models / "registry.json")
    return float(load_checkpoint(path)["model"]["w"][0])


def _registry(project: Path) -> dict:
    return json.loads((project / "data/06_models/registry.json").read_text())


def test_rollback_restores_each_previous_champion_then_stops_clearly(tmp_path):
    project = _project(tmp_path)
    models = project / "data/06_models"
    registry = None
    for i, version in enumerate(VERSIONS, start=1):
        registry = _promote(registry, models, version, float(i))
    assert _champion_weight(project) == 3.0

    run_pipeline(project, "rollback", runtime_params=cli_params("retrain.rollback_reason=drift"))
    after = _registry(project)
    assert after["champion"]["version"] == VERSIONS[1] and _champion_weight(project) == 2.0
    decision = after["decisions"][-1]
    assert decision["kind"] == "rollback" and decision["reason"] == "drift"
    assert (decision["from_version"], decision["to_version"]) == (VERSIONS[2], VERSIONS[1])
    assert len(after["decisions"]) == 4 and decision["time"]

    run_pipeline(project, "rollback")
    assert _registry(project)["champion"]["version"] == VERSIONS[0]
    assert _champion_weight(project) == 1.0
    before = (models / "registry.json").read_bytes()
    with pytest.raises(NoPreviousChampion, match="is the only one in the history"):
        run_pipeline(project, "rollback")
    assert (models / "registry.json").read_bytes() == before  # refused: nothing written
    assert sorted(p.name for p in (models / "champions").iterdir()) == VERSIONS  # none deleted


def test_rollback_before_any_champion_fails_clearly(tmp_path):
    project = _project(tmp_path)
    with pytest.raises(NoPreviousChampion, match="names no champion yet.*make retrain"):
        run_pipeline(project, "rollback")
    assert not (project / "data/06_models/registry.json").exists()
    # the failed run released the retrain lock too: nothing of it held by this process
    assert not [p for p in run_lock.held_by_this_process() if "06_models" in p]


def test_a_promotion_after_a_rollback_builds_on_the_restored_champion():
    registry = None
    for version in VERSIONS[:2]:
        _, registry = record_decision(
            registry, {"map_50": 0.5}, None, "map_50", -1, "f", "e", version
        )
    _, registry = record_rollback(registry, "bad", "test registry")
    _, registry = record_decision(
        registry, {"map_50": 0.6}, {"map_50": 0.5}, "map_50", 0, "f", "e", VERSIONS[2]
    )
    assert [c["version"] for c in registry["history"]] == [VERSIONS[0], VERSIONS[2]]
    _, registry = record_rollback(registry, "worse", "test registry")
    assert registry["champion"]["version"] == VERSIONS[0]  # the rolled-back one is skipped
    kinds = [d["kind"] for d in registry["decisions"]]
    assert kinds == ["retrain", "retrain", "rollback", "retrain", "rollback"]


def test_a_registry_from_before_champions_still_resolves_and_migrates_on_promotion(tmp_path):
    """Kedro-versioned champion/model.pt/<version>/model.pt and a registry without history."""
    project = _project(tmp_path)
    models = project / "data/06_models"
    legacy = models / "champion/model.pt" / VERSIONS[0] / "model.pt"
    save_checkpoint({"model": {"w": torch.full((3,), 7.0)}}, legacy)
    old = {"champion": {"version": VERSIONS[0], "metrics": {"map_50": 0.4}}, "decisions": []}
    write_json(models / "registry.json", old)
    assert _champion_weight(project) == 7.0  # predict still finds it
    with pytest.raises(NoPreviousChampion, match="only one in the history"):
        run_pipeline(project, "rollback")
    assert champion_history(old) == [old["champion"]]
    _promote(old, models, VERSIONS[1], 8.0)
    assert _champion_weight(project) == 8.0
    run_pipeline(project, "rollback")  # back to the legacy file, loaded by the rollback node
    assert _registry(project)["champion"]["version"] == VERSIONS[0]
    assert _champion_weight(project) == 7.0


def test_rollback_to_a_missing_model_file_leaves_the_registry(tmp_path):
    project = _project(tmp_path)
    models = project / "data/06_models"
    registry = _promote(None, models, VERSIONS[0], 1.0)
    _promote(registry, models, VERSIONS[1], 2.0)
    (models / "champions" / VERSIONS[0] / "model.pt").unlink()
    before = (models / "registry.json").read_bytes()
    with pytest.raises(Exception, match=f"no champions/{VERSIONS[0]}/model.pt.*dvc pull"):
        run_pipeline(project, "rollback")
    assert (models / "registry.json").read_bytes() == before


def _start_claimant(lock_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMANT, str(lock_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )


def test_two_concurrent_claimants_one_wins_the_other_is_told_who_holds_it(tmp_path):
    """Two processes claim the same models folder at once: exactly one gets it; the other stops
    with a message naming the holder's pid and command."""
    procs = [_start_claimant(tmp_path) for _ in range(2)]
    try:
        lines = {p.pid: p.stdout.readline().strip() for p in procs}
        winners = [pid for pid, line in lines.items() if line == "CLAIMED"]
        losers = [pid for pid, line in lines.items() if line.startswith("BUSY")]
        assert len(winners) == 1 and len(losers) == 1, lines
        message = lines[losers[0]]
        assert f"pid {winners[0]}" in message and str(tmp_path) in message
        assert "Two retraining runs at once are refused" in message
    finally:
        for p in procs:
            if p.poll() is None:
                p.communicate("\n", timeout=TIMEOUT)
    assert sorted(p.returncode for p in procs) == [0, 75]
    lock.release(lock.claim(tmp_path))  # free again once the winner released it


def test_a_rollback_from_another_checkout_sharing_the_models_folder_is_refused(tmp_path):
    """The data-folder lock (data/.run.lock) is per checkout; the retrain lock is on the shared
    models folder: a second checkout's run is refused while a retrain holds it, then runs once
    the holder is gone (killed: the OS drops the lock)."""
    shared = tmp_path / "shared_models"
    project = _project(tmp_path / "checkout_b", models=str(shared))
    registry = _promote(None, shared, VERSIONS[0], 1.0)
    _promote(registry, shared, VERSIONS[1], 2.0)
    before = (shared / "registry.json").read_bytes()
    holder = _start_claimant(shared)
    try:
        assert holder.stdout.readline().strip() == "CLAIMED"
        with pytest.raises(ChampionsBusy, match=f"pid {holder.pid} .*refused") as exc:
            run_pipeline(project, "rollback")
        assert exc.value.exit_code == 75
        assert (shared / "registry.json").read_bytes() == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=TIMEOUT)
    run_pipeline(project, "rollback")
    assert json.loads((shared / "registry.json").read_text())["champion"]["version"] == VERSIONS[0]


def test_a_rollback_killed_while_writing_the_registry_leaves_the_previous_one(tmp_path):
    project = _project(tmp_path)
    models = project / "data/06_models"
    registry = _promote(None, models, VERSIONS[0], 1.0)
    _promote(registry, models, VERSIONS[1], 2.0)
    before = (models / "registry.json").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AT_RENAME, str(project), "rollback", "registry.json"],
        env=env(),
        cwd=project,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 9, proc.stderr[-3000:]
    assert (models / "registry.json").read_bytes() == before  # whole, and the previous one
    assert _champion_weight(project) == 2.0
    assert list(models.glob(".registry.json.*.tmp"))  # the dead writer's half-done temporary
    run_pipeline(project, "rollback")  # the next run is not blocked, and cleans up
    assert _champion_weight(project) == 1.0
    assert not list(models.glob(".registry.json.*.tmp"))
