"""The annotate step (:func:`annotate`): queue the round's human-lane items, hand them to the
annotation backend, wait for the batch (bounded), pull the annotations back; and its
operations, also used outside a round (A/B pairs, on-demand pulls).

Task ids are stable (``<round>:<image>``), so submitting again after a crash re-creates
nothing, and pulling again upserts the same annotation rows.
"""
from __future__ import annotations

import threading
from typing import Any

from prefect.cache_policies import NO_CACHE

from medq.errors import MedQError
from medq.storage import loop_records
from medq.storage.annotation import AnnotationRequest, create_annotation_backend
from medq.storage.annotation.records import upsert_annotations
from medq.storage.catalog import loads
from medq.tasks._runtime import (
    CLIENT_RETRIES,
    fault_point,
    loop_flow,
    loop_task,
    open_workspace,
    step_logger,
)
from medq.tasks.rounds import load_checkpoint, save_checkpoint

_BACKENDS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def backend_for(workspace: str, name: str):
    """One backend instance per (workspace, name) and process (keeps connections and the
    in-process simulated queue alive between submit and pull)."""
    with _LOCK:
        key = (str(workspace), name)
        if key not in _BACKENDS:
            _BACKENDS[key] = create_annotation_backend(open_workspace(workspace), name)
        return _BACKENDS[key]


def _requests(workspace: str, round_id: str) -> list[AnnotationRequest]:
    ws = open_workspace(workspace)
    rows = loop_records.annotation_request_rows(ws.catalog, round_id)
    consensus = ws.settings.annotation.consensus
    return [AnnotationRequest(task_id=r["task_id"], round_id=r["round_id"], image_id=r["image_id"],
                              lane=r["lane"], uncertainty=float(r["uncertainty"] or 0.0),
                              image_key=r["object_key"], modality=r["modality"],
                              prediction=loads(r["prediction"]),
                              n_annotators=consensus if r["lane"] == "expert" else 1)
            for r in rows]


@loop_task(name="queue-annotation-tasks", retries=2, retry_delay_seconds=1)
def queue_tasks(workspace: str, round_id: str, annotator: str, model_version: str) -> int:
    """Record one annotation task per human-lane route (expert, verify, spot-checked auto)."""
    ws = open_workspace(workspace)
    routes = loop_records.human_lane_routes(ws.catalog, round_id)
    rows = []
    for r in routes:
        lane = "verify" if r["lane"] == "auto" else r["lane"]  # spot-checks are verified
        probs = loads(r["probs"], {})
        prediction = ({"verdict": r["predicted"], "score": max(probs.values()) if probs else None,
                       "model_version": model_version} if r["predicted"] else None)
        rows.append({"task_id": f"{round_id}:{r['image_id']}", "round_id": round_id,
                     "image_id": r["image_id"], "lane": lane, "backend": annotator,
                     "status": "queued", "uncertainty": r["entropy"], "prediction": prediction})
    known = loop_records.round_task_ids(ws.catalog, round_id)
    ws.catalog.upsert("annotation_tasks", [r for r in rows if r["task_id"] not in known])
    return len(rows)


@loop_task(name="submit-annotation-tasks", **CLIENT_RETRIES)
def submit_tasks(workspace: str, round_id: str, annotator: str) -> int:
    """Send the round's tasks to the backend (idempotent) and record their external ids."""
    requests = _requests(workspace, round_id)
    external = backend_for(workspace, annotator).submit(requests)
    fault_point("annotate:submitted")
    open_workspace(workspace).catalog.upsert("annotation_tasks", [
        {"task_id": t, "external_id": str(e), "status": "sent"} for t, e in external.items()])
    step_logger().info("round %s: %d annotation tasks with %s", round_id, len(requests), annotator)
    return len(requests)


@loop_task(name="collect-annotations", **CLIENT_RETRIES)
def collect_annotations(workspace: str, round_id: str, annotator: str, timeout_s: float,
                        poll_s: float) -> dict[str, Any]:
    """Wait (up to `timeout_s`) until the round's tasks are done, pulling progressively, then
    upsert every finished annotation (idempotent; edits bump the version with history)."""
    from medq.storage.labelstudio import LabelStudioBackend, pull_into_catalog, wait_for_batch
    ws = open_workspace(workspace)
    backend = backend_for(workspace, annotator)
    requests = _requests(workspace, round_id)
    backend.submit(requests)  # idempotent; re-arms an in-process backend after a restart
    task_ids = [r.task_id for r in requests]
    waited = wait_for_batch(backend, task_ids, timeout_s=timeout_s, poll_interval_s=poll_s,
                            workspace=ws)
    if isinstance(backend, LabelStudioBackend):
        counts = pull_into_catalog(ws, backend, task_ids)
    else:
        records = backend.pull(task_ids)
        counts = upsert_annotations(ws.catalog, records)
        ws.catalog.upsert("annotation_tasks", [{"task_id": t, "status": "done"}
                                               for t in {r.task_id for r in records}])
    logger = step_logger()
    if waited.state != "done":
        logger.warning("round %s: %s; continuing with the annotations that are done",
                       round_id, waited.message)
    done = loop_records.annotation_count(ws.catalog, round_id)
    if task_ids and not done:
        raise MedQError(f"round {round_id}: no annotations came back from {annotator} for "
                        f"{len(task_ids)} tasks within {timeout_s:.0f} s ({waited.message})")
    keep = ("inserted", "updated", "unchanged", "quarantined", "deleted")
    return {"tasks": len(task_ids), "pending": waited.status.pending, "wait": waited.state,
            **{k: counts.get(k, 0) for k in keep}}


