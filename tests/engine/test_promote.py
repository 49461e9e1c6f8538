"""Promotion gate: promote only on an improvement beyond the margin; always say why."""
from __future__ import annotations

import pytest

from medq.engine.promote import PromotionError, decide_promotion


def test_first_model_is_promoted():
    d = decide_promotion({"accuracy": 0.4}, None, margin=0.01)
    assert d.promote and d.current_value is None and "no current model" in d.reason


def test_improvement_beyond_margin_promotes():
    d = decide_promotion({"accuracy": 0.62}, {"accuracy": 0.60}, margin=0.005)
    assert d.promote and d.delta == pytest.approx(0.02)
    assert "0.6000 -> 0.6200" in d.reason


@pytest.mark.parametrize("cand", [0.60, 0.604, 0.605, 0.55])
def test_no_promotion_at_or_below_margin(cand):
    d = decide_promotion({"accuracy": cand}, {"accuracy": 0.60}, margin=0.005)
    assert not d.promote and d.reason.startswith("kept current model")
    assert ("fell" in d.reason) == (cand < 0.60)


def test_guards_block_a_regression_elsewhere():
    cur = {"accuracy": 0.60, "description_overall": 5.0}
    d = decide_promotion({"accuracy": 0.70, "description_overall": 4.5}, cur, margin=0.005,
                         guards={"description_overall": 0.25})
    assert not d.promote and d.guard_failures and "description_overall dropped by 0.5000" in d.reason
    ok = decide_promotion({"accuracy": 0.70, "description_overall": 4.9}, cur, margin=0.005,
                          guards={"description_overall": 0.25, "paired_accuracy": 0.1})
    assert ok.promote and "skipped" in ok.reason


def test_other_primary_metric_and_errors():
    d = decide_promotion({"description_overall": 5.5}, {"description_overall": 5.0},
                         metric="description_overall", margin=0.1)
    assert d.promote and d.metric == "description_overall"
    with pytest.raises(PromotionError, match="no 'accuracy'"):
        decide_promotion({}, {"accuracy": 0.5})
    with pytest.raises(PromotionError, match="not a number"):
        decide_promotion({"accuracy": "high"}, None)
    with pytest.raises(PromotionError, match="nan"):
        decide_promotion({"accuracy": float("nan")}, {"accuracy": 0.5})
    with pytest.raises(PromotionError, match="margin"):
        decide_promotion({"accuracy": 0.5}, None, margin=-1)
    assert decide_promotion({"accuracy": 0.7}, {"accuracy": 0.6}).to_dict()["promote"] is True
