"""Atomic writes leave files with the permissions a plain write would: readable by the team
(mode 0o666 minus the umask) for a new file, the old mode for a replaced one; never mkstemp's
private 0o600. The project's Kedro datasets save atomically and work with `versioned: true`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError as KedroDatasetError
from kedro.io import Version
from matplotlib.figure import Figure

from smallobj_pipeline.datasets import (
    CSVDataset,
    FigureDataset,
    HTMLDataset,
    JSONDataset,
    TorchCheckpointDataset,
)
from smallobj_pipeline.detection.io import write_json, write_text


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        shared = write_json(tmp_path / "metrics.json", {"map_50": 0.5})
        os.umask(0o077)
        private = write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert _mode(shared) == 0o644
    assert _mode(private) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o640)
    write_text(target, "new")
    assert target.read_text() == "new"
    assert _mode(target) == 0o640


# -------------------------------------------------------------- the project's Kedro datasets
def _figure(value):
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, value])
    return fig


DATASETS = {  # class, a value to save, how a loaded value compares to it
    "json": (JSONDataset, "x.json", {"n": np.int64(3)}, lambda data: data["n"]),
    "csv": (CSVDataset, "x.csv", pd.DataFrame({"n": [3]}), lambda data: int(data["n"][0])),
    "html": (HTMLDataset, "x.html", "<p>3</p>", lambda data: data),
    "figure": (FigureDataset, "x.png", _figure(3), lambda data: data[:8]),
}


@pytest.mark.parametrize("kind", list(DATASETS))
def test_datasets_are_versionable_and_keep_older_versions(tmp_path, kind):
    """`versioned: true` works: each save is a new version, the latest loads by default, an older
    one by its version (as `kedro run --load-versions` asks)."""
    cls, name, value, key = DATASETS[kind]
    path = str(tmp_path / name)
    cls(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(value)
    cls(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(value)
    versions = sorted(p.name for p in (tmp_path / name).iterdir())
    assert versions == ["2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"]
    latest = cls(filepath=path, version=Version(None, None))
    assert latest.resolve_load_version() == versions[-1]
    older = cls(filepath=path, version=Version(versions[0], None)).load()
    assert key(older) == key(latest.load())
    assert not [p for p in (tmp_path / name).rglob("*.tmp")]


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path):
    """A save goes to a temporary file renamed onto the target: a writer that fails midway
    leaves the previous file as it was, and no temporary file behind."""
    target = tmp_path / "history.csv"
    dataset = CSVDataset(filepath=str(target))
    dataset.save(pd.DataFrame({"epoch": [1, 2]}))
    before = target.read_bytes()

    class Broken(pd.DataFrame):
        def to_csv(self, path, **kwargs):
            Path(path).write_text("epoch\n1\n")  # half written
            raise OSError("disk full")

    with pytest.raises(KedroDatasetError, match="disk full"):
        dataset.save(Broken({"epoch": [1, 2, 3]}))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]


def test_missing_ok_loads_none_until_saved(tmp_path):
    for dataset in (
        JSONDataset(filepath=str(tmp_path / "registry.json"), missing_ok=True),
        FigureDataset(filepath=str(tmp_path / "curve.png"), missing_ok=True),
        TorchCheckpointDataset(
            str(tmp_path / "model.pt"), version=Version(None, None), missing_ok=True
        ),
    ):
        assert dataset.load() is None
    with pytest.raises(KedroDatasetError):
        JSONDataset(filepath=str(tmp_path / "registry.json")).load()
