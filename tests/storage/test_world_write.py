"""A small world written, re-read through the MedQ-Bench readers and the label parser, and
rewritten byte for byte."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from medq.engine import taxonomy
from medq.engine.formats.medqbench import (
    frame_to_description_records,
    frame_to_mcq_records,
    frame_to_paired_records,
)
from medq.engine.formats.world_labels import parse_label_line
from medq.engine.world_plan import Mix, Selection, WorldSpec
from medq.storage.medqbench_io import read_tsv
from medq.storage.world_writer import WorldWriteError, write_world

MIX = Mix(modalities={"CT": 1.0, "histopathology": 1.0, "endoscopy": 1.0, "X-ray": 1.0})


def _spec(**kw):
    base = {"eval_size": 4, "pool_size": 8, "seed_size": 5, "seed": 11, "image_size": 48,
            "mix": MIX, "paired": 2, "seed_bias": Selection(modalities=("endoscopy",), factor=0.0)}
    base.update(kw)
    return WorldSpec(**base)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "w"
    calls = []
    result = write_world(_spec(), out, progress=lambda d, t, s: calls.append((d, t, s)))
    return out, result, calls


def test_layout_and_labels(world):
    out, _, calls = world
    for rel in ("world.json", "provenance.jsonl", "eval/medqbench_QA_test.tsv",
                "eval/medqbench_description_test.tsv", "eval/medqbench_paired_test.tsv",
                "seed/seed_labels.jsonl", "pool/pool_labels.jsonl"):
        assert (out / rel).is_file(), rel
    assert calls[-1][0] == calls[-1][1] == 4 + 8 + 5 + 2 * 2
    for split, n in (("seed", 5), ("pool", 8)):
        lines = (out / split / f"{split}_labels.jsonl").read_text().splitlines()
        assert len(lines) == n
        for k, line in enumerate(lines):
            raw = json.loads(line)
            assert set(raw) == {"image", "modality", "verdict", "degradations", "description"}
            label = parse_label_line(raw, where=f"{split}:{k}")
            assert (out / split / label["image"]).is_file()
            assert label["verdict"] == taxonomy.verdict_for(label["degradations"])
            assert label["description"].endswith(taxonomy.verdict_sentence(label["verdict"]))
            assert raw["modality"] in MIX.modalities
    seed_mods = [json.loads(x)["modality"] for x in
                 (out / "seed" / "seed_labels.jsonl").read_text().splitlines()]
    assert "endoscopy" not in seed_mods
    meta = json.loads((out / "world.json").read_text())
    assert WorldSpec.from_dict(meta["spec"]) == _spec()
    assert meta["counts"]["pool"] == 8 and meta["bases"]
    for prov in meta["bases"].values():
        assert {"package", "file", "ref", "modality"} <= set(prov)
    prov_lines = [json.loads(x) for x in (out / "provenance.jsonl").read_text().splitlines()]
    assert len(prov_lines) == 4 + 8 + 5 + 4
    assert all("base_ref" in p and "steps" in p and "view" in p for p in prov_lines)


def test_eval_tsvs_read_back(world):
    out, _, _ = world
    qa = read_tsv(out / "eval/medqbench_QA_test.tsv")
    assert list(qa.columns[:8]) == ["index", "image", "question", "A", "B", "C", "D", "answer"]
    assert {"modality", "question_type", "level", "degradation"} <= set(qa.columns)
    records = frame_to_mcq_records(qa)
    assert len(records) == 4 * 3
    assert {r["question_type"] for r in records} == set(taxonomy.QUESTION_TYPES)
    for r in records:
        assert r["answer"] in r["options"]
        assert isinstance(r["image"], str) and len(r["image"]) > 64  # refs resolved to base64
    desc = frame_to_description_records(read_tsv(out / "eval/medqbench_description_test.tsv"))
    assert len(desc) == 4
    assert all(taxonomy.VERDICT_SENTENCE.split("{")[0] in d["description"] for d in desc)
    paired = frame_to_paired_records(read_tsv(out / "eval/medqbench_paired_test.tsv"))
    assert len(paired) == 2


def test_rewrite_is_byte_identical_and_removes_stale_files(world, tmp_path):
    out, _, _ = world
    before = _digest(out)
    write_world(_spec(), out)
    assert _digest(out) == before
    other = tmp_path / "w2"
    write_world(_spec(pool_size=10), other)
    write_world(_spec(pool_size=3, paired=0), other)
    pngs = sorted(p.name for p in (other / "pool").glob("*.png"))
    assert pngs == ["pool_000000.png", "pool_000001.png", "pool_000002.png"]
    assert not (other / "eval/medqbench_paired_test.tsv").exists()
    labels = (other / "pool" / "pool_labels.jsonl").read_text().splitlines()
    assert [json.loads(x)["image"] for x in labels] == pngs
    # The eval set does not depend on the pool size.
    assert _digest(other)["eval/medqbench_QA_test.tsv"] == before["eval/medqbench_QA_test.tsv"]


def test_images_decode_to_the_rendered_size(world):
    from PIL import Image
    out, _, _ = world
    for p in (out / "pool").glob("*.png"):
        with Image.open(p) as im:
            assert im.size == (48, 48)
            assert np.asarray(im).dtype == np.uint8


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WorldWriteError, match="not empty"):
        write_world(_spec(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
