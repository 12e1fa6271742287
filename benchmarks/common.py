"""Shared helpers of the benchmarks: project paths and parameters, datasets, timing, machine
facts, child processes with their exact peak memory, GPU utilisation, markdown tables."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
if str(SRC) not in sys.path:  # `python benchmarks/run_all.py` without PYTHONPATH=src
    sys.path.insert(0, str(SRC))

import yaml  # noqa: E402

# Environment every child process gets (the Makefile exports the same for `make run`).
QUIET_ENV = {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "False",
    "MPLBACKEND": "Agg",
}
for _k, _v in QUIET_ENV.items():
    os.environ.setdefault(_k, _v)


# ---------------------------------------------------------------------- project parameters
@functools.cache
def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "conf" / "base" / name).read_text())


def experiment_defaults() -> dict[str, Any]:
    """``experiment_defaults`` of ``conf/base/parameters_experiments.yml`` (a fresh copy)."""
    return copy.deepcopy(_yaml("parameters_experiments.yml")["experiment_defaults"])


def base_experiments() -> dict[str, Any]:
    return copy.deepcopy(_yaml("parameters_experiments.yml").get("experiments") or {})


def data_params() -> dict[str, Any]:
    return copy.deepcopy(_yaml("parameters_data.yml"))


# ---------------------------------------------------------------------- datasets
def generate(out_dir: Path, **kwargs: Any):
    """A generated dataset (cached in ``out_dir``), loaded as a :class:`CocoDataset`."""
    from smallobj_pipeline.detection.data.coco import CocoDataset
    from smallobj_pipeline.detection.data.sample import dataset_exists, generate_sample_dataset

    marker = out_dir / "bench_args.json"
    wanted = json.dumps(kwargs, sort_keys=True)
    if not (dataset_exists(out_dir) and marker.is_file() and marker.read_text() == wanted):
        if out_dir.exists():
            shutil.rmtree(out_dir)
        generate_sample_dataset(out_dir, **kwargs)
        marker.write_text(wanted)
    return CocoDataset.from_dir(out_dir)


def sample_kwargs(quick: bool) -> dict[str, Any]:
    """The bundled sample's generator arguments (``dataset.sample`` in parameters_data.yml)."""
    sample = data_params()["dataset"]["sample"]
    kwargs = {k: v for k, v in sample.items() if k != "root"}
    if quick:
        kwargs.update(num_images=12, image_size=128)
    return kwargs


def sample_dataset(workdir: Path, quick: bool):
    """The bundled sample dataset with the pipeline's split (``split`` of parameters_data.yml)."""
    from smallobj_pipeline.detection.data.split import assign_splits

    coco = generate(workdir / ("sample_quick" if quick else "sample"), **sample_kwargs(quick))
    split = data_params()["split"]
    return assign_splits(coco, split["ratios"], int(split["seed"]), bool(split["use_existing"]))


def with_splits(coco, train: Sequence[int], val: Sequence[int] = (), test: Sequence[int] = ()):
    from smallobj_pipeline.detection.data.split import with_splits as split_with

    return split_with(coco, {"train": list(train), "val": list(val), "test": list(test)})


