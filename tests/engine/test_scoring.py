"""MedQ-Bench scoring: answer extraction, accuracy breakdowns, ECE, entropy, the four description
dimensions, the rule-based judge and the LLM judge (against a local fake OpenAI server, fixture
`fake_openai` from tests/fixtures/fake_openai.py)."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from medq.engine.models.base import Comparison, MCQAnswer
from medq.engine.scoring import (
    DescriptionReference,
    DescriptionScores,
    EvalItem,
    JudgeEndpointError,
    LLMJudge,
    MCQResult,
    PairedReference,
    RulesJudge,
    ScoringError,
    accuracy_report,
    aggregate_descriptions,
    analyze,
    build_prompt,
    ece_from_probs,
    eval_id_for,
    expected_calibration_error,
    extract_answer,
    extract_comparison,
    extract_verdict,
    mcq_rows,
    normalized_entropy,
    paired_quality_accuracy,
    paired_rows,
    parse_score,
    quality_accuracy,
    results_markdown,
    summarize,
)

# -- answer extraction ------------------------------------------------------------------------


@pytest.mark.parametrize("response, expected", [
    ("The answer is B.", "B"),          # rule: answer is X
    ("B) blurry", "B"),                 # rule: leading letter + ")"
    ("B. Severe noise", "B"),           # leading letter + "."
    ("C: severe", "C"),                 # rule: letter + ":" (":" is not in the first rule)
    ("D - none of the above", "D"),     # leading letter + space matches the first rule
    ("D-none", "D"),                    # letter + "-" only by the third rule
    ("A", "A"),                         # bare letter
    ("  c  ", "C"),                     # stripped, lower case
    ("b", "B"),
    ("I think (D)", "D"),               # first isolated letter
    ("Answer: none", None),             # no isolated A-D (the A of "Answer" is inside a word)
    ("Option C", "C"),
    ("option c is correct", "C"),
    ("the answer is d", "D"),
    ("B or C", "B"),                    # several letters: the first rule wins on the leading B
    ("Between C and B, I choose B", "C"),  # first isolated letter
    ("A blurry image", "A"),            # official quirk: the article counts as option A
    ("The image shows severe noise", None),
    ("", None),
    (None, None),
    ("E", None),                        # only A-D exist
    ("Answer is E, not A", "A"),        # "answer is E" does not match; isolated A does
])
def test_extract_answer_official_rules(response, expected):
    assert extract_answer(response) == expected


def test_option_text_matching_is_opt_in_and_follows_vlmevalkit():
    options = {"A": "Mild noise", "B": "Severe noise", "C": "No noise"}
    assert extract_answer("severe noise", options) is None  # official MedQ-Bench: no text match
    assert extract_answer("severe noise", options, match_option_text=True) == "B"
    # Two option texts contained -> ambiguous -> None (can_infer_text needs exactly one).
    assert extract_answer("mild noise or severe noise", options, match_option_text=True) is None
    # Longer than twice the total option text -> no text match.
    long = "severe noise " + "x" * 200
    assert extract_answer(long, options, match_option_text=True) is None
    # Letter rules still come first.
    assert extract_answer("B", options, match_option_text=True) == "B"


# -- entropy and calibration ------------------------------------------------------------------


def test_normalized_entropy_known_values():
    assert normalized_entropy({"A": 0.25, "B": 0.25, "C": 0.25, "D": 0.25}) == pytest.approx(1.0)
    assert normalized_entropy([1.0, 0.0, 0.0]) == 0.0
    assert normalized_entropy([0.5]) == 0.0
    p = [0.7, 0.3]
    assert normalized_entropy(p) == pytest.approx(-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)) / math.log(2))
    assert normalized_entropy([2.0, 2.0]) == pytest.approx(1.0)  # renormalized
    rows = normalized_entropy(np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert rows.tolist() == pytest.approx([1.0, 0.0])
    with pytest.raises(ScoringError):
        normalized_entropy([0.5, -0.1])
    with pytest.raises(ScoringError):
        normalized_entropy([float("nan"), 1.0])


@hyp_settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=6))
def test_normalized_entropy_bounds(values):
    h = normalized_entropy(values)
    assert 0.0 <= h <= 1.0
    # A permutation does not change the uncertainty.
    assert normalized_entropy(list(reversed(values))) == pytest.approx(h, abs=1e-9)


@hyp_settings(max_examples=100, deadline=None)
@given(st.integers(min_value=2, max_value=8))
def test_uniform_is_maximal_and_onehot_minimal(k):
    assert normalized_entropy([1.0] * k) == pytest.approx(1.0)
    assert normalized_entropy([1.0] + [0.0] * (k - 1)) == 0.0


def test_ece_known_inputs():
    # Perfect calibration in one bin: confidence 0.8, 8 of 10 right.
    assert expected_calibration_error([0.8] * 10, [1] * 8 + [0] * 2) == pytest.approx(0.0)
    # Always confident (1.0) and always wrong -> ECE 1.
    assert expected_calibration_error([1.0] * 4, [0] * 4) == pytest.approx(1.0)
    # Two bins: 0.9 conf / 50% right (gap 0.4), 0.3 conf / 0% right (gap 0.3), equal weight.
    conf = [0.9, 0.9, 0.3, 0.3]
    corr = [1, 0, 0, 0]
    assert expected_calibration_error(conf, corr) == pytest.approx(0.5 * 0.4 + 0.5 * 0.3)
    # Bin edges: 1/15 belongs to the first bin (lo < c <= hi), so both share a bin here.
    assert expected_calibration_error([1 / 15, 0.05], [1, 1]) == pytest.approx(1 - (1 / 15 + 0.05) / 2)
    assert expected_calibration_error([], []) == 0.0
    with pytest.raises(ScoringError):
        expected_calibration_error([0.5], [1, 0])


def test_ece_from_probs_uses_argmax_and_max_prob():
    probs = [{"A": 0.9, "B": 0.1}, {"A": 0.2, "B": 0.8}, {"A": 0.6, "B": 0.4}]
    gold = ["A", "A", "B"]
    # confidences 0.9 (right), 0.8 (wrong), 0.6 (wrong), each alone in its bin.
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(0 - 0.6)) / 3
    assert ece_from_probs(probs, gold) == pytest.approx(expected)


def test_accuracy_report_breakdowns():
    results = [
        MCQResult("1", "A", "A", {"A": 0.9, "B": 0.1}, "CT", "What", 0),
        MCQResult("2", "B", "A", {"A": 0.6, "B": 0.4}, "CT", "Yes-or-No", 2),
        MCQResult("3", "C", "C", {"A": 0.1, "B": 0.1, "C": 0.8}, "MRI", "How", 1),
        MCQResult("4", "1", None, {}, "MRI", "What", 2),  # unparseable; gold "1" means B
    ]
    rep = accuracy_report(results)
    assert (rep["n"], rep["correct"], rep["accuracy"]) == (4, 2, 0.5)
    assert rep["per_modality"] == {"CT": {"n": 2, "correct": 1, "accuracy": 0.5},
                                   "MRI": {"n": 2, "correct": 1, "accuracy": 0.5}}
    assert list(rep["per_type"]) == ["Yes-or-No", "What", "How"]  # taxonomy order
    assert rep["per_type"]["What"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert list(rep["per_level"]) == ["none", "mild", "severe"]
    assert rep["per_level"]["severe"] == {"n": 2, "correct": 0, "accuracy": 0.0}
    assert rep["unparsed"] == 1
    assert rep["ece"] is not None and 0 <= rep["ece"] <= 1
    assert 0 < rep["mean_entropy"] < 1


# -- descriptions: verdicts, ordinal table, aggregation ---------------------------------------


@pytest.mark.parametrize("text, verdict", [
    ("Mild noise. Overall, the quality of this image is usable.", "usable"),
    ("overall the quality of this image is **reject**", "reject"),
    ("Overall, the quality of this image is [good].", "good"),
    ("Good contrast at first. Overall, the quality of this image is rejected.", "reject"),
    ("The image quality is poor due to motion.", "reject"),
    ("Image quality: acceptable.", "usable"),
    ("A high-quality fundus photograph with sharp vessels.", "good"),
    ("The image quality is degraded by strong noise.", None),
    ("The scan is not usable.", "reject"),
    ("Severe streaks; I would reject it.", "reject"),
    ("", None),
])
def test_extract_verdict(text, verdict):
    assert extract_verdict(text) == verdict


def test_quality_accuracy_ordinal_table():
    table = {("good", "good"): 2, ("usable", "usable"): 2, ("reject", "reject"): 2,
             ("good", "usable"): 1, ("usable", "good"): 1, ("usable", "reject"): 1,
             ("reject", "usable"): 1, ("good", "reject"): 0, ("reject", "good"): 0}
    for (pred, gold), score in table.items():
        assert quality_accuracy(pred, gold) == score, (pred, gold)
    assert quality_accuracy(None, "good") == 0
    assert quality_accuracy("good", None) is None
    assert paired_quality_accuracy("A", "A") == 2
    assert paired_quality_accuracy("b", "A") == 0
    assert paired_quality_accuracy(None, "B") == 0
    assert paired_quality_accuracy("A", None) is None


def test_aggregate_four_dimensions_with_none():
    scores = [DescriptionScores(2, 1, 2, 2), DescriptionScores(1, None, 0, 1),
              DescriptionScores(None, 2, 1, None)]
    agg = aggregate_descriptions(scores)
    assert agg["completeness"] == pytest.approx(1.5)    # (2 + 1) / 2, None left out
    assert agg["preciseness"] == pytest.approx(1.5)
    assert agg["consistency"] == pytest.approx(1.0)
    assert agg["quality_accuracy"] == pytest.approx(1.5)
    assert agg["overall"] == pytest.approx(5.5)         # sum of the four means
    assert agg["n_preciseness"] == 2 and agg["n"] == 3
    # Item overall: all four -> plain sum; some None -> mean scaled to 0-8.
    assert scores[0].overall == 7
    assert scores[1].overall == pytest.approx((1 + 0 + 1) * 4 / 3)
    assert DescriptionScores().overall is None
    # A dimension nobody could score makes the benchmark overall undefined, not silently lower.
    assert aggregate_descriptions([DescriptionScores(2, 2, 2, None)])["overall"] is None


@pytest.mark.parametrize("text, better", [
    ("Image A shows severe noise. Image B has better quality.", "B"),
    ("The first image is sharper than the second one.", "A"),
    ("The second image is worse because of motion blur.", "A"),
    ("Image 2 is of higher quality.", "B"),
    ("Both images look the same.", None),
])
def test_extract_comparison(text, better):
    assert extract_comparison(text) == better


# -- text analysis and the rules judge --------------------------------------------------------


def test_analyze_levels_negations_modality():
    f = analyze("This CT slice shows mild low-dose noise and severe streak artifacts, "
                "without motion. No ghosting or aliasing; exposure is adequate. "
                "Overall, the quality of this image is reject.")
    found = {(m.phrase, m.level, m.negated) for m in f.mentions}
    assert ("low-dose noise", 1, False) in found
    assert ("streak", 2, False) in found
    assert ("motion", None, True) in found
    assert ("ghosting", None, True) in found
    assert ("aliasing", None, True) in found       # the denial runs through "or"
    assert ("exposure", None, True) in found       # neutral noun + positive word
    assert f.modality == "CT" and f.verdict == "reject"
    assert {t for m in f.present for t in m.types} == {"low_dose", "sparse_view", "metal_streak",
                                                       "limited_angle"}
    noisy = analyze("The MRI is noise-free but slightly blurry.")
    assert [(m.phrase, m.negated) for m in noisy.mentions] == [("noise", True), ("blurry", False)]
    assert noisy.present[0].level == 1 and noisy.modality == "MRI"


REF = DescriptionReference(text="", verdict="usable", modality="CT",
                           degradations=[{"type": "low_dose", "level": 1}])


def test_rules_judge_perfect_and_generic_descriptions():
    judge = RulesJudge()
    perfect = judge.score("The CT image shows mild low-dose noise with preserved edges. "
                          "Overall, the quality of this image is usable.", REF)
    assert perfect.values() == {"completeness": 2, "preciseness": 2, "consistency": 2,
                                "quality_accuracy": 2}
    generic = judge.score("The CT image is slightly noisy. Overall, the quality of this image "
                          "is usable.", REF)
    assert generic.completeness == 1.0  # family word only: half credit
    assert generic.preciseness == 2.0


def test_rules_judge_penalizes_contradictions_and_hallucinations():
    judge = RulesJudge()
    wrong = judge.score("This MRI is clean, with no noise and no artifacts. Overall, the quality "
                        "of this image is good.", REF)
    assert wrong.completeness == 0
    # denied gold noise (-1), wrong modality (-0.5) -> 0.5
    assert wrong.preciseness == 0.5
    assert wrong.consistency == 2          # no problems -> good is self-consistent
    assert wrong.quality_accuracy == 1     # good vs usable: adjacent
    hallucinated = judge.score("Mild low-dose noise and severe metal streak artifacts. Overall, "
                               "the quality of this image is usable.", REF)
    assert hallucinated.completeness == 2
    assert hallucinated.preciseness == 1.5  # one invented degradation on a degraded image
    assert hallucinated.consistency == 1    # a severe problem but only "usable"
    wrong_level = judge.score("Severe low-dose noise. Overall, the quality of this image is "
                              "reject.", REF)
    assert wrong_level.preciseness == 1.5 and wrong_level.consistency == 2
    assert wrong_level.quality_accuracy == 1


def test_rules_judge_clean_reference_and_missing_gold():
    judge = RulesJudge()
    clean = DescriptionReference(verdict="good", degradations=[], modality="fundus")
    ok = judge.score("A sharp fundus photograph without noticeable artifacts. Overall, the "
                     "quality of this image is good.", clean)
    assert ok.values() == {"completeness": 2, "preciseness": 2, "consistency": 2,
                           "quality_accuracy": 2}
    bad = judge.score("Strong blur and uneven illumination. Overall, the quality of this image "
                      "is reject.", clean)
    assert bad.preciseness == 0 and bad.quality_accuracy == 0 and bad.consistency == 2
    # Gold only as text: the judge reads the reference the same way.
    text_ref = DescriptionReference(text="Moderate ghosting artifacts are visible. Overall, the "
                                         "quality of this image is usable.")
    assert judge.score("Mild ghosting. Overall, the quality of this image is usable.",
                       text_ref).values() == {"completeness": 2, "preciseness": 2,
                                              "consistency": 2, "quality_accuracy": 2}
    # No gold at all: completeness/preciseness are not scorable.
    nothing = judge.score("Mild ghosting. Overall, the quality of this image is usable.",
                          DescriptionReference())
    assert nothing.completeness is None and nothing.preciseness is None
    assert nothing.quality_accuracy is None and nothing.consistency == 2
    empty = judge.score("   ", REF)
    assert empty.values() == {"completeness": 0, "preciseness": 0, "consistency": 0,
                              "quality_accuracy": 0}
    no_verdict = judge.score("Mild low-dose noise.", REF)
    assert no_verdict.consistency == 0 and no_verdict.quality_accuracy == 0


def test_rules_judge_paired():
    judge = RulesJudge()
    ref = PairedReference(text="The first image has strong noise; the second is clean. The "
                               "second image has better quality.", better="B")
    good = judge.score_paired("Image A is heavily corrupted by noise, while image B is clean. "
                              "Image B has better quality.", ref)
    assert good.quality_accuracy == 2 and good.consistency == 2 and good.completeness == 2
    backwards = judge.score_paired("Image A has severe noise while image B is clean. Image A has "
                                   "better quality.", ref)
    assert backwards.quality_accuracy == 0 and backwards.consistency == 0
    # The text gives no conclusion: the model's structured answer is used for quality accuracy.
    terse = judge.score_paired("Image A shows strong noise.", ref, predicted_better="B")
    assert terse.quality_accuracy == 2


def test_rules_judge_reads_the_reference_description_generator():
    """Every gold description the project generates (medq.engine.questions.describe) scores 8/8
    against its own labels, and clearly less against another degradation's labels."""
    from medq.engine.questions import describe
    from medq.engine.taxonomy import MODALITIES, degradations_for, verdict_for

    judge = RulesJudge()
    own, other = [], []
    for mod in MODALITIES:
        types = degradations_for(mod)
        cases = [[]] + [[{"type": t, "level": lv}] for t in types for lv in (1, 2)]
        cases += [[{"type": a, "level": 1}, {"type": b, "level": 2}] for a, b in itertools.pairwise(types)]
        for k, degs in enumerate(cases):
            text = describe(mod, degs, seed=k)
            ref = DescriptionReference(verdict=verdict_for(degs), degradations=degs, modality=mod)
            own.append(judge.score(text, ref))
        for k, t in enumerate(types):
            wrong = [{"type": types[(k + 1) % len(types)], "level": 1}]
            other.append(judge.score(describe(mod, [{"type": t, "level": 2}], seed=k),
                                     DescriptionReference(verdict="usable", degradations=wrong,
                                                          modality=mod)))
    assert [s.overall for s in own] == [8.0] * len(own)
    wrong_agg = aggregate_descriptions(other)
    assert wrong_agg["completeness"] < 0.1 and wrong_agg["preciseness"] < 1.6
    assert wrong_agg["overall"] < 5


