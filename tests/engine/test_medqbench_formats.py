"""MedQ-Bench / Q-Bench record <-> frame conversions (pure, no files)."""
from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medq.engine.formats import medqbench as m
from medq.engine.formats.images import pixel_hash, png_bytes, to_stored
from medq.engine.formats.medqbench import FormatError
from medq.engine.formats.world_labels import (
    parse_degradations,
    parse_label_line,
    parse_level,
    unknown_types,
    verdict_from_text,
)

RNG = np.random.default_rng(0)
GRAY = RNG.random((6, 7)).astype(np.float32)
RGB = RNG.random((5, 4, 3)).astype(np.float32)


def _mcq(i=0, **kw):
    rec = {"index": i, "image": GRAY, "question": "Is there noise?",
           "options": {"A": "Yes", "B": "No"}, "answer": "B", "modality": "CT"}
    rec.update(kw)
    return rec


def test_encode_decode_gray_stays_L_and_is_8bit_exact():
    b64 = m.encode_image(GRAY)
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        assert im.mode == "L" and im.size == (7, 6)
    back = m.decode_image(b64)
    assert back.dtype == np.float32 and back.shape == GRAY.shape
    assert np.abs(back - GRAY).max() <= 0.5 / 255 + 1e-6
    assert np.array_equal(m.encode_image(back), b64)  # 8-bit values survive exactly


def test_encode_decode_rgb_and_uint8_and_data_uri():
    back = m.decode_image("data:image/png;base64," + m.encode_image(RGB))
    assert back.shape == (5, 4, 3)
    u8 = (RGB * 255).astype(np.uint8)
    assert np.array_equal(m.decode_image_b64(m.encode_image(u8)), u8)


@pytest.mark.parametrize("bad", ["", "%%%notbase64", base64.b64encode(b"hello").decode()])
def test_decode_image_rejects_garbage(bad):
    with pytest.raises(FormatError):
        m.decode_image(bad)


def test_encode_rejects_nan():
    with pytest.raises(FormatError, match="NaN"):
        m.encode_image(np.full((4, 4), np.nan, np.float32))


def test_pixel_hash_depends_on_pixels_only():
    a = to_stored(GRAY)
    assert pixel_hash(a) == pixel_hash(a.copy()) == pixel_hash(a.astype(np.float32) / 255)
    b = a.copy()
    b[0, 0] ^= 1
    assert pixel_hash(a) != pixel_hash(b)
    assert pixel_hash(a) != pixel_hash(a.T)  # shape is part of the id
    assert png_bytes(a) == png_bytes(a)


def test_mcq_prompt_skips_empty_options_and_ends_with_instruction():
    p = m.mcq_prompt("How is the quality?", {"A": "Good", "B": "", "C": "Bad", "D": float("nan")})
    assert p.endswith("Answer directly only with the option letter from the given choices.")
    assert "A. Good" in p and "C. Bad" in p and "B." not in p and "D." not in p


def test_mcq_round_trip_with_arrays():
    recs = [_mcq(0), _mcq(1, image=RGB, options={"A": "a", "B": "b", "C": "c"}, answer="C",
                          question_type="What", level="mild", degradation="blur",
                          extra={"category": "perception"})]
    df = m.mcq_records_to_frame(recs)
    assert list(df.columns[:8]) == ["index", "image", "question", "A", "B", "C", "D", "answer"]
    assert df.loc[0, "C"] == "" and df.loc[0, "D"] == ""
    back = m.frame_to_mcq_records(df)
    assert [r["answer"] for r in back] == ["B", "C"]
    assert back[0]["options"] == {"A": "Yes", "B": "No"}
    assert back[1]["extra"] == {"category": "perception"}
    assert back[1]["degradation"] == "blur" and back[1]["level"] == "mild"
    assert np.array_equal(m.decode_image_b64(back[1]["image"]), to_stored(RGB))


def test_mcq_answers_0_to_3_and_nan_options():
    df = pd.DataFrame({"index": [1, 2, 3], "image_path": ["a.png", "b.png", "c.png"],
                       "question": ["q1", "q2", "q3"], "A": ["x", "x", "x"],
                       "B": ["y", "y", "y"], "C": [np.nan, "z", "z"], "D": [np.nan, "", "w"],
                       "answer": [0, "2", 3.0]})
    recs = m.frame_to_mcq_records(df)
    assert [r["answer"] for r in recs] == ["A", "C", "D"]
    assert recs[0]["options"] == {"A": "x", "B": "y"}
    assert recs[1]["options"] == {"A": "x", "B": "y", "C": "z"}
    assert [r["answer_raw"] for r in recs] == ["0", "2", "3"]
    assert recs[0]["index"] == "1" and recs[0]["image_path"] == "a.png"


@pytest.mark.parametrize("change, column", [
    ({"question": ""}, "question"), ({"answer": ""}, "answer"), ({"answer": "E"}, "answer"),
    ({"answer": "D"}, "answer"), ({"index": ""}, "index"), ({"image": ""}, "image")])
def test_mcq_bad_rows_name_row_and_column(change, column):
    df = m.mcq_records_to_frame([_mcq(0), _mcq(1)])
    for k, v in change.items():
        df.loc[1, k] = v
    with pytest.raises(FormatError) as exc:
        m.frame_to_mcq_records(df)
    assert "row 2" in str(exc.value) and column in str(exc.value)
    errors: list = []
    assert len(m.frame_to_mcq_records(df, errors)) == 1
    assert errors[0]["row"] == 2


