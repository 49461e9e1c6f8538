"""Dashboard load benchmark: 50 rounds of records and a 1M-item pool.

Builds a catalog in bulk (:func:`medq.storage.bulk_catalog.build_catalog`: DuckDB SQL, every
view with consistent data), then measures

1. every data-access function of :mod:`medq.storage.dashboard_queries` (uncached: what a cache miss
   costs; median of `--repeat` runs),
2. the server-side run of the app script for the default view (Streamlit AppTest, no
   browser), cold and warm,
3. the page load of every view through `medq dashboard` in headless Chromium (navigation until
   fully rendered), cold (first visit, empty cache) and warm (second visit), plus the plain HTTP
   fetch of the page and the server's resident memory afterwards.

Prints JSON and writes ``benchmarks/results/dashboard_load.json``.

    .venv/bin/python benchmarks/dashboard_load.py [--pool 1000000] [--rounds 50] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIEWS = ("rounds", "breakdown", "lift", "spend", "retrieval", "gallery", "queue")


def time_data_functions(db: str, repeat: int) -> dict:
    from medq.storage import dashboard_queries as data
    lift_all = data.prototype_lift(db)
    latest = data.round_ids_with_prototypes(db)[0][0]
    calls = {
        "headline": lambda: data.headline(db),
        "rounds": lambda: data.rounds(db),
        "champion_timeline": lambda: data.champion_timeline(db),
        "breakdown": lambda: data.breakdown(db),
        "description_breakdown": lambda: data.description_breakdown(db),
        "prototype_lift(all rounds)": lambda: data.prototype_lift(db),
        "prototype_lift(one round)": lambda: data.prototype_lift(db, (latest,)),
        "lift_summary(all rounds)": lambda: data.lift_summary(lift_all),
        "prototype_gallery": lambda: data.prototype_gallery(db, latest),
        "queue_status": lambda: data.queue_status(db),
        "round_ids_with_prototypes": lambda: data.round_ids_with_prototypes(db),
    }
    out = {}
    for name, fn in calls.items():
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = {"median_ms": round(statistics.median(times) * 1000, 1),
                     "max_ms": round(max(times) * 1000, 1)}
    return out


def time_script(workspace: str) -> dict:
    """Server-side run time of the app script for the default view (Streamlit's AppTest, no
    browser): cold (empty caches) and warm (cached queries), seconds."""
    os.environ["MEDQ_WORKSPACE"] = workspace
    from streamlit.testing.v1 import AppTest

    from medq.dashboards import app_path
    at = AppTest.from_file(str(app_path()), default_timeout=300)
    t = time.perf_counter()
    at.run()
    cold = time.perf_counter() - t
    if at.exception:
        raise RuntimeError(f"the app raised: {at.exception}")
    warm = []
    for _ in range(3):
        t = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t)
    return {"view": "rounds", "cold_s": round(cold, 2), "warm_s": round(statistics.median(warm), 2)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_pages(workspace: str) -> dict:
    from medq.dashboards.browser import Browser, find_chromium
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    medq = Path(sys.executable).with_name("medq")
    cmd = [str(medq)] if medq.is_file() else [sys.executable, "-c", "from medq.cli import main; main()"]
    env = dict(os.environ, MEDQ_WORKSPACE=workspace)
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, "dashboard", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result: dict = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dashboard did not start")
            time.sleep(0.2)
        result["server_start_s"] = round(time.perf_counter() - t0, 2)
        t = time.perf_counter()
        with urllib.request.urlopen(f"{url}/", timeout=30) as r:
            r.read()
        result["http_index_ms"] = round((time.perf_counter() - t) * 1000, 1)
        if find_chromium() is None:
            result["browser"] = "chromium not installed: render times not measured"
            return result
        pages = {}
        with Browser(width=1440, height=1000) as b:
            for view in VIEWS:
                cold = b.open(f"{url}/{view}", timeout_s=180)
                warm = b.open(f"{url}/{view}", timeout_s=180)
                pages[view] = {"cold_s": round(cold, 2), "warm_s": round(warm, 2)}
        result["pages"] = pages
        try:
            import psutil
            result["server_rss_mb"] = round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)
        except Exception:  # noqa: BLE001, S110 - optional measurement
            pass
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--eval-mcq", type=int, default=2000)
    ap.add_argument("--eval-desc", type=int, default=400)
    ap.add_argument("--candidates", type=int, default=2000, help="retrieved per round")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None,
                    help="build the workspace here and keep it (default: a temporary folder)")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                    "dashboard_load.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = args.keep or Path(tempfile.mkdtemp(prefix="medq-dashboard-load-")) / "ws"
    if root.exists():
        shutil.rmtree(root)
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        from medq.storage.bulk_catalog import build_catalog
        built = build_catalog(root, pool=args.pool, rounds=args.rounds, eval_mcq=args.eval_mcq,
                              eval_desc=args.eval_desc, candidates=args.candidates, log=log)
        log("timing data functions ...")
        functions = time_data_functions(built["catalog"], args.repeat)
        log("timing the app script (no browser) ...")
        script = time_script(str(root))
        pages = {} if args.no_browser else (log("timing pages ...") or time_pages(str(root)))
    finally:
        if args.keep is None:
            shutil.rmtree(root.parent, ignore_errors=True)
    import duckdb as _duckdb
    import streamlit as _st
    result = {"benchmark": "dashboard_load", "when": datetime.now().isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "duckdb": _duckdb.__version__, "streamlit": _st.__version__,
                          "load_avg_1m": round(os.getloadavg()[0], 2)},
              "params": {k: v for k, v in vars(args).items() if k not in ("keep", "out")},
              "catalog": {k: built[k] for k in ("build_s", "catalog_mb", "rows")},
              "data_functions_uncached": functions, "app_script_run": script,
              "page_load": pages}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
