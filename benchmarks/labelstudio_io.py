"""Label Studio I/O: import time for N tasks and pull time for N annotations (default 10,000).

Usage: ``.venv/bin/python benchmarks/labelstudio_io.py [--n 10000] [--url URL --token TOKEN]``.
Without ``--url`` a private server is started through ``infra/labelstudio.sh`` on a free port with
a fresh data dir (and stopped after). Prints one JSON object and writes it to
``benchmarks/results/labelstudio_io.json``.

What is timed, end to end through MedQ's adapter (:mod:`medq.storage.labelstudio`):

- ``import``: ``LabelStudioBackend.submit`` of N verify-lane tasks, each with a pre-annotation
  (model version, score) and the ``uncertainty`` field, in chunks of ``--chunk``, including the
  idempotency look-up and the catalog writes of the external ids;
- ``resubmit``: the same call again (everything known: nothing is imported);
- ``pull``: :func:`pull_into_catalog` of N annotations that were created in bulk beforehand
  (tasks imported with an annotation each, not timed): fetch from Label Studio, convert, upsert
  N rows into the catalog in one transaction;
- ``repull``: the same pull again (incremental: nothing changed, nothing written).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOKEN = "medq0bench0token00000000000000000000000c"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A private Label Studio for the benchmark (fresh data dir, stopped on exit)."""

    def __init__(self, tmp: Path):
        self.data = tmp / "ls-data"
        self.data.mkdir()
        self.port = _free_port()
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("MEDQ_LS_")},
                    "MEDQ_LS_PORT": str(self.port), "MEDQ_LS_DATA_DIR": str(self.data),
                    "MEDQ_LS_TOKEN": TOKEN, "MEDQ_LS_FILES_ROOT": str(tmp),
                    "MEDQ_LS_START_TIMEOUT": "300"}
        services = Path(os.environ.get("MEDQ_SERVICES_DIR") or REPO / ".services")
        template = services / "labelstudio-template" / "label_studio.sqlite3"
        if template.is_file():  # a migrated empty database: starts in seconds
            shutil.copy2(template, self.data / template.name)
        for action in ("install", "start"):
            proc = subprocess.run(["bash", str(REPO / "infra" / "labelstudio.sh"), action],
                                  env=self.env, capture_output=True, text=True, timeout=900, check=False)
            if proc.returncode != 0:
                self.stop()
                sys.exit(f"labelstudio.sh {action} failed: {proc.stderr.strip()[-2000:]}")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        subprocess.run(["bash", str(REPO / "infra" / "labelstudio.sh"), "stop"], env=self.env,
                       capture_output=True, timeout=120, check=False)


def _images(ws, n: int, distinct: int = 64) -> list[str]:
    """`n` image rows sharing `distinct` stored PNGs (the import never downloads pixels)."""
    from PIL import Image

    from medq.storage.objects import content_key
    rng = np.random.default_rng(0)
    keys = []
    for _ in range(distinct):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "PNG")
        keys.append(ws.objects.put_bytes(content_key(buf.getvalue()), buf.getvalue()))
    ids = [f"bench{i:06d}" for i in range(n)]
    ws.catalog.upsert("images", [{"image_id": iid, "object_key": keys[i % distinct],
                                  "modality": "MRI"} for i, iid in enumerate(ids)])
    return ids


def _requests(ids: list[str], round_id: str, lane: str):
    from medq.storage.annotation.base import AnnotationRequest
    rng = np.random.default_rng(1)
    verdicts = ("good", "usable", "reject")
    return [AnnotationRequest(task_id=f"{round_id}:{iid}", round_id=round_id, image_id=iid,
                              lane=lane, uncertainty=float(rng.random()), modality="MRI",
                              prediction={"verdict": verdicts[i % 3], "score": 0.7,
                                          "model_version": "bench-v1"})
            for i, iid in enumerate(ids)]