def test_mcq_missing_column_and_duplicate_index():
    df = m.mcq_records_to_frame([_mcq(0), _mcq(1)])
    with pytest.raises(FormatError, match="'answer'"):
        m.frame_to_mcq_records(df.drop(columns=["answer"]))
    df.loc[1, "index"] = "0"
    with pytest.raises(FormatError, match="repeats row 1"):
        m.frame_to_mcq_records(df)


def test_image_reference_to_other_row_is_resolved():
    df = m.mcq_records_to_frame([_mcq(10), _mcq(11)])
    df.loc[1, "image"] = "10"
    recs = m.frame_to_mcq_records(df)
    assert recs[1]["image"] == recs[0]["image"]
    df.loc[1, "image"] = "99"
    with pytest.raises(FormatError, match="neither a base64 image"):
        m.frame_to_mcq_records(df)


def test_description_round_trip_optional_question():
    recs = [{"index": 0, "image": GRAY, "description": "Noisy. Overall, the quality of this "
             "image is usable.", "modality": "CT"},
            {"index": 1, "image": RGB, "question": "Describe.", "description": "Fine."}]
    df = m.description_records_to_frame(recs)
    assert list(df.columns) == ["index", "image", "question", "description", "modality"]
    back = m.frame_to_description_records(df)
    assert "question" not in back[0] and back[1]["question"] == "Describe."
    df2 = m.description_records_to_frame(recs[:1])
    assert "question" not in df2.columns
    with pytest.raises(FormatError, match="description"):
        m.frame_to_description_records(df.assign(description=["", "x"]))


def test_paired_round_trip_and_answers():
    recs = [{"index": 0, "image_a": GRAY, "image_b": GRAY[::-1], "description": "B is better",
             "answer": "image_b"}, {"index": 1, "image_a": GRAY, "image_b": GRAY,
                                    "description": "same", "answer": 0}]
    df = m.paired_records_to_frame(recs)
    assert list(df.columns) == ["index", "image_a", "image_b", "description", "answer"]
    assert list(df["answer"]) == ["B", "A"]
    back = m.frame_to_paired_records(df)
    assert back[0]["answer"] == "B"
    with pytest.raises(FormatError, match="paired"):
        m.frame_to_paired_records(df.assign(answer=["C", "A"]))


def test_qbench_round_trip():
    entries = [{"img_path": "a.jpg", "question": "Is it blurry?", "candidates": ["Yes", "No"],
                "correct_ans": "No", "type": 0, "concern": 0},
               {"img_path": "b.jpg", "question": "How is the quality?",
                "candidates": ["Good", "Poor", "Average"], "correct_ans": "Average", "type": 2,
                "concern": 3}]
    recs = m.qbench_to_mcq_records(entries)
    assert recs[0]["answer"] == "B" and recs[1]["answer"] == "C"
    assert recs[1]["question_type"] == "How"
    assert m.mcq_records_to_qbench(recs) == entries
    frame = m.mcq_records_to_frame(recs)
    assert "image_path" in frame.columns
    with pytest.raises(FormatError, match="correct_ans"):
        m.qbench_to_mcq_records([{**entries[0], "correct_ans": "Maybe"}])


def test_world_label_parsing():
    lab = parse_label_line({"image": "a.png", "modality": "CT", "verdict": "Usable",
                            "degradations": [{"type": "low_dose", "level": 1},
                                             {"type": "lens_flare", "level": "severe"}]},
                           where="line 1")
    assert lab["verdict"] == "usable" and lab["level"] == 2
    assert unknown_types(lab["degradations"]) == ["lens_flare"]
    with pytest.raises(FormatError, match="verdict"):
        parse_label_line({"image": "a.png", "verdict": "great"}, where="line 2")
    with pytest.raises(FormatError, match="level"):
        parse_label_line({"image": "a.png", "verdict": "good",
                          "degradations": [{"type": "blur", "level": 7}]}, where="line 3")
    assert parse_level("L2") == 2 and parse_level("none") == 0 and parse_level("") is None
    assert parse_degradations("blur, gaussian_noise", level="severe") == [
        {"type": "blur", "level": 2}, {"type": "gaussian_noise", "level": 2}]
    assert parse_degradations("none") == []
    assert verdict_from_text("x. Overall, the quality of this image is reject.") == "reject"


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                max_size=30).filter(lambda s: s.strip() != "")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(texts, texts, texts, st.sampled_from("ABC"), st.booleans()),
                min_size=1, max_size=5))
def test_mcq_frame_round_trip_property(rows):
    recs = []
    for i, (q, a, b, ans, with_c) in enumerate(rows):
        options = {"A": a, "B": b}
        if with_c or ans == "C":
            options["C"] = "third"
        recs.append({"index": i, "image_path": f"img/{i}.png", "question": q,
                     "options": options, "answer": ans})
    back = m.frame_to_mcq_records(m.mcq_records_to_frame(recs))
    for r, b in zip(recs, back):
        assert b["question"] == r["question"] and b["answer"] == r["answer"]
        assert b["options"] == r["options"]
