"""Simulated annotators and the annotation upsert: one row per annotation, history on edits."""
from __future__ import annotations

import json

import pytest

from medq.errors import MedQError
from medq.storage.annotation import AnnotationRequest, create_annotation_backend
from medq.storage.annotation.base import AnnotationRecord
from medq.storage.annotation.records import _problem, remove_annotations, upsert_annotations
from medq.storage.annotation.simulated import SimulatedAnnotator

TRUTH = {f"img{i}": {"modality": "CT", "verdict": ["good", "usable", "reject"][i % 3],
                     "degradations": [] if i % 3 == 0 else [{"type": "low_dose", "level": i % 3}],
                     "description": "CT. Overall, the quality of this image is " + ["good", "usable", "reject"][i % 3] + "."}
         for i in range(40)}


def _requests(n=40, lane="expert", k=1):
    return [AnnotationRequest(task_id=f"r001:img{i}", round_id="r001", image_id=f"img{i}",
                              lane=lane, uncertainty=0.5, n_annotators=k,
                              prediction={"verdict": "good"}) for i in range(n)]


def test_simulated_answers_are_deterministic_and_follow_error_rate():
    lookup = lambda ids: {i: TRUTH[i] for i in ids}
    a = SimulatedAnnotator(lookup, error_rate=0.0, seed=1)
    a.submit(_requests())
    recs = a.pull()
    assert [r.verdict for r in recs] == [TRUTH[r.image_id]["verdict"] for r in recs]
    b = SimulatedAnnotator(lookup, error_rate=0.5, seed=1)
    b.submit(_requests())
    first, second = b.pull(), b.pull()
    assert [r.to_row() for r in first] == [r.to_row() for r in second]
    wrong = sum(r.verdict != TRUTH[r.image_id]["verdict"] for r in first)
    assert 8 <= wrong <= 32  # about half of 40
    assert all(r.description.endswith(f"is {r.verdict}.") for r in first)


def test_consensus_creates_one_record_per_annotator():
    a = SimulatedAnnotator(lambda ids: {i: TRUTH[i] for i in ids}, error_rate=0.0)
    a.submit(_requests(5, k=3))
    recs = a.pull()
    assert len(recs) == 15 and len({r.annotation_id for r in recs}) == 15


def test_missing_truth_is_a_clear_error():
    a = SimulatedAnnotator(lambda ids: {}, error_rate=0.0)
    a.submit(_requests(1))
    with pytest.raises(MedQError, match="no ground truth for image img0"):
        a.pull()


def test_upsert_is_idempotent_and_keeps_history(workspace):
    cat = workspace.catalog
    a = SimulatedAnnotator(lambda ids: {i: TRUTH[i] for i in ids}, error_rate=0.0)
    a.submit(_requests(10))
    recs = a.pull()
    assert upsert_annotations(cat, recs)["inserted"] == 10
    before = cat.query_df("SELECT * FROM annotations ORDER BY annotation_id")
    assert upsert_annotations(cat, recs) == {"inserted": 0, "updated": 0, "unchanged": 10,
                                             "quarantined": 0}
    after = cat.query_df("SELECT * FROM annotations ORDER BY annotation_id")
    assert before.equals(after)
    edited = recs[0]
    edited.verdict = "reject" if edited.verdict != "reject" else "good"
    assert upsert_annotations(cat, [edited])["updated"] == 1
    row = cat.query("SELECT verdict, version FROM annotations WHERE annotation_id = ?",
                    [edited.annotation_id])[0]
    assert row == {"verdict": edited.verdict, "version": 2}
    hist = cat.query("SELECT version, payload FROM annotation_history")
    assert len(hist) == 1 and json.loads(hist[0]["payload"])["verdict"] != edited.verdict


def test_incomplete_annotations_are_quarantined_with_reason(workspace):
    bad = [AnnotationRecord("x1", "r001:a", "r001", "a", "ann", "expert", verdict=None),
           AnnotationRecord("x2", "r001:b", "r001", "b", "ann", "expert", verdict="fine"),
           AnnotationRecord("x3", "r001:c", "r001", "c", "ann", "expert", verdict="good",
                            degradations=[{"type": "blur", "level": 7}])]
    assert upsert_annotations(workspace.catalog, bad)["quarantined"] == 3
    reasons = {r["ref"]: r["reason"] for r in workspace.catalog.query("SELECT ref, reason FROM quarantine")}
    assert "missing verdict" in reasons["x1"] and "'fine'" in reasons["x2"] and "level 7" in reasons["x3"]
    assert workspace.catalog.scalar("SELECT count(*) FROM annotations") == 0


def test_backend_names(workspace, tmp_path):
    with pytest.raises(MedQError, match="valid: simulated, oracle:LABELS.jsonl, labelstudio"):
        create_annotation_backend(workspace, "crowd")
    with pytest.raises(MedQError, match="oracle labels file not found"):
        create_annotation_backend(workspace, f"oracle:{tmp_path / 'nope.jsonl'}")
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"image_id": "img1", **TRUTH["img1"]}) + "\n")
    backend = create_annotation_backend(workspace, f"oracle:{labels}")
    backend.submit(_requests(2)[1:])
    assert backend.pull()[0].verdict == TRUTH["img1"]["verdict"]


# -- paired comparisons and removed annotations ---------------------------------------------------
def _pair(aid="p1", better="B", verdict=None, **kw):
    return AnnotationRecord(aid, "r001:pair", "r001", "imgA", "ann", "paired", verdict=verdict,
                            description="B is sharper.", better=better, image_b_id="imgB", **kw)


