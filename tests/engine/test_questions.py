"""Question and description generation from ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from medq.engine import questions as Q
from medq.engine import taxonomy
from medq.engine.formats.medqbench import frame_to_mcq_records, mcq_records_to_frame

CASES = [
    ("CT", []),
    ("CT", [{"type": "low_dose", "level": 2}]),
    ("MRI", [{"type": "motion", "level": 1}, {"type": "rician_noise", "level": 2}]),
    ("fundus", [{"type": "specular_reflection", "level": 1}]),
    ("ultrasound", [{"type": "lens_flare", "level": 1}]),  # not in the taxonomy
]


@pytest.mark.parametrize("modality,degs", CASES)
def test_description_names_everything_and_ends_with_verdict(modality, degs):
    verdict = taxonomy.verdict_for(degs)
    for seed in range(8):
        text = Q.describe(modality, degs, verdict, seed=seed)
        assert text.endswith(taxonomy.verdict_sentence(verdict))
        assert text.count("Overall, the quality of this image is") == 1
        assert modality in text
        for d in degs:
            name = Q.degradation_name(d["type"])
            assert f"{taxonomy.LEVELS[d['level']]} {name}" in text
    assert Q.degradation_name("lens_flare") == "lens flare"


def test_descriptions_vary_with_seed_and_repeat_with_same_seed():
    degs = [{"type": "blur", "level": 1}]
    texts = {Q.describe("X-ray", degs, seed=s) for s in range(20)}
    assert len(texts) >= 5
    assert Q.describe("X-ray", degs, seed=7) == Q.describe("X-ray", degs, seed=7)


def test_explicit_verdict_wins_and_bad_verdict_fails():
    assert Q.describe("CT", [], "usable", seed=0).endswith("is usable.")
    with pytest.raises(Q.QuestionError):
        Q.describe("CT", [], "excellent")
    with pytest.raises(Q.QuestionError):
        Q.describe("CT", [{"type": "blur", "level": 5}])


@pytest.mark.parametrize("modality,degs", CASES)
def test_questions_are_consistent_with_ground_truth(modality, degs):
    present = {d["type"] for d in degs}
    for seed in range(10):
        recs = Q.make_questions(modality, degs, seed, index_start=10)
        assert [r["question_type"] for r in recs] == list(taxonomy.QUESTION_TYPES)
        assert [r["index"] for r in recs] == [10, 11, 12]
        yn, what, how = recs
        for r in recs:
            assert r["answer"] in r["options"]
            assert list(r["options"]) == list(taxonomy.OPTION_LETTERS[:len(r["options"])])
            assert len(set(r["options"].values())) == len(r["options"])
            assert r["level"] == max((d["level"] for d in degs), default=0)
        assert len(yn["options"]) == 2 and set(yn["options"].values()) == {"Yes", "No"}
        assert yn["options"][yn["answer"]] == ("Yes" if yn["degradation"] in present else "No")
        assert len(what["options"]) == 4
        truth = (Q._cap(Q.degradation_name(max(degs, key=lambda d: d["level"])["type"]))
                 if degs else Q.NONE_OPTION)
        assert what["options"][what["answer"]] == truth
        wrong = [v for k, v in what["options"].items() if k != what["answer"]]
        assert not any(v == Q._cap(Q.degradation_name(t)) for v in wrong for t in present)
        assert len(how["options"]) == 3
        level = next((d["level"] for d in degs if d["type"] == how["degradation"]), 0)
        assert how["options"][how["answer"]] == Q.SEVERITY_OPTIONS[level]


def test_distractors_come_from_the_modality_family():
    family = set(taxonomy.degradations_for("CT"))
    for seed in range(20):
        what = Q.what_question("CT", [], seed)
        names = {Q._cap(Q.degradation_name(t)): t for t in taxonomy.all_degradations()}
        for text in what["options"].values():
            if text != Q.NONE_OPTION:
                assert names[text] in family


def test_options_are_shuffled_by_seed():
    degs = [{"type": "ghosting", "level": 2}]
    letters = {Q.what_question("MRI", degs, s)["answer"] for s in range(30)}
    assert len(letters) >= 3
    assert Q.what_question("MRI", degs, 5) == Q.what_question("MRI", degs, 5)


def test_question_records_fit_the_medqbench_format():
    img = np.zeros((16, 16), np.float32)
    recs = []
    for k, (modality, degs) in enumerate(CASES):
        recs += Q.make_questions(modality, degs, k, image=img, index_start=3 * k)
    frame = mcq_records_to_frame(recs)
    back = frame_to_mcq_records(frame)
    assert [r["answer"] for r in back] == [r["answer"] for r in recs]
    assert frame.loc[frame["question_type"] == "Yes-or-No", "C"].eq("").all()


def test_verdict_mcq_and_to_mcq():
    img = np.zeros((8, 8), np.float32)
    mcq = Q.verdict_mcq("item-1", img, "CT", "usable")
    assert mcq.options == {"A": "Good", "B": "Usable", "C": "Reject"}
    assert mcq.answer == "B" and mcq.question == Q.VERDICT_QUESTION
    assert Q.verdict_mcq("x", img).answer is None
    with pytest.raises(Q.QuestionError):
        Q.verdict_mcq("x", img, verdict="bad")
    rec = Q.how_question("CT", [{"type": "blur", "level": 2}], 0, image=img, index=0)
    m = Q.to_mcq(rec, "id")
    assert m.options == rec["options"] and m.answer == rec["answer"] and m.question_type == "How"


def test_compare_description():
    text, answer = Q.compare_description("CT", [], [{"type": "blur", "level": 2}], seed=1)
    assert answer == "A" and "first image is better" in text
    text, answer = Q.compare_description("CT", [{"type": "blur", "level": 2}],
                                         [{"type": "low_dose", "level": 1}], seed=1)
    assert answer == "B" and "severe blur" in text
    _, answer = Q.compare_description("CT", [], [], seed=1)
    assert answer is None


def test_plural_names_get_plural_verbs():
    recs = [Q.how_question("MRI", [{"type": "motion", "level": 1}], s) for s in range(10)]
    for r in recs:
        if r["degradation"] == "motion":
            assert "are the motion artifacts" in r["question"]
