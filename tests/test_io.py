"""Atomic writes leave files with the permissions a plain write would: readable by the team
(mode 0o666 minus the umask) for a new file, the old mode for a replaced one; never mkstemp's
private 0o600."""

from __future__ import annotations

import os
import stat

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