def resolved_config(name: str, coco, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The experiment config the pipeline would resolve for ``coco`` (stats of its train split)."""
    from smallobj_pipeline.detection.data.stats import compute_stats
    from smallobj_pipeline.detection.engine.experiment import resolve_experiment

    return resolve_experiment(name, experiment_defaults(), overrides or {}, compute_stats(coco))


# ---------------------------------------------------------------------- device and machine
def device():
    from smallobj_pipeline.detection.evaluation.inference import select_device

    return select_device("auto")


def sync(dev) -> None:
    import torch

    if getattr(dev, "type", str(dev)) == "cuda":
        torch.cuda.synchronize()


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[key] = int(parts[0]) * 1024
    return out


def available_ram() -> int:
    """Bytes the kernel says can be allocated without swapping (MemAvailable)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return _meminfo().get("MemAvailable", 0)


def total_ram() -> int:
    return _meminfo().get("MemTotal", 0)


def swap_total() -> int:
    return _meminfo().get("SwapTotal", 0)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    import torch
    import torchvision

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(total_ram() / 2**30, 1),
        "ram_available_gib": round(available_ram() / 2**30, 1),
        "swap_gib": round(swap_total() / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "device": "cpu",
        "load_average": [round(v, 2) for v in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["device"] = f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return info


# ---------------------------------------------------------------------- timing
@contextlib.contextmanager
def timed(out: dict[str, float], key: str, dev=None) -> Iterator[None]:
    sync(dev)
    start = time.perf_counter()
    try:
        yield
    finally:
        sync(dev)
        out[key] = time.perf_counter() - start


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def median(values: Sequence[float]) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else 0.5 * (v[mid - 1] + v[mid])


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``; returns ``(a, b)``."""
    import numpy as np

    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(a), float(b)


# ---------------------------------------------------------------------- child processes
def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(QUIET_ENV)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def vm_hwm_bytes(pid: int | str = "self") -> int | None:
    """Peak resident set size of a process's current address space (``VmHWM`` of
    ``/proc/<pid>/status``); None when the process is gone or the file has no such line.

    Not ``wait4``/``getrusage``'s ``ru_maxrss``: on Linux that survives ``exec`` and, for a child
    started by ``subprocess`` (vfork + exec), starts at the *parent's* peak, so a child of a
    3 GiB benchmark process would report at least 3 GiB whatever it used."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return None


def run_child(
    cmd: Sequence[str],
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``cmd`` with stdout+stderr to ``log_path``; returns ``returncode``, ``wall_s``,
    ``start_time`` (epoch seconds just before the launch) and ``peak_rss_bytes``, the child's own
    peak resident memory: its ``VmHWM``, a high-water mark kept by the kernel and read every
    50 ms while it runs (only growth in its last 50 ms could be missed; its own children are
    excluded). A child that prints its own ``vm_hwm_bytes()`` at exit gives the exact figure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    with open(log_path, "wb") as log:
        start_time = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=env or child_env(), stdout=log, stderr=subprocess.STDOUT
        )
        deadline = None if timeout is None else start + timeout
        while True:
            peak = max(peak, vm_hwm_bytes(proc.pid) or 0)
            pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, _usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "start_time": start_time,
        "peak_rss_bytes": peak,
        "log": str(log_path),
    }


def tail(path: str | Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""


# ---------------------------------------------------------------------- GPU utilisation
class GpuUtilisation:
    """Samples GPU utilisation (%) in a thread while in the ``with`` block: ``torch.cuda.
    utilization()`` (needs pynvml) or ``nvidia-smi``. ``mean`` is None where neither works."""

    def __init__(self, dev, period: float = 0.1):
        self.active = getattr(dev, "type", str(dev)) == "cuda"
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._query = self._pick_query() if self.active else None

    @staticmethod
    def _pick_query():
        import torch

        try:
            torch.cuda.utilization()
            return lambda: float(torch.cuda.utilization())
        except Exception:
            pass
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return None
        index = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"

        def query() -> float:
            out = subprocess.run(
                [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", index],
                capture_output=True,
                text=True,
                timeout=5,
            )
            return float(out.stdout.strip().splitlines()[0])

        try:
            query()
        except Exception:
            return None
        return query

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(self._query())
            self._stop.wait(self.period)

    def __enter__(self) -> GpuUtilisation:
        if self._query is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


# ---------------------------------------------------------------------- markdown
def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # nan
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return (v if isinstance(v, str) else fmt(v)).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def gib(n_bytes: float | None) -> str:
    return "n/a" if n_bytes is None else f"{n_bytes / 2**30:.2f} GiB"


def target_row(
    figure: str, value: str, target: str, met: bool | str | None, note: str = ""
) -> dict[str, Any]:
    """One line of the summary table; ``met``: True / False against a target, ``"report"`` for a
    figure without a target, None = not measured here."""
    return {"figure": figure, "value": value, "target": target, "met": met, "note": note}
