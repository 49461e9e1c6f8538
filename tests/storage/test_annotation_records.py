"""Simulated annotators and the annotation upsert: one row per annotation, history on edits."""
from __future__ import annotations

import json

import pytest

from medq.errors import MedQError
from medq.storage.annotation import AnnotationRequest, create_annotation_backend
from medq.storage.annotation.base import AnnotationRecord
from medq.storage.annotation.records import upsert_annotations
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
