"""Pool manifest benchmark: build time and size on disk of an N-row manifest, render speed of
rows on demand, and (optionally) registration of the rows into a fresh workspace catalog.

Usage: ``.venv/bin/python benchmarks/manifest_build.py [--size 1000000] [--register]``
(default 100,000 rows). Prints one JSON object. Not a timed test: numbers depend on the machine
and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=100_000, help="rows (pool images)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--render", type=int, default=200, help="rows to render after building")
    ap.add_argument("--register", action="store_true", help="also register into a workspace")
    ap.add_argument("--keep", type=Path, default=None, help="write the manifest here and keep it")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medq-bench-manifest-"))
    path = args.keep or tmp / "pool.parquet"
    try:
        _run(args, path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the catalog of a 1M registration is ~1 GB


def _run(args, path: Path, tmp: Path) -> None:
    import numpy as np

    from medq.storage.pool_manifest import PoolManifest, build_manifest, register_pool
    built = build_manifest(path, args.size, args.seed, image_size=args.image_size)
    out = {"benchmark": "manifest_build", "rows": built.rows, "build_seconds": built.seconds,
           "rows_per_second": round(built.rows / built.seconds, 1),
           "bytes": built.bytes, "megabytes": round(built.bytes / 1e6, 2),
           "bytes_per_row": round(built.bytes / built.rows, 2), "verdicts": built.verdicts,
           "cpu_count": os.cpu_count(),
           "python": platform.python_version(), "machine": platform.machine()}

    manifest = PoolManifest(path)
    rng = np.random.default_rng(0)
    rows = sorted(rng.choice(len(manifest), size=min(args.render, len(manifest)), replace=False))
    t = time.perf_counter()
    manifest.bases({r for refs in manifest.meta["refs"].values() for r in refs})
    out["load_bases_seconds"] = round(time.perf_counter() - t, 3)  # once per process
    t = time.perf_counter()
    manifest.render(rows)
    dt = time.perf_counter() - t
    out["render_images_per_second"] = round(len(rows) / dt, 1)

    if args.register:
        from medq.settings import load_settings
        from medq.storage.workspace import Workspace
        ws = Workspace.init(load_settings(workspace=tmp / "ws"))
        reg = register_pool(ws, path)
        out["register_seconds"] = reg.seconds
        out["register_rows_per_second"] = round(reg.rows / reg.seconds, 1)
        out["catalog_megabytes"] = round(ws.settings.catalog_path.stat().st_size / 1e6, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
