"""`load_world`: eval TSVs, labelled seed, pool with oracle labels kept aside; idempotent."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medq.engine.formats import medqbench as m
from medq.storage.images import load_images
from medq.storage.medqbench_io import write_tsv
from medq.storage.world_loader import WorldError, export_medqbench, load_world
from tests.storage.ingest_corpus import noise, png
from tests.storage.test_ingest import dump, objects_bytes


def make_world(root: Path) -> dict:
    """A tiny hand-made world with a few deliberate problems."""
    imgs = {f"img{i}": noise((24, 20) if i % 2 else (16, 16, 3), seed=100 + i) for i in range(8)}
    (root / "eval").mkdir(parents=True)
    write_tsv(m.mcq_records_to_frame([
        {"index": 0, "image": imgs["img0"], "question": "Is there noise?",
         "options": {"A": "Yes", "B": "No"}, "answer": "A", "modality": "CT",
         "question_type": "Yes-or-No", "level": "mild", "degradation": "low_dose"},
        {"index": 1, "image": imgs["img1"], "question": "What is wrong?",
         "options": {"A": "blur", "B": "noise", "C": "flare"}, "answer": "C", "modality": "fundus",
         "question_type": "What", "level": "severe", "degradation": "lens_flare"},
        {"index": 2, "image": imgs["img2"], "question": "How good?",
         "options": {"A": "good", "B": "bad"}, "answer": "B", "modality": "MRI"},
    ]).assign(answer=["A", "C", "E"]), root / "eval" / "medqbench_QA_test.tsv")  # row 3 is bad
    write_tsv(m.description_records_to_frame([
        {"index": 0, "image": imgs["img0"], "description": "Mild noise. Overall, the quality of "
         "this image is usable.", "modality": "CT"}]),
        root / "eval" / "medqbench_description_test.tsv")
    write_tsv(m.paired_records_to_frame([
        {"index": 0, "image_a": imgs["img0"], "image_b": imgs["img2"],
         "description": "The second is better.", "answer": "B"}]),
        root / "eval" / "medqbench_paired_description_test.tsv")
    (root / "seed" / "ct").mkdir(parents=True)
    (root / "seed" / "ct" / "a.png").write_bytes(png(imgs["img3"]))
    (root / "seed" / "b.png").write_bytes(png(imgs["img4"]))
    (root / "seed" / "unlabelled.png").write_bytes(png(imgs["img7"]))
    seed_lines = [
        json.dumps({"image": "ct/a.png", "modality": "CT", "verdict": "usable",
                    "degradations": [{"type": "low_dose", "level": 1}],
                    "description": "Some noise. Overall, the quality of this image is usable."}),
        json.dumps({"image": "b.png", "modality": "fundus", "verdict": "reject",
                    "degradations": [{"type": "lens_flare", "level": 2}],
                    "description": "Flare. Overall, the quality of this image is reject."}),
        "{not json",
        json.dumps({"image": "missing.png", "modality": "CT", "verdict": "good",
                    "degradations": []}),
        json.dumps({"image": "b.png", "modality": "CT", "verdict": "meh", "degradations": []}),
    ]
    (root / "seed_labels.jsonl").write_text("\n".join(seed_lines) + "\n")
    (root / "pool").mkdir()
    for i in (5, 6, 7):
        (root / "pool" / f"p{i}.png").write_bytes(png(imgs[f"img{i}"]))
    (root / "pool" / "broken.png").write_bytes(b"not a png")
    pool_lines = [
        json.dumps({"image": "p5.png", "modality": "MRI", "verdict": "good", "degradations": [],
                    "description": "Clean. Overall, the quality of this image is good."}),
        json.dumps({"image": "p6.png", "modality": "MRI", "verdict": "usable",
                    "degradations": [{"type": "motion", "level": 1}]}),
    ]
    (root / "pool" / "pool_labels.jsonl").write_text("\n".join(pool_lines) + "\n")
    return imgs


def test_load_world(workspace, tmp_path):
    imgs = make_world(tmp_path / "world")
    s = load_world(workspace, tmp_path / "world")
    cat = workspace.catalog
    assert s.eval == {"medqbench_QA_test.tsv": 2, "medqbench_description_test.tsv": 1,
                      "medqbench_paired_description_test.tsv": 1}
    assert s.eval_tasks["medqbench_paired_description_test.tsv"] == "paired"
    assert s.train == 2 and s.pool == 3 and s.oracle_labels == 2 and s.pool_unlabelled == 1
    assert s.unknown_degradations == {"lens_flare": 2}  # one eval row, one seed label
    assert s.quarantined == {"bad_json": 1, "bad_label": 1, "bad_row": 1, "missing_image": 1,
                             "not_an_image": 1, "unlabelled_seed_image": 1}
    reasons = {r["ref"]: r["reason"] for r in cat.query("SELECT * FROM quarantine")}
    assert any(ref.endswith("medqbench_QA_test.tsv:row 3") and "answer" in why
               for ref, why in reasons.items())
    assert "seed_labels.jsonl:3" in reasons and "seed_labels.jsonl:5" in reasons
    assert "verdict" in reasons["seed_labels.jsonl:5"]

    evals = cat.query("SELECT * FROM items WHERE split = 'eval' ORDER BY item_id")
    mcq = {i["source_index"]: i for i in evals if i["kind"] == "mcq"}
    assert mcq["0"]["question"] == "Is there noise?" and mcq["0"]["answer"] == "A"
    assert json.loads(mcq["1"]["degradations"]) == [{"type": "lens_flare", "level": 2}]
    desc = next(i for i in evals if i["kind"] == "description")
    assert desc["verdict"] == "usable"
    paired = next(i for i in evals if i["kind"] == "paired")
    assert paired["image_b_id"] and paired["answer"] == "B"

    train = {i["modality"]: i for i in cat.query("SELECT * FROM items WHERE split = 'train'")}
    assert train["fundus"]["verdict"] == "reject" and train["fundus"]["level"] == 2
    assert json.loads(train["CT"]["degradations"]) == [{"type": "low_dose", "level": 1}]
    assert train["CT"]["description"].endswith("usable.") and train["CT"]["kind"] == "image"

    pool = cat.query("SELECT * FROM items WHERE split = 'pool'")
    assert all(p["verdict"] is None and p["degradations"] is None and p["description"] is None
               and p["level"] is None for p in pool)
    oracle = {o["image_id"]: o for o in cat.query("SELECT * FROM oracle_labels")}
    assert {o["verdict"] for o in oracle.values()} == {"good", "usable"}
    assert set(oracle) < {p["image_id"] for p in pool}
    # pixels are stored exactly
    p5 = next(o for o in oracle.values() if o["verdict"] == "good")["image_id"]
    assert np.array_equal(load_images(workspace, [p5])[0],
                          imgs["img5"].astype(np.float32) / 255)

    # loading twice changes nothing
    before, objs = dump(workspace), objects_bytes(workspace)
    again = load_world(workspace, tmp_path / "world")
    assert again.items_new == 0 and again.items_updated == 0 and again.images_new == 0
    assert again.items_unchanged == s.items_new
    assert dump(workspace) == before and objects_bytes(workspace) == objs


def test_world_eval_round_trips_through_export(workspace, tmp_path):
    make_world(tmp_path / "world")
    load_world(workspace, tmp_path / "world")
    out = export_medqbench(workspace, "eval", tmp_path / "out")
    assert out.files == {"medqbench_QA_test.tsv": 2, "medqbench_description_test.tsv": 1,
                         "medqbench_paired_description_test.tsv": 1}


def test_not_a_world(workspace, tmp_path):
    with pytest.raises(WorldError, match="not a world"):
        load_world(workspace, tmp_path)
    with pytest.raises(WorldError, match="does not exist"):
        load_world(workspace, tmp_path / "missing")
