"""Label Studio -> catalog: one pull written in one transaction (annotations with history on
edits, quarantine for incomplete ones and its resolution, removed annotations, deleted tasks),
after every network call has succeeded.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from medq.storage.annotation.base import AnnotationRecord
from medq.storage.labelstudio.backend import LabelStudioBackend


def pull_into_catalog(workspace, backend: LabelStudioBackend, task_ids: Sequence[str] | None = None,
                      *, full: bool = False) -> dict[str, Any]:
    """Pull annotations of `task_ids` (all tasks of the workspace when None) and write them to the
    catalog in one transaction.

    One row per annotation (``annotations``); re-pulling changes nothing; an edited annotation
    updates its row, bumps ``version`` and keeps the previous content in ``annotation_history``
    (see :func:`medq.storage.annotation.records.upsert_annotations`). Paired comparisons (lane
    ``paired``) are stored like the others, with ``better`` ("A" / "B"), ``image_b_id`` and a NULL
    verdict. Annotations with missing or invalid fields (no verdict; for a pair, no A / B choice)
    go to ``quarantine`` (stage ``annotation``) with the reason.

    Annotations deleted in Label Studio: for every asked task whose annotation list this pull read
    from the server (:meth:`LabelStudioBackend.pull_refreshed`), the task's ``ls:<id>`` rows that
    Label Studio no longer returns are deleted from ``annotations``; their last content stays in
    ``annotation_history`` at the next version, marked ``"deleted": true``
    (:func:`~medq.storage.annotation.records.remove_annotations`). ``full=True`` always catches
    deletions; an incremental pull catches one only if Label Studio moved the task's
    ``updated_at`` (it reads only tasks updated since the previous pull). Annotations of tasks
    deleted from Label Studio are kept: deleting a task takes it out of the queue, it does not
    retract the finished work (the task is marked ``deleted`` in ``annotation_tasks``).

    Tasks gone from Label Studio are marked ``deleted`` in ``annotation_tasks``, finished ones
    ``done`` (and ``sent`` again when a done task is waiting for annotations once more). A
    quarantined annotation that was fixed or deleted in Label Studio leaves ``quarantine``
    (``resolved``). Network first, then one transaction: a failure leaves the catalog as it was.

    Returns counts: annotations (pulled), inserted, updated, unchanged, quarantined, removed
    (rows of annotations deleted in Label Studio), resolved (quarantine rows dropped), paired
    (valid paired annotations pulled), done,
    deleted, pending, plus `deleted_tasks` and `removed_annotations` (their ids)."""
    from medq.storage.annotation.records import _problem, remove_annotations, upsert_annotations

    records, refreshed = backend.pull_refreshed(task_ids, full=full)
    asked = list(task_ids) if task_ids is not None else list(backend._catalog_tasks(None))
    states = backend.task_states(asked)
    bad: list[tuple[AnnotationRecord, str | None]] = []
    good: list[tuple[AnnotationRecord, str | None]] = []
    for rec in records:
        problem = _problem(rec)
        (bad if problem else good).append((rec, problem))
    current = {t: ids for t, ids in refreshed.items() if states.get(t) != "deleted"}
    catalog = workspace.catalog
    with catalog.transaction() as tx:
        counts = upsert_annotations(catalog, [r for r, _ in good])
        quarantine = [{"quarantine_id": f"annotation:{rec.annotation_id}", "stage": "annotation",
                       "ref": rec.annotation_id, "round_id": rec.round_id,
                       "reason": f"{problem} (task {rec.task_id}, annotator {rec.annotator}, "
                                 f"Label Studio task {rec.raw.get('ls_task_id')})",
                       "payload": rec.to_row()} for rec, problem in bad]
        tx.upsert("quarantine", quarantine)
        stale: list[str] = []
        tasks = sorted(current)
        for s in range(0, len(tasks), 5000):
            stale += [r["annotation_id"] for r in tx.query(
                "SELECT annotation_id, task_id FROM annotations WHERE annotation_id LIKE 'ls:%' "
                "AND task_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY annotation_id",
                [tasks[s:s + 5000]]) if r["annotation_id"] not in current[r["task_id"]]]
        removed = remove_annotations(catalog, stale, reason="deleted in Label Studio")
        resolved = _resolve_quarantine(tx, [r.annotation_id for r, _ in good], current)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        # pending in LS -> "sent" again, but only for a task we had marked done (its annotations
        # were deleted or it was reopened); queued / failed tasks keep their own state
        changes = [{"task_id": t, "status": "sent" if s == "pending" else s, "updated_at": now}
                   for t, s in states.items() if s in ("done", "deleted", "pending")]
        if changes:
            status = {r["task_id"]: r["status"] for r in tx.query(
                "SELECT task_id, status FROM annotation_tasks WHERE task_id IN "
                "(SELECT unnest(?::VARCHAR[]))", [[c["task_id"] for c in changes]])}
            tx.upsert("annotation_tasks", [
                c for c in changes if status.get(c["task_id"]) not in (None, c["status"])
                and (c["status"] != "sent" or status.get(c["task_id"]) == "done")])
    deleted = sorted(t for t, s in states.items() if s == "deleted")
    return {"annotations": len(records), **counts, "quarantined": counts["quarantined"] + len(bad),
            "removed": len(removed), "resolved": resolved,
            "done": sum(s == "done" for s in states.values()),
            "deleted": len(deleted), "pending": sum(s == "pending" for s in states.values()),
            "deleted_tasks": deleted, "removed_annotations": removed,
            "paired": sum(r.lane == "paired" for r, _ in good)}


def _resolve_quarantine(tx, stored: Sequence[str], current: dict[str, set[str]]) -> int:
    """Drop the annotation-quarantine rows that no longer describe a problem: the annotation was
    fixed in Label Studio (it is among `stored` now), or deleted there (its task was read in this
    pull, `current`: task_id -> its annotation ids, and it is no longer listed). Only the rows of
    those annotations and tasks are read. Returns how many rows were dropped."""
    if not stored and not current:
        return 0
    rows = tx.query(
        "SELECT quarantine_id, ref, json_extract_string(payload, '$.task_id') AS task_id "
        "FROM quarantine WHERE stage = 'annotation' AND ref LIKE 'ls:%' AND (ref IN "
        "(SELECT unnest(?::VARCHAR[])) OR json_extract_string(payload, '$.task_id') IN "
        "(SELECT unnest(?::VARCHAR[])))", [list(stored), list(current)])
    ok = set(stored)
    drop = [r["quarantine_id"] for r in rows
            if r["ref"] in ok or (r["task_id"] in current and r["ref"] not in current[r["task_id"]])]
    if drop:
        tx.execute("DELETE FROM quarantine WHERE quarantine_id IN (SELECT unnest(?::VARCHAR[]))",
                   [drop])
    return len(drop)
