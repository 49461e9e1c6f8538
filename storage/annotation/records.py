"""Writing pulled annotations into the catalog: exactly one row per annotation, with history.

Re-pulling the same annotations changes nothing; an annotation whose content changed (an
annotator edited it) is updated in place, its ``version`` bumped and the previous content kept in
``annotation_history``. Annotations missing required fields go to quarantine with a reason
instead. Everything happens in one transaction, so a crash never leaves half a pull behind.

Paired (A/B comparison, lane ``paired``) annotations are stored like the others, with ``better``
("A" or "B") and ``image_b_id`` set and usually no verdict: for them ``better`` is required and the
verdict is not.

:func:`remove_annotations` deletes rows whose annotation is gone from the backend (an annotator
deleted it in Label Studio); their last content stays in ``annotation_history`` as a tombstone
version (``{"deleted": true, ...}``). An annotation id that comes back after that (or after any
history) continues its version numbering, so history rows are never overwritten.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from medq.engine.taxonomy import VERDICTS
from medq.storage.annotation.base import AnnotationRecord
from medq.storage.catalog import Catalog, dumps

PAIRED_LANE = "paired"
BETTER_CHOICES = ("A", "B")
# Fields whose change makes a new annotation version.
_CONTENT = ("verdict", "degradations", "description", "modality", "accepted_prediction", "annotator",
            "better")
# Columns of a removed row kept in its tombstone (besides _CONTENT).
_TOMBSTONE = ("task_id", "round_id", "image_id", "lane", "image_b_id", "version",
              "external_updated_at", "raw", "created_at", "updated_at")


def _problem(rec: AnnotationRecord) -> str | None:
    """Why `rec` cannot be stored (None: it can). Lane ``paired`` needs `better` in A/B and no
    verdict; every other lane needs a known verdict. Degradations need a type and level 1/2."""
    problems = (rec.raw or {}).get("problems")  # found by the backend's parser (Label Studio)
    if problems:
        return "; ".join(map(str, problems))
    if rec.lane == PAIRED_LANE:
        if rec.better is None or rec.better == "":
            return "paired comparison without a choice (better must be 'A' or 'B')"
        if rec.better not in BETTER_CHOICES:
            return f"paired comparison better={rec.better!r} (expected 'A' or 'B')"
        if rec.verdict not in (None, "") and rec.verdict not in VERDICTS:
            return f"verdict {rec.verdict!r} not in {list(VERDICTS)}"
    elif rec.verdict is None or rec.verdict == "":
        return "missing verdict"
    elif rec.verdict not in VERDICTS:
        return f"verdict {rec.verdict!r} not in {list(VERDICTS)}"
    for d in rec.degradations or []:
        if not isinstance(d, dict) or "type" not in d or "level" not in d:
            return f"degradation entry without type/level: {d!r}"
        if int(d["level"]) not in (1, 2):
            return f"degradation {d['type']!r} has level {d['level']!r} (expected 1 or 2)"
    return None


def upsert_annotations(catalog: Catalog, records: Sequence[AnnotationRecord]) -> dict[str, int]:
    """Upsert `records`; returns counts {inserted, updated, unchanged, quarantined}."""
    counts = {"inserted": 0, "updated": 0, "unchanged": 0, "quarantined": 0}
    if not records:
        return counts
    ids = [r.annotation_id for r in records]
    with catalog.transaction() as tx:
        existing = {r["annotation_id"]: r for r in tx.query(
            "SELECT * FROM annotations WHERE annotation_id IN (SELECT unnest(?::VARCHAR[]))", [ids])}
        # Ids with history but no row (removed earlier, now back): continue their numbering.
        fresh = [i for i in dict.fromkeys(ids) if i not in existing]
        last_version = {r["annotation_id"]: int(r["v"]) for r in tx.query(
            "SELECT annotation_id, max(version) AS v FROM annotation_history WHERE annotation_id "
            "IN (SELECT unnest(?::VARCHAR[])) GROUP BY annotation_id", [fresh])} if fresh else {}
        rows, history, quarantine = [], [], []
        for rec in records:
            problem = _problem(rec)
            if problem:
                quarantine.append({"quarantine_id": f"annotation:{rec.annotation_id}",
                                   "stage": "annotation", "ref": rec.annotation_id,
                                   "reason": f"{problem} (task {rec.task_id})",
                                   "round_id": rec.round_id, "payload": rec.to_row()})
                counts["quarantined"] += 1
                continue
            row = rec.to_row()
            old = existing.get(rec.annotation_id)
            if old is None:
                row["version"] = last_version.get(rec.annotation_id, 0) + 1
                rows.append(row)
                counts["inserted"] += 1
                continue
            new_content = {k: (dumps(row[k]) if k == "degradations" else row[k]) for k in _CONTENT}
            old_content = {k: old[k] for k in _CONTENT}
            if new_content == old_content:
                counts["unchanged"] += 1
                continue
            history.append({"annotation_id": rec.annotation_id, "version": old["version"],
                            "payload": {k: old[k] for k in _CONTENT}})
            row["version"] = int(old["version"]) + 1
            row["updated_at"] = _now()
            rows.append(row)
            counts["updated"] += 1
        tx.upsert("annotation_history", history)
        tx.upsert("annotations", rows)
        tx.upsert("quarantine", quarantine)
    return counts


def remove_annotations(catalog: Catalog, annotation_ids: Sequence[str], *,
                       reason: str = "deleted in the annotation backend") -> list[str]:
    """Delete the rows of `annotation_ids` (ids without a row are ignored), keeping each row's
    last content in ``annotation_history`` at the next version with ``"deleted": true``, the
    reason and the time. One transaction (joins the caller's). Returns the ids removed; running
    it again removes nothing."""
    ids = list(dict.fromkeys(annotation_ids))
    if not ids:
        return []
    now = _now()
    with catalog.transaction() as tx:
        old = tx.query("SELECT * FROM annotations WHERE annotation_id IN "
                       "(SELECT unnest(?::VARCHAR[])) ORDER BY annotation_id", [ids])
        if not old:
            return []
        history = []
        for r in old:
            payload = {k: _plain(r.get(k)) for k in (*_CONTENT, *_TOMBSTONE)}
            payload.update({"deleted": True, "deleted_at": now.isoformat(), "reason": reason})
            history.append({"annotation_id": r["annotation_id"], "version": int(r["version"]) + 1,
                            "payload": payload})
        tx.upsert("annotation_history", history)
        tx.execute("DELETE FROM annotations WHERE annotation_id IN (SELECT unnest(?::VARCHAR[]))",
                   [[r["annotation_id"] for r in old]])
    return [r["annotation_id"] for r in old]


def _plain(value):
    return value.isoformat() if isinstance(value, datetime) else value


def _now():
    from datetime import timezone
    return datetime.now(timezone.utc).replace(tzinfo=None)
