"""Shared helpers of the benchmark scripts: machine description, result files, timers.

Every result file under ``benchmarks/results/`` is one JSON object with at least
``benchmark`` (name), ``generated_at`` (UTC, ISO 8601) and ``machine`` (:func:`machine_info`),
written atomically (a crash never leaves half a file that ``run_all.py`` would read).

Scripts import this module as ``_common`` (the ``benchmarks/`` folder is on ``sys.path`` when a
script runs from it; :func:`setup_paths` also puts the repository root there so ``medq`` and
``tests`` import from the checkout).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"


def setup_paths() -> None:
    """Repository root and benchmarks/ on sys.path; offline, quiet defaults for the libraries
    the loop imports (set before they are imported)."""
    for p in (str(ROOT), str(BENCH_DIR)):
        if p not in sys.path:
            sys.path.insert(0, p)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads on shared cores
    os.environ.setdefault("MPLBACKEND", "Agg")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_gib() -> float | None:
    try:
        import psutil
        return round(psutil.virtual_memory().total / 2 ** 30, 1)
    except ImportError:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2 ** 20, 1)
        except OSError:
            return None
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info() -> dict[str, Any]:
    """Commit of the checkout and whether tracked files differ from it (read-only git calls)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:  # noqa: BLE001 - a missing package is just "not installed"
        return None


def machine_info(extra_packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """CPU model, logical cores (and the ones this process may use), RAM, load, GPU, Python and
    library versions, git commit. Cheap (no heavy imports except an already-imported torch)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    gpu = None
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(0)
    packages = ("medq", "numpy", "torch", "faiss-cpu", "duckdb", "prefect", "hdbscan",
                "great-expectations", "matplotlib") + tuple(extra_packages)
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "cores_usable": usable,
        "mem_gib": _mem_gib(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "gpu": gpu, "python": platform.python_version(), "platform": platform.platform(),
        "versions": {p: _version(p) for p in packages},
        "git": git_info(),
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path | str, payload: dict[str, Any]) -> Path:
    """Write `payload` as indented JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def write_result(name: str, payload: dict[str, Any], out: Path | str | None = None,
                 machine: dict[str, Any] | None = None) -> Path:
    """``benchmarks/results/<name>.json`` (or `out`) with ``benchmark``, ``generated_at`` and
    ``machine`` added in front of `payload`'s keys."""
    body = {"benchmark": name, "generated_at": now_iso(),
            "machine": machine or payload.get("machine") or machine_info()}
    body.update({k: v for k, v in payload.items() if k not in body})
    return write_json(Path(out) if out else RESULTS / f"{name}.json", body)


@contextlib.contextmanager
def timed(store: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall seconds of the block to ``store[key]``."""
    t = time.perf_counter()
    try:
        yield
    finally:
        store[key] = store.get(key, 0.0) + time.perf_counter() - t


def mean_std(values: list[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (None for one value), min, max, n of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else None
    return {"mean": m, "std": sd, "min": min(xs), "max": max(xs), "n": len(xs)}
