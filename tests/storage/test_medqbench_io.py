"""MedQ-Bench TSV files: golden file, VLMEvalKit dialect, import/export round trip."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medq.engine.formats import medqbench as m
from medq.engine.formats.medqbench import FormatError
from medq.storage.medqbench_catalog import export_medqbench, import_medqbench
from medq.storage.medqbench_io import (
    read_qbench_json,
    read_tsv,
    write_qbench_json,
    write_tsv,
)

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN_QA = DATA / "medqbench_golden_QA.tsv"
GOLDEN_DESC = DATA / "medqbench_golden_description.tsv"
GOLDEN_PAIRED = DATA / "medqbench_golden_paired.tsv"
GRAY = np.array([[0, 85, 170, 255]] * 4, dtype=np.uint8)  # the image of rows 0 in the goldens
EYE = (np.eye(4) * 255).astype(np.uint8)


def test_golden_mcq_file():
    df = read_tsv(GOLDEN_QA)
    assert list(df.columns) == ["index", "image", "question", "A", "B", "C", "D", "answer",
                                "modality", "question_type", "level", "category"]
    assert df["index"].tolist() == ["0", "1", "2", "3", "007"]  # strings, "007" kept
    recs = m.frame_to_mcq_records(df)
    assert [r["answer"] for r in recs] == ["B", "C", "B", "D", "A"]  # 1, c, B, D, 0
    assert recs[0]["options"] == {"A": "Yes", "B": "No"}  # empty C/D skipped
    assert recs[2]["options"] == {"A": "Good", "B": "Usable", "C": "Reject"}
    assert recs[3]["question"] == 'Which option says "y"?'
    assert recs[4].get("question_type") is None and recs[4]["extra"] == {"category": ""}
    assert np.array_equal(m.decode_image_b64(recs[0]["image"]), GRAY)
    rgb = m.decode_image_b64(recs[1]["image"])
    assert rgb.shape == (3, 3, 3) and rgb[1, 1].tolist() == [10, 20, 30]
    assert recs[2]["image"] == recs[1]["image"]  # "1" refers to row index 1 (VLMEvalKit)
    jpeg = m.decode_image_b64(recs[3]["image"])
    assert jpeg.shape == (8, 8) and abs(int(jpeg.mean()) - 128) <= 1


def test_golden_description_and_paired_files():
    d = m.frame_to_description_records(read_tsv(GOLDEN_DESC))
    assert "question" not in d[0] and d[1]["question"].startswith("Describe")
    assert d[0]["description"].endswith("Overall, the quality of this image is usable.")
    p = m.frame_to_paired_records(read_tsv(GOLDEN_PAIRED))
    assert [r["answer"] for r in p] == ["B", "A"]
    assert np.array_equal(m.decode_image_b64(p[0]["image_b"]), EYE)


def test_write_tsv_is_the_vlmevalkit_dialect(tmp_path):
    recs = [{"index": i, "image": GRAY, "question": q, "options": {"A": "x\ty", "B": "2"},
             "answer": "A"} for i, q in enumerate(['say "hi"', "multi\nline", "NA"])]
    path = write_tsv(m.mcq_records_to_frame(recs), tmp_path / "out" / "t.tsv")
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.tsv"]  # no temp files left
    header = path.read_text().splitlines()[0]
    assert header.split("\t")[:3] == ["index", "image", "question"]  # no index column
    vlm = pd.read_csv(path, sep="\t")  # exactly how VLMEvalKit's load() reads a TSV
    assert vlm["question"].tolist()[:2] == ['say "hi"', "multi\nline"]
    assert vlm["A"].tolist() == ["x\ty"] * 3
    ours = read_tsv(path)
    assert ours["question"].tolist()[2] == "NA" and ours["B"].tolist() == ["2"] * 3


def test_read_tsv_errors(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        read_tsv(tmp_path / "missing.tsv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(FormatError, match="empty"):
        read_tsv(tmp_path / "empty.tsv")
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "idx.tsv", sep="\t")  # with a pandas index
    with pytest.raises(FormatError, match="index column"):
        read_tsv(tmp_path / "idx.tsv")


def test_qbench_json_files(tmp_path):
    entries = [{"img_path": "a.jpg", "question": "Blurry?", "candidates": ["Yes", "No"],
                "correct_ans": "Yes", "type": 0, "concern": 1}]
    path = write_qbench_json(entries, tmp_path / "q.json")
    assert read_qbench_json(path) == entries
    assert json.loads(path.read_text()) == entries
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FormatError, match="JSON"):
        read_qbench_json(tmp_path / "bad.json")


def _decoded_images(df: pd.DataFrame, column: str) -> list[np.ndarray]:
    refs = {i: v for i, v in zip(df["index"], df[column]) if len(v) > 64}
    return [m.decode_image_b64(refs.get(v, v) if len(v) <= 64 else v) for v in df[column]]


@pytest.mark.parametrize("golden, task, image_cols", [
    (GOLDEN_QA, "mcq", ["image"]), (GOLDEN_DESC, "description", ["image"]),
    (GOLDEN_PAIRED, "paired", ["image_a", "image_b"])])
def test_import_export_round_trip(workspace, tmp_path, golden, task, image_cols):
    summary = import_medqbench(workspace, golden, task)
    original = read_tsv(golden)
    assert summary.items_new == len(original) and summary.rejected == []
    out = tmp_path / "export"
    exported = export_medqbench(workspace, "eval", out)
    assert list(exported.files) == [golden.name]
    back = read_tsv(out / golden.name)
    assert list(back.columns) == list(original.columns)
    for col in original.columns:
        if col in image_cols:
            for a, b in zip(_decoded_images(original, col), _decoded_images(back, col)):
                assert a.shape == b.shape and np.array_equal(a, b)
        else:
            assert back[col].tolist() == original[col].tolist(), col
    # importing the exported file again (same name -> same item ids) changes nothing
    again = import_medqbench(workspace, out / golden.name, task)
    assert again.items_unchanged == len(original) and again.items_new == 0


def test_import_keeps_source_index_and_fields(workspace):
    import_medqbench(workspace, GOLDEN_QA, "mcq")
    rows = {r["source_index"]: r for r in workspace.catalog.query(
        "SELECT * FROM items WHERE split = 'eval' AND kind = 'mcq'")}
    assert set(rows) == {"0", "1", "2", "3", "007"}
    assert rows["0"]["answer"] == "B" and rows["0"]["level"] == 1
    assert rows["0"]["question_type"] == "Yes-or-No" and rows["0"]["modality"] == "CT"
    assert json.loads(rows["1"]["options"]) == {"A": "Blur", "B": "Noise",
                                                "C": "Stain variation", "D": "None"}
    assert rows["1"]["image_id"] == rows["2"]["image_id"]  # shared image stored once
    assert workspace.catalog.scalar("SELECT count(*) FROM images") == 4


def test_strict_import_writes_nothing_on_a_bad_row(workspace, tmp_path):
    df = read_tsv(GOLDEN_QA)
    df.loc[3, "answer"] = "F"
    bad = write_tsv(df, tmp_path / "bad.tsv")
    with pytest.raises(FormatError) as exc:
        import_medqbench(workspace, bad, "mcq")
    assert "row 4" in str(exc.value) and "answer" in str(exc.value) and "bad.tsv" in str(exc.value)
    assert workspace.catalog.scalar("SELECT count(*) FROM items") == 0
    assert workspace.catalog.scalar("SELECT count(*) FROM images") == 0
    assert list(workspace.objects.list("")) == []
    lenient = import_medqbench(workspace, bad, "mcq", strict=False)
    assert lenient.items_new == 4 and lenient.rejected[0]["row"] == 4


def test_import_wrong_task_is_refused(workspace):
    with pytest.raises(FormatError, match="'mcq' TSV"):
        import_medqbench(workspace, GOLDEN_QA, "description")


def test_image_path_tsv_round_trip(workspace, tmp_path):
    from PIL import Image
    src = tmp_path / "src"
    (src / "imgs").mkdir(parents=True)
    Image.fromarray(GRAY).save(src / "imgs" / "a.png")
    Image.fromarray(EYE).save(src / "imgs" / "b.png")
    frame = m.mcq_records_to_frame([
        {"index": 0, "image_path": "imgs/a.png", "question": "q", "options": {"A": "1", "B": "2"},
         "answer": "A"},
        {"index": 1, "image_path": "imgs/b.png", "question": "r", "options": {"A": "1", "B": "2"},
         "answer": "B"}])
    write_tsv(frame, src / "paths.tsv")
    import_medqbench(workspace, src / "paths.tsv", "mcq")
    out = tmp_path / "out"
    export_medqbench(workspace, "eval", out)
    back = read_tsv(out / "paths.tsv")
    assert back["image_path"].tolist() == ["imgs/a.png", "imgs/b.png"]
    assert np.array_equal(np.asarray(Image.open(out / "imgs" / "b.png")), EYE)


def test_image_references_are_written_back(workspace, tmp_path):
    import_medqbench(workspace, GOLDEN_QA, "mcq")
    export_medqbench(workspace, "eval", tmp_path / "out")
    back = read_tsv(tmp_path / "out" / GOLDEN_QA.name)
    original = read_tsv(GOLDEN_QA)
    assert back.loc[2, "image"] == "1"  # VLMEvalKit-style reference kept
    same = [c for c in original.columns if c != "image"]
    assert back[same].equals(original[same])
    png_rows = [0, 1, 2, 4]  # PNG images come back byte-identical, the JPEG as PNG
    assert back.loc[png_rows, "image"].tolist() == original.loc[png_rows, "image"].tolist()


def test_qbench_import_export_round_trip(workspace, tmp_path):
    from PIL import Image

    from medq.storage.medqbench_catalog import export_qbench, import_qbench
    (tmp_path / "imgs").mkdir()
    Image.fromarray(GRAY).save(tmp_path / "imgs" / "a.png")
    Image.fromarray(EYE).save(tmp_path / "imgs" / "b.png")
    entries = [{"img_path": "imgs/a.png", "question": "Is it noisy?", "candidates": ["Yes", "No"],
                "correct_ans": "No", "type": 0, "concern": 0},
               {"img_path": "imgs/b.png", "question": "How is the clarity?",
                "candidates": ["High", "Medium", "Low"], "correct_ans": "High", "type": 2,
                "concern": 1}]
    write_qbench_json(entries, tmp_path / "qbench.json")
    s = import_qbench(workspace, tmp_path / "qbench.json")
    assert s.items_new == 2
    rows = workspace.catalog.query("SELECT * FROM items ORDER BY source_index")
    assert [r["question_type"] for r in rows] == ["Yes-or-No", "How"]
    assert [r["answer"] for r in rows] == ["B", "A"]
    n = export_qbench(workspace, "eval", tmp_path / "out" / "qbench.json")
    assert n == 2 and read_qbench_json(tmp_path / "out" / "qbench.json") == entries
    from PIL import Image as _I
    assert np.array_equal(np.asarray(_I.open(tmp_path / "out" / "imgs" / "a.png")), GRAY)