# -- outside a round: paired comparisons and on-demand pulls (Label Studio) --------------------
def pair_task_id(round_id: str, image_a: str, image_b: str) -> str:
    """Stable id of the comparison of `image_a` (A) with `image_b` (B) in `round_id`."""
    return f"{round_id}:pair:{image_a}:{image_b}"


@loop_task(name="submit-pairs", cache_policy=NO_CACHE, **CLIENT_RETRIES)
def submit_pairs(workspace: str, pairs: list[tuple[str, str]], round_id: str) -> dict[str, Any]:
    """Send A/B comparisons of catalog images to Label Studio's paired project.

    `pairs`: (image A, image B) image ids; the annotator says which has the better quality (the
    answers land in ``annotations.better`` on the next pull). Idempotent: a pair already sent is
    not sent again. Unknown image ids or an image compared with itself fail before anything is
    recorded."""
    from medq.storage.labelstudio import LabelStudioBackend
    ws = open_workspace(workspace)
    pairs = [(str(a), str(b)) for a, b in pairs]
    same = [a for a, b in pairs if a == b]
    if same:
        raise MedQError(f"pairs compare an image with itself: {same[:5]}")
    image_ids = sorted({i for p in pairs for i in p})
    images = loop_records.image_keys(ws.catalog, image_ids)
    unknown = [i for i in image_ids if i not in images]
    if unknown:
        raise MedQError(f"{len(unknown)} image id(s) of the pairs are not in the catalog "
                        f"{ws.catalog.path}: {unknown[:5]}")
    ids = list(dict.fromkeys(pair_task_id(round_id, a, b) for a, b in pairs))
    known = loop_records.known_task_ids(ws.catalog, ids)
    ws.catalog.upsert("annotation_tasks", [
        {"task_id": pair_task_id(round_id, a, b), "round_id": round_id, "image_id": a,
         "lane": "paired", "backend": "labelstudio", "status": "queued", "uncertainty": 0.0,
         "prediction": {"image_b_id": b, "image_b_key": images[b]["object_key"]}}
        for a, b in dict.fromkeys(pairs) if pair_task_id(round_id, a, b) not in known])
    backend = backend_for(workspace, "labelstudio")
    if not isinstance(backend, LabelStudioBackend):  # pragma: no cover - registry invariant
        raise MedQError("paired comparisons need the Label Studio backend")
    wanted = set(ids)  # the round's other tasks are not ours to (re)send; deleted ones stay gone
    external = backend.submit([r for r in _requests(workspace, round_id) if r.task_id in wanted])
    return {"pairs": len(ids), "new": len(wanted - known), "sent": len(external),
            "round_id": round_id, "project": backend.project_id("paired")}


@loop_task(name="pull-annotations", cache_policy=NO_CACHE, **CLIENT_RETRIES)
def pull_annotations(workspace: str, full: bool = False) -> dict[str, Any]:
    """Pull every Label Studio annotation of the workspace's tasks into the catalog now (late
    annotations, edits, deletions, paired comparisons); see
    :func:`medq.storage.labelstudio.pull_into_catalog`. `full`: re-read every annotated task
    instead of those updated since the last pull of this process."""
    from medq.storage.labelstudio import pull_into_catalog
    ws = open_workspace(workspace)
    counts = pull_into_catalog(ws, backend_for(workspace, "labelstudio"), None, full=full)
    return {k: v for k, v in counts.items() if k not in ("deleted_tasks", "removed_annotations")}


@loop_flow(name="annotate")
def annotate(workspace: str, round_id: str, annotator: str, model_version: str,
             timeout_s: float = 600.0, poll_s: float = 2.0) -> dict[str, Any]:
    """Queue, submit to `annotator` (a backend name), wait up to `timeout_s` seconds (polling
    every `poll_s`), pull; stores the checkpoint. Returns {"queued", ...pull record}."""
    done = load_checkpoint(workspace, round_id, "annotate")
    if done is not None:
        return done
    queued = queue_tasks(workspace, round_id, annotator, model_version)
    submit_tasks(workspace, round_id, annotator)
    pulled = collect_annotations(workspace, round_id, annotator, timeout_s, poll_s)
    return save_checkpoint(workspace, round_id, "annotate", {"queued": queued, **pulled})
