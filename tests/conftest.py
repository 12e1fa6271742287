"""Test-wide settings: no telemetry, headless plotting, small thread pools (CI has 2 cores)."""

import os
import tempfile

for key, value in {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "False",
    "MPLBACKEND": "Agg",
    # the file-hash cache of this test session, not the user's ~/.cache
    "SMALLOBJ_HASH_CACHE": os.path.join(tempfile.mkdtemp(prefix="smallobj-hash-"), "hashes.sqlite"),
}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the tiny seeded runs of tests/interrupt_run.py (restored after)."""
    import interrupt_run as R

    previous = R.set_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def run_data(tmp_path_factory):
    """The 4-image dataset of tests/interrupt_run.py, once per test module."""
    import interrupt_run as R

    return R.make_dataset(tmp_path_factory.mktemp("run") / "data")
