"""Curation suite: a good batch passes; each rule catches its defect; training-set mixing."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medq.engine.curate import CurationConfig, CurationError, curate_batch, mix_training_set
from medq.engine.taxonomy import verdict_sentence

VERDICT_LEVEL = {"good": [], "usable": [{"type": "blur", "level": 1}],
                 "reject": [{"type": "motion", "level": 2}]}
LANES = ["expert", "verify", "auto"]


def good_batch(n: int = 30) -> pd.DataFrame:
    rows = []
    for i in range(n):
        verdict = ["good", "usable", "reject"][i % 3]
        lane = LANES[i % 3]
        rows.append({"item_id": f"it{i}", "image_id": f"img{i}", "modality": ["CT", "MRI"][i % 2],
                     "verdict": verdict, "degradations": VERDICT_LEVEL[verdict],
                     "description": f"Image {i} shows some detail. {verdict_sentence(verdict)}",
                     "lane": lane, "label_source": lane, "eval_distance": 0.3 + 0.01 * i,
                     "image_hash": f"h{i}"})
    return pd.DataFrame(rows)


EVAL_HASHES = ["eh1", "eh2"]
EVAL_IDS = ["eval-img-1"]


def run(df, **kw):
    return curate_batch(df, eval_hashes=EVAL_HASHES, eval_image_ids=EVAL_IDS, **kw)


def test_good_batch_passes():
    rep = run(good_batch())
    assert rep.passed, rep.markdown()
    assert rep.n_rows == rep.n_clean == 30 and not rep.quarantined
    assert rep.clean_item_ids == [f"it{i}" for i in range(30)]
    assert rep.verdict_counts == {"good": 10, "usable": 10, "reject": 10}
    assert all(c.success for c in rep.checks)
    assert "Curation PASSED" in rep.markdown()
    json.dumps(rep.to_dict())  # JSON-safe for the catalog


DEFECTS = {
    "bad_verdict": (lambda r: r.update(verdict="excellent"), "verdict 'excellent' not in"),
    "verdict_mismatch": (lambda r: r.update(verdict="reject", degradations=VERDICT_LEVEL["reject"]),
                         "description says 'good' but verdict is 'reject'"),
    "no_verdict_sentence": (lambda r: r.update(description="Looks fine to me."),
                            "ends with the verdict sentence"),
    "missing_description": (lambda r: r.update(description=None), "description present"),
    "bad_level": (lambda r: r.update(degradations=[{"type": "blur", "level": 3}]), "levels 1 or 2"),
    "bad_level_json": (lambda r: r.update(degradations='[{"type": "blur", "level": 0}]'),
                       "levels 1 or 2"),
    "eval_hash": (lambda r: r.update(image_hash="eh2"), "exact duplicate of an eval image"),
    "eval_image_id": (lambda r: r.update(image_id="eval-img-1"), "not an eval image"),
    "near_eval": (lambda r: r.update(eval_distance=1e-5), "near-duplicate of an eval image"),
    "lane_mismatch": (lambda r: r.update(lane="auto", label_source="expert"),
                      "label source 'expert' inconsistent with lane 'auto'"),
    "unknown_lane": (lambda r: r.update(lane="crowd", label_source="crowd"), "unknown lane 'crowd'"),
    "unknown_modality": (lambda r: r.update(modality="PET-banana"), "unknown modality"),
}


@pytest.fixture(scope="module")
def defect_report():
    """One batch (one GX run) with every defect on its own row: defect i on row it{3 * i}."""
    rows = good_batch(60).to_dict("records")
    where = {}
    for i, name in enumerate(sorted(DEFECTS)):
        r = dict(rows[3 * i])  # rows 0, 3, 6, ... are 'good' expert rows
        DEFECTS[name][0](r)
        rows[3 * i] = r
        where[name] = r["item_id"]
    return run(pd.DataFrame(rows)), where


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_row_rule_quarantines_its_defect(defect, defect_report):
    rep, where = defect_report
    quarantined = {q.item_id: q for q in rep.quarantined}
    assert set(quarantined) == set(where.values()), rep.markdown()
    reasons = quarantined[where[defect]].reasons
    assert any(DEFECTS[defect][1] in r for r in reasons), reasons
    assert rep.passed and rep.n_clean == 60 - len(DEFECTS)
    assert where[defect] not in rep.clean_item_ids
    row = {q["ref"]: q for q in rep.quarantine_rows("r1")}[where[defect]]
    assert row["quarantine_id"] == f"curation:r1:{where[defect]}" and row["stage"] == "curation"


def test_duplicates_within_batch_keep_the_first():
    df = good_batch()
    dup = df.iloc[[3]].assign(item_id="it-copy")          # same image hash as it3
    again = df.iloc[[4]]                                   # repeated item id it4
    rep = run(pd.concat([df, dup, again], ignore_index=True))
    assert sorted(q.item_id for q in rep.quarantined) == ["it-copy", "it4"]
    assert rep.clean_item_ids.count("it4") == 1 and "it3" in rep.clean_item_ids


def test_class_imbalance_fails_the_suite():
    df = good_batch()
    df["verdict"] = "good"
    df["degradations"] = [[] for _ in range(len(df))]
    df["description"] = [f"Fine. {verdict_sentence('good')}"] * len(df)
    rep = run(df)
    assert not rep.passed and not rep.quarantined
    assert any("no verdict above 80%" in r for r in rep.failure_reasons)
    md = rep.markdown()
    assert "Curation FAILED" in md and "Why the round stops" in md
    # small batches are not held to the balance bound
    assert run(df.head(5)).passed
    assert run(df, config=CurationConfig(max_class_share=1.0)).passed


def test_too_many_quarantined_fails_the_suite():
    df = good_batch(10)
    df.loc[:5, "eval_distance"] = 0.0
    rep = run(df)
    assert not rep.passed and len(rep.quarantined) == 6
    assert any("quarantined" in r for r in rep.failure_reasons)


def test_missing_column_fails_schema_and_non_frames_raise():
    rep = run(good_batch().drop(columns=["lane"]))
    assert not rep.passed and rep.failure_reasons == ["missing column(s): lane"]
    assert rep.checks[0].name == "schema" and not rep.checks[0].success
    with pytest.raises(CurationError):
        curate_batch([{"item_id": "x"}])


def test_empty_batch_fails_min_rows():
    rep = run(good_batch().head(0))
    assert not rep.passed and rep.n_rows == 0


def test_settings_thresholds(settings):
    s = settings.model_copy(update={"curation": settings.curation.model_copy(
        update={"max_class_share": 0.2, "near_duplicate_distance": 0.31})})
    rep = curate_batch(good_batch(), settings=s)
    assert not rep.passed  # 1/3 per verdict > 20 %
    assert [q.item_id for q in rep.quarantined] == ["it0"]  # distance 0.30 < 0.31


def test_nan_eval_distance_is_not_a_leak():
    df = good_batch()
    df.loc[0, "eval_distance"] = np.nan
    rep = run(df)
    assert rep.passed and not rep.quarantined


# -- mixing ---------------------------------------------------------------------------------

def test_mix_keeps_new_supersedes_old_and_caps():
    prev = [{"item_id": f"old{i}", "image_id": f"img{i}"} for i in range(10)]
    new = [{"item_id": "new1", "image_id": "img3"}, {"item_id": "new2", "image_id": "imgX"},
           {"item_id": "new2", "image_id": "imgY"}]
    mixed = mix_training_set(prev, new)
    ids = [m["item_id"] for m in mixed]
    assert ids[:2] == ["new1", "new2"] and "old3" not in ids and len(ids) == 11
    capped = mix_training_set(prev, new, max_items=5, seed=1)
    assert [m["item_id"] for m in capped][:2] == ["new1", "new2"] and len(capped) == 5
    assert capped == mix_training_set(prev, new, max_items=5, seed=1)   # seeded
    olds = [m["item_id"] for m in capped[2:]]
    assert olds == sorted(olds, key=lambda s: int(s[3:]))            # original order kept
    assert len(mix_training_set(prev, new, max_items=1)) == 1
    with pytest.raises(CurationError):
        mix_training_set(prev, new, max_items=-1)


def test_mix_accepts_objects():
    from medq.engine.models.base import LabelledImage
    img = np.zeros((4, 4), np.float32)
    prev = [LabelledImage("a", img, "CT", "good"), LabelledImage("b", img, "CT", "good")]
    new = [LabelledImage("c", img, "CT", "reject")]
    assert [x.item_id for x in mix_training_set(prev, new)] == ["c", "a", "b"]
