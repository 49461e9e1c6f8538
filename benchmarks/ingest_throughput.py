"""Ingest throughput on this machine: images/s for PNG and DICOM folders (and re-ingest).

Usage: ``.venv/bin/python benchmarks/ingest_throughput.py [--n 200] [--size 256]``. Prints one
JSON object. Every file has unique pixels (seeded noise over a smooth image), so every file is
decoded, hashed, PNG-encoded, thumbnailed, written to the local object store and recorded in the
catalog. The DICOMs are pydicom's CT_small.dcm (128x128, 16-bit) with new pixels and PHI-bearing
tags, so de-identification, rescale and windowing are part of the measurement.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _write_pngs(folder: Path, n: int, size: int) -> None:
    from PIL import Image
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 120 + 80 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    folder.mkdir(parents=True)
    for i in range(n):
        img = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:05d}.png")


def _write_dicoms(folder: Path, n: int) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(1)
    base = template.pixel_array.astype(np.int32)
    folder.mkdir(parents=True)
    for i in range(n):
        ds = template.copy()
        px = np.clip(base + rng.normal(0, 15, base.shape), 0, 4095).astype(base.dtype)
        ds.PixelData = px.astype(template.pixel_array.dtype).tobytes()
        ds.PatientName = f"Bench^Patient{i}"
        ds.PatientID = f"ID{i:06d}"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.9.7777.{i + 1}"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        (folder / f"ct{i:05d}.dcm").write_bytes(buf.getvalue())


def _run(ws, folder: Path, split: str) -> dict:
    from medq.storage.ingest import ingest
    t0 = time.perf_counter()
    s = ingest(ws, str(folder), split)
    dt = time.perf_counter() - t0
    n = s.ingested + s.skipped_existing
    return {"files": s.files, "images": n, "ingested": s.ingested,
            "quarantined": s.n_quarantined, "seconds": round(dt, 3),
            "images_per_s": round(n / dt, 2) if dt else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="Files per format.")
    parser.add_argument("--size", type=int, default=256, help="PNG side in pixels.")
    args = parser.parse_args()
    from medq.settings import load_settings
    from medq.storage.workspace import Workspace
    with tempfile.TemporaryDirectory(prefix="medq-bench-ingest-") as tmp:
        root = Path(tmp)
        _write_pngs(root / "png", args.n, args.size)
        _write_dicoms(root / "dicom", args.n)
        ws = Workspace.init(load_settings(workspace=root / "ws"))
        result = {
            "benchmark": "ingest_throughput",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "png": {"size": args.size, **_run(ws, root / "png", "pool")},
            "dicom": {"source": "CT_small.dcm 128x128 16-bit", **_run(ws, root / "dicom", "pool")},
            "png_reingest_noop": _run(ws, root / "png", "pool"),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