def _bulk_annotated(backend, reqs) -> None:
    """Tasks that already carry one annotation each, imported in bulk (setup, not timed)."""
    from medq.storage.labelstudio import BACKEND_NAME
    from medq.storage.labelstudio.label_configs import labels_to_result
    pid = backend.ensure_project("expert")
    result = labels_to_result({"verdict": "usable", "degradations": [{"type": "motion", "level": 1}],
                               "description": "Mild motion. Overall, the quality of this image is "
                                              "usable."})
    me = backend.client.check()["id"]
    backend._known_keys([r.image_id for r in reqs])  # one catalog query, not one per task
    rows = []
    for s in range(0, len(reqs), 1000):
        part = reqs[s:s + 1000]
        payload = [{**backend._task_payload(r, "expert"),
                    "annotations": [{"result": result, "completed_by": me, "lead_time": 12.0}]}
                   for r in part]
        resp = backend.client.call("bulk import annotated tasks",
                                   backend.client.sdk.projects.import_tasks, pid, request=payload,
                                   return_task_ids=True)
        rows += [{"task_id": r.task_id, "round_id": r.round_id, "image_id": r.image_id,
                  "lane": r.lane, "backend": BACKEND_NAME, "external_id": str(i), "status": "sent",
                  "uncertainty": r.uncertainty} for r, i in zip(part, resp.task_ids)]
    backend.workspace.catalog.upsert("annotation_tasks", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--url")
    ap.add_argument("--token")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "labelstudio_io.json")
    args = ap.parse_args()

    from medq.settings import load_settings
    from medq.storage import loop_records
    from medq.storage.labelstudio import LabelStudioBackend, pull_into_catalog
    from medq.storage.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="medq-ls-bench-")).resolve()
    server = None
    try:
        if args.url:
            url, token, files_root = args.url, args.token or TOKEN, "/"
        else:
            t0 = time.perf_counter()
            server = _Server(tmp)
            url, token, files_root = server.url, TOKEN, str(tmp)
            start_s = time.perf_counter() - t0
        settings = load_settings(workspace=tmp / "ws", labelstudio={
            "url": url, "token": token, "project_title": f"bench-{tmp.name}",
            "local_files_root": files_root, "import_chunk": args.chunk, "timeout_s": 300})
        ws = Workspace.init(settings)
        ids = _images(ws, 2 * args.n)
        backend = LabelStudioBackend(ws)
        backend.ensure_project("verify")
        backend.ensure_project("expert")

        verify = _requests(ids[:args.n], "bench-import", "verify")
        t0 = time.perf_counter()
        sent = backend.submit(verify)
        import_s = time.perf_counter() - t0
        assert len(sent) == args.n, len(sent)
        t0 = time.perf_counter()
        again = backend.submit(verify)
        resubmit_s = time.perf_counter() - t0
        assert again == sent

        annotated = _requests(ids[args.n:], "bench-pull", "expert")
        t0 = time.perf_counter()
        _bulk_annotated(backend, annotated)
        bulk_s = time.perf_counter() - t0
        task_ids = [r.task_id for r in annotated]
        fresh = LabelStudioBackend(ws)  # a new process' view: no cursor, full pull
        t0 = time.perf_counter()
        pulled = pull_into_catalog(ws, fresh, task_ids)
        pull_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        repulled = pull_into_catalog(ws, fresh, task_ids)
        repull_s = time.perf_counter() - t0
        rows = loop_records.annotation_total(ws.catalog)
        assert pulled["inserted"] == rows == args.n, (pulled, rows)
        assert repulled["inserted"] == repulled["updated"] == 0

        out = {
            "benchmark": "labelstudio_io", "n": args.n, "chunk": args.chunk,
            "import_s": round(import_s, 2), "import_tasks_per_s": round(args.n / import_s, 1),
            "resubmit_s": round(resubmit_s, 2),
            "bulk_annotated_import_s": round(bulk_s, 2),
            "pull_s": round(pull_s, 2), "pull_annotations_per_s": round(args.n / pull_s, 1),
            "repull_s": round(repull_s, 2),
            "server": url if args.url else "private (infra/labelstudio.sh)",
            "server_start_s": round(start_s, 1) if server else None,
            "label_studio": backend.client.get_json("read version", "/api/version").get("release"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1m": round(os.getloadavg()[0], 2)},
        }
        backend.close()
        fresh.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