def test_paired_annotations_need_a_choice_not_a_verdict(workspace):
    cat = workspace.catalog
    assert _problem(_pair()) is None
    assert "better must be 'A' or 'B'" in _problem(_pair(better=None))
    assert "better='C'" in _problem(_pair(better="C"))
    assert "'fine'" in _problem(_pair(verdict="fine"))
    # The other lanes are unchanged: a verdict is required, `better` is not looked at.
    assert _problem(AnnotationRecord("x", "t", "r", "i", "a", "expert", verdict=None)) == \
        "missing verdict"
    assert _problem(AnnotationRecord("x", "t", "r", "i", "a", "expert", verdict="good")) is None

    counts = upsert_annotations(cat, [_pair(), _pair("p2", better=None), _pair("p3", better="C")])
    assert counts == {"inserted": 1, "updated": 0, "unchanged": 0, "quarantined": 2}
    row = cat.query("SELECT lane, verdict, better, image_b_id, version FROM annotations")
    assert row == [{"lane": "paired", "verdict": None, "better": "B", "image_b_id": "imgB",
                    "version": 1}]
    reasons = {r["ref"]: r["reason"] for r in cat.query("SELECT ref, reason FROM quarantine")}
    assert "without a choice" in reasons["p2"] and "(task r001:pair)" in reasons["p2"]
    assert "better='C'" in reasons["p3"]
    # Re-upsert: nothing changes; a changed choice is a new version with history.
    assert upsert_annotations(cat, [_pair()])["unchanged"] == 1
    assert upsert_annotations(cat, [_pair(better="A")])["updated"] == 1
    assert cat.query("SELECT better, version FROM annotations") == [{"better": "A", "version": 2}]
    hist = cat.query("SELECT version, payload FROM annotation_history")
    assert len(hist) == 1 and hist[0]["version"] == 1
    assert json.loads(hist[0]["payload"])["better"] == "B"


def test_removed_annotations_keep_a_tombstone_and_resume_versions(workspace):
    cat = workspace.catalog
    rec = AnnotationRecord("ls:7", "r001:a", "r001", "a", "ann", "expert", verdict="usable",
                           degradations=[{"type": "blur", "level": 1}], description="Blur.")
    upsert_annotations(cat, [rec])
    rec.verdict = "reject"
    upsert_annotations(cat, [rec])  # version 2, history holds version 1
    assert remove_annotations(cat, ["ls:7", "ls:unknown"], reason="deleted in Label Studio") == \
        ["ls:7"]
    assert cat.scalar("SELECT count(*) FROM annotations") == 0
    hist = {r["version"]: json.loads(r["payload"]) for r in cat.query(
        "SELECT version, payload FROM annotation_history WHERE annotation_id = 'ls:7'")}
    assert sorted(hist) == [1, 3]
    tomb = hist[3]
    assert tomb["deleted"] is True and tomb["reason"] == "deleted in Label Studio"
    assert tomb["verdict"] == "reject" and tomb["version"] == 2 and tomb["task_id"] == "r001:a"
    assert json.loads(tomb["degradations"]) == [{"type": "blur", "level": 1}]
    assert remove_annotations(cat, ["ls:7"]) == []  # idempotent
    # The same id coming back continues the numbering: history is never overwritten.
    assert upsert_annotations(cat, [rec])["inserted"] == 1
    assert cat.scalar("SELECT version FROM annotations WHERE annotation_id = 'ls:7'") == 4


def test_remove_annotations_is_all_or_nothing(workspace):
    cat = workspace.catalog
    upsert_annotations(cat, [AnnotationRecord("ls:8", "r001:b", "r001", "b", "ann", "expert",
                                              verdict="good")])
    with pytest.raises(RuntimeError), cat.transaction():
        remove_annotations(cat, ["ls:8"])
        raise RuntimeError("crash after the removal, before the commit")
    assert cat.scalar("SELECT count(*) FROM annotations") == 1
    assert cat.scalar("SELECT count(*) FROM annotation_history") == 0


def test_paired_columns_migrate_an_existing_catalog(workspace):
    """A catalog at schema version 2 gains `better` / `image_b_id`; its rows survive."""
    from medq.storage.catalog import LATEST_VERSION, Catalog
    cat = workspace.catalog
    cat.execute("ALTER TABLE annotations DROP COLUMN better")
    cat.execute("ALTER TABLE annotations DROP COLUMN image_b_id")
    cat.execute("DELETE FROM schema_migrations WHERE version >= 3")
    cat.execute("INSERT INTO annotations (annotation_id, task_id, round_id, image_id, verdict) "
                "VALUES ('old', 't', 'r', 'i', 'good')")
    again = Catalog.open(cat.path)
    assert again.schema_version() == LATEST_VERSION >= 3
    assert again.query("SELECT verdict, better, image_b_id FROM annotations") == [
        {"verdict": "good", "better": None, "image_b_id": None}]


def test_human_labels_leave_paired_annotations_out(workspace):
    from medq.tasks.curate import human_labels
    cat = workspace.catalog
    cat.upsert("images", [{"image_id": i, "modality": "CT"} for i in ("imgA", "imgB")])
    upsert_annotations(cat, [
        _pair(),
        AnnotationRecord("e1", "r001:imgA", "r001", "imgA", "ann", "expert", verdict="usable",
                         degradations=[{"type": "low_dose", "level": 1}], description="Noise.")])
    labels = human_labels.fn(str(workspace.root), "r001")
    assert [(lab["image_id"], lab["lane"], lab["verdict"]) for lab in labels] == [
        ("imgA", "expert", "usable")]
