"""Consensus over several annotators: agreement measures and disagreement rules."""
from __future__ import annotations

import numpy as np
import pytest

from medq.engine.consensus import (
    ConsensusError,
    Vote,
    agreement,
    cohen_kappa,
    fleiss_kappa,
    jaccard,
    mean_pairwise_jaccard,
    resolve,
    verdict_share,
)


def V(who, verdict, *degs, text=None):
    return Vote.from_record(who, verdict, [{"type": t, "level": lv} for t, lv in degs], text)


def test_verdict_share_and_jaccard():
    assert verdict_share(["good", "good", "reject"]) == pytest.approx(2 / 3)
    assert verdict_share([]) == 0.0
    assert jaccard([], []) == 1.0
    assert jaccard(["a", "b"], ["b", "c"]) == pytest.approx(1 / 3)
    assert mean_pairwise_jaccard([{"a"}, {"a"}, {"b"}]) == pytest.approx(1 / 3)
    assert mean_pairwise_jaccard([{"a"}]) == 1.0


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) worked example as reproduced on Wikipedia: 10 items, 14 raters, 5 categories.
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
                      [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
                      [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=1e-3)
    assert fleiss_kappa(np.array([[2, 0, 0], [2, 0, 0]])) is None  # chance agreement 1
    assert fleiss_kappa(np.array([[1, 0, 0]])) is None              # one rater
    with pytest.raises(ConsensusError):
        fleiss_kappa(np.array([[2, 0], [1, 0]]))


def test_cohen_kappa():
    assert cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == pytest.approx(1.0)
    # po = 0.5, pe = 0.5 -> 0
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == pytest.approx(0.0)
    assert cohen_kappa(["a"], ["a"]) is None
    assert cohen_kappa([], []) is None


def test_majority_rule_with_tie_to_the_worse_verdict():
    votes = [V("x", "usable", ("motion", 1)), V("y", "usable", ("motion", 2), ("blur", 1)),
             V("z", "reject", ("motion", 2), text="bad")]
    r = resolve("i1", votes, rule="majority", required=3)
    assert r.status == "resolved" and r.verdict == "usable"
    assert r.degradations == [{"type": "motion", "level": 2}]  # blur only 1 of 3
    assert r.verdict_share == pytest.approx(2 / 3)
    tie = resolve("i2", [V("x", "good"), V("y", "reject")], rule="majority", required=2)
    assert tie.verdict == "reject"


def test_strictest_and_escalate_rules():
    votes = [V("x", "good"), V("y", "usable", ("blur", 1)), V("w", "usable", ("blur", 2))]
    s = resolve("i", votes, rule="strictest", required=3)
    assert s.verdict == "usable" and s.degradations == [{"type": "blur", "level": 2}]
    e = resolve("i", votes, rule="escalate", required=3)
    assert e.status == "escalated" and e.needs_extra_annotator and e.verdict is None
    same = [V("x", "reject", ("noise", 2), text="t"), V("y", "reject", ("noise", 2))]
    a = resolve("i", same, rule="escalate", required=2)
    assert a.status == "agreed" and a.final and a.description == "t"


def test_pending_and_bad_input():
    assert resolve("i", [V("x", "good")], required=2).status == "pending"
    with pytest.raises(ConsensusError, match="unknown disagreement rule"):
        resolve("i", [V("x", "good")], rule="vote")
    with pytest.raises(ConsensusError, match="unknown verdict"):
        resolve("i", [V("x", "fine")])
    with pytest.raises(ConsensusError, match="level 3"):
        resolve("i", [V("x", "good", ("blur", 3))])


def test_agreement_report():
    votes = {"a": [V("x", "good"), V("y", "good")],
             "b": [V("x", "reject", ("noise", 2)), V("y", "usable", ("noise", 1))],
             "c": [V("x", "usable", ("blur", 1)), V("y", "usable", ("blur", 1))],
             "d": [V("x", "good")]}
    report, results = agreement(votes, rule="escalate", required=2)
    assert report.n_items == 4 and report.n_multi == 3
    assert report.verdict_share == pytest.approx((1 + 0.5 + 1) / 3)
    assert report.degradation_jaccard == pytest.approx(1.0)
    assert report.statuses == {"agreed": 2, "escalated": 1, "pending": 1}
    assert report.cohen_kappa == pytest.approx(cohen_kappa(["good", "reject", "usable"],
                                                           ["good", "usable", "usable"]))
    assert results["b"].needs_extra_annotator


def test_votes_from_catalog_rows():
    from medq.engine.consensus import votes_from_annotations
    rows = [{"image_id": "a", "annotator": "x", "verdict": "usable",
             "degradations": '[{"type": "blur", "level": 1}]', "description": None},
            {"image_id": "a", "annotator": "y", "verdict": "usable",
             "degradations": [{"type": "blur", "level": 1}]},
            {"image_id": "b", "annotator": "x", "verdict": None}]
    votes = votes_from_annotations(rows)
    assert list(votes) == ["a"] and votes["a"][0] == votes["a"][1].__class__(
        "x", "usable", (("blur", 1),), None)
    assert resolve("a", votes["a"], required=2).status == "agreed"