# -- LLM judge --------------------------------------------------------------------------------


def test_prompt_and_parse_rules():
    msgs = build_prompt("quality_accuracy", "PRED TEXT", "GOLD TEXT")
    assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user"
    user = msgs[1]["content"]
    assert "[PRED TEXT]" in user and "[GOLD TEXT]" in user and "Score:" in user
    assert "reject < usable < good" in user
    assert "higher quality" in build_prompt("quality_accuracy", "p", "g", paired=True)[1]["content"]
    assert parse_score("Score: 2") == 2.0
    assert parse_score("score：1.5 because ...") == 1.5
    assert parse_score("The Score: 0") == 0.0
    assert parse_score('{"score": 1}') == 1.0
    assert parse_score("2") == 2.0
    assert parse_score("1") == 1.0
    assert parse_score("Score: 3") is None     # out of range
    assert parse_score("I would give it a 2") is None
    assert parse_score("") is None and parse_score(None) is None


def _client(url, **kw):
    from medq.storage.openai_chat import OpenAIChatClient
    return OpenAIChatClient(url, "judge-model", SecretStr("sk-test-secret"), timeout_s=5, **kw)


def test_llm_judge_scores_through_openai_endpoint(fake_openai, caplog):
    url, server = fake_openai
    client = _client(url, retries=2)
    judge = LLMJudge(client.complete, name="openai:test", retries=2, backoff_s=0.0, max_workers=2)
    refs = [REF, DescriptionReference(text="Severe motion. Overall, the quality of this image is "
                                           "reject.")]
    scores = judge.score_many(["Mild noise. Overall, the quality of this image is usable.",
                               "Looks fine."], refs)
    assert [s.values() for s in scores] == [{"completeness": 1, "preciseness": 1,
                                             "consistency": 1, "quality_accuracy": 2}] * 2
    assert len(server.seen) == 8  # one request per item and dimension
    first = server.seen[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["auth"] == "Bearer sk-test-secret"
    assert first["body"]["temperature"] == 0 and first["body"]["model"] == "judge-model"
    # Labels-only references are turned into a gold text for the judge.
    assert any("mild low-dose noise" in s["body"]["messages"][1]["content"] for s in server.seen)
    assert "sk-test-secret" not in repr(client) and "sk-test-secret" not in caplog.text


def test_llm_judge_retries_unparseable_and_transient_errors(fake_openai):
    """Transient HTTP errors are the transport's retries; unparseable replies the judge's."""
    url, server = fake_openai
    server.script = [("status", 503), ("ok", "Score: 2"),          # transient, then fine
                     ("ok", "no idea"), ("ok", "Score: 1"),        # unparseable, re-asked
                     ("ok", "nope"), ("ok", "still nope"), ("ok", "??"),  # stays unparseable
                     ("ok", '{"score": 0}')]
    judge = LLMJudge(_client(url, retries=1).complete, retries=2, backoff_s=0.0, max_workers=1)
    s = judge.score("text", REF)
    assert (s.completeness, s.preciseness, s.consistency, s.quality_accuracy) == (2, 1, None, 0)
    assert len(server.seen) == 8
    assert s.overall == pytest.approx(3 * 4 / 3)  # None left out, scaled to 0-8


def test_llm_judge_unreachable_or_rejected_endpoint_is_a_clear_error(fake_openai):
    url, server = fake_openai
    server.script = [("status", 401)]
    judge = LLMJudge(_client(url, retries=3).complete, retries=0, backoff_s=0.0)
    with pytest.raises(JudgeEndpointError, match="HTTP 401") as err:
        judge.score("text", REF)
    assert "sk-test-secret" not in str(err.value)
    assert len(server.seen) == 1  # a 4xx other than 429 is not retried
    dead = _client("http://127.0.0.1:9", retries=1)  # nothing listens on port 9
    with pytest.raises(JudgeEndpointError, match="failed after 2 attempt"):
        LLMJudge(dead.complete, retries=0, backoff_s=0.0).score("text", REF)
    # one retry policy per layer: a request the transport gave up on is not asked again
    calls = []

    def counted(messages):
        calls.append(1)
        return dead.complete(messages)
    with pytest.raises(JudgeEndpointError):
        LLMJudge(counted, retries=3, backoff_s=0.0).score("text", REF)
    assert len(calls) == 1
    lenient = LLMJudge(dead.complete, retries=0, backoff_s=0.0, strict=False)
    assert lenient.score("text", REF).values() == dict.fromkeys(
        ("completeness", "preciseness", "consistency", "quality_accuracy"))


# -- evaluation bookkeeping -------------------------------------------------------------------


def test_eval_rows_and_summary():
    items = [EvalItem.from_row({"item_id": "q1", "kind": "mcq", "image_id": "i1",
                                "options": json.dumps({"A": "yes", "B": "no"}), "answer": "A",
                                "modality": "CT", "question_type": "Yes-or-No", "level": 0}),
             EvalItem.from_row({"item_id": "q2", "kind": "mcq", "image_id": "i2",
                                "options": {"A": "mild", "B": "severe", "C": ""}, "answer": "1",
                                "modality": "MRI", "question_type": "How", "level": 2})]
    assert items[1].options == {"A": "mild", "B": "severe"}  # empty option dropped
    assert items[1].mcq(np.zeros((2, 2))).answer is None   # gold never shown to the model
    answers = [MCQAnswer("q1", {"A": 3.0, "B": 1.0}, "A", "A"),
               MCQAnswer("q2", {"A": 0.5, "B": 0.5}, "A", "The answer is B.")]
    rows, results = mcq_rows("e1", items, answers)
    assert rows[0]["probs"] == {"A": 0.75, "B": 0.25} and rows[0]["correct"] is True
    assert rows[1]["predicted"] == "B" and rows[1]["correct"] is True  # gold "1" = B
    assert rows[1]["entropy"] == pytest.approx(1.0)
    with pytest.raises(ScoringError, match="option"):
        mcq_rows("e1", items[:1], [MCQAnswer("q1", {"A": 0.5, "C": 0.5}, "A")])
    with pytest.raises(ScoringError, match="not one of its options"):
        EvalItem.from_row({"item_id": "q3", "kind": "mcq", "image_id": "i",
                           "options": {"A": "x"}, "answer": "D"})
    pair = EvalItem.from_row({"item_id": "p1", "kind": "paired", "image_id": "a",
                              "image_b_id": "b", "answer": "B", "description": "B is better."})
    p_rows = paired_rows("e1", [pair], [Comparison("B", 0.2, "Image B is better.")],
                         [DescriptionScores(2, 2, 2, 2)])
    assert p_rows[0]["correct"] is True and p_rows[0]["probs"] == {"A": 0.2, "B": 0.8}
    metrics = summarize(mcq_results=results, paired_items=[pair],
                        paired_scores=[DescriptionScores(2, 2, 2, 2)], paired_correct=[True])
    assert metrics["accuracy"] == 1.0 and metrics["paired"]["overall"] == 8
    assert metrics["paired"]["comparison_accuracy"] == 1.0
    md = results_markdown(metrics, "v1")
    assert "| Model | Overall | CT | MRI |" in md and "| v1 | 100.00 | 100.00 | 100.00 |" in md
    assert eval_id_for("v1", "eval", "rules") == eval_id_for("v1", "eval", "rules")
    assert eval_id_for("v1", "eval", "rules") != eval_id_for("v2", "eval", "rules")
