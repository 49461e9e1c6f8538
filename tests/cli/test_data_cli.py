"""`medq load world`, `medq import/export medqbench`, `medq ingest` through the real CLI."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from medq.cli import app
from medq.storage.medqbench_io import read_tsv, write_tsv
from tests.storage.ingest_corpus import dicom, dicom_bytes, noise, png
from tests.storage.test_world_loader import make_world

GOLDEN_QA = Path(__file__).resolve().parents[1] / "data" / "medqbench_golden_QA.tsv"
runner = CliRunner()


def _text(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ingest_cli(tmp_path):
    src = tmp_path / "src"
    (src / "ct").mkdir(parents=True)
    (src / "ct" / "a.dcm").write_bytes(dicom_bytes(dicom("CT_small.dcm")))
    (src / "b.png").write_bytes(png(noise((20, 30), 1)))
    (src / "c.png").write_text("garbage")
    ws = tmp_path / "ws"
    out = _json(runner.invoke(app, ["ingest", str(src), "--split", "pool", "--json",
                                    "--workspace", str(ws)]))
    assert out["ingested"] == 2 and out["quarantined"] == {"not_an_image": 1}
    assert out["modalities"] == {"CT": 1, "unknown": 1}
    again = _json(runner.invoke(app, ["ingest", str(src), "--split", "pool", "--json",
                                      "-w", str(ws)]))
    assert again["ingested"] == 0 and again["skipped_existing"] == 2
    human = runner.invoke(app, ["ingest", str(src), "--split", "pool", "-w", str(ws)])
    assert human.exit_code == 0 and "quarantined" in _text(human)
    bad = runner.invoke(app, ["ingest", str(src), "--split", "holdout", "-w", str(ws)])
    assert bad.exit_code == 1 and "split must be one of" in _text(bad)


def test_ingest_cli_nifti_axis(tmp_path):
    from tests.storage.ingest_corpus import nifti, smooth_volume
    (tmp_path / "v.nii").write_bytes(nifti(smooth_volume((30, 28, 20)), gz=False))
    out = _json(runner.invoke(app, ["ingest", str(tmp_path / "v.nii"), "--split", "eval",
                                    "--nifti-axis", "1", "--nifti-slices", "4", "--json",
                                    "-w", str(tmp_path / "ws")]))
    assert out["ingested"] == 4


def test_import_export_cli(tmp_path):
    ws = tmp_path / "ws"
    out = _json(runner.invoke(app, ["import", "medqbench", str(GOLDEN_QA), "--task", "mcq",
                                    "--json", "-w", str(ws)]))
    assert out["items_new"] == 5 and out["task"] == "mcq"
    exp = _json(runner.invoke(app, ["export", "medqbench", "--split", "eval", "--out",
                                    str(tmp_path / "out"), "--json", "-w", str(ws)]))
    assert exp["files"] == {GOLDEN_QA.name: 5}
    back = read_tsv(tmp_path / "out" / GOLDEN_QA.name)
    assert back["answer"].tolist() == read_tsv(GOLDEN_QA)["answer"].tolist()


def test_import_cli_bad_file_names_row_and_column(tmp_path):
    df = read_tsv(GOLDEN_QA)
    df.loc[1, "question"] = ""
    write_tsv(df, tmp_path / "bad.tsv")
    res = runner.invoke(app, ["import", "medqbench", str(tmp_path / "bad.tsv"), "--task", "mcq",
                              "-w", str(tmp_path / "ws")])
    assert res.exit_code == 1
    assert "row 2" in _text(res) and "question" in _text(res)
    res = runner.invoke(app, ["import", "medqbench", str(tmp_path / "missing.tsv"),
                              "-w", str(tmp_path / "ws")])
    assert res.exit_code == 1 and "not found" in _text(res)


def test_load_world_cli(tmp_path):
    make_world(tmp_path / "world")
    ws = tmp_path / "ws"
    out = _json(runner.invoke(app, ["load", "world", str(tmp_path / "world"), "--json",
                                    "-w", str(ws)]))
    assert out["train"] == 2 and out["pool"] == 3 and out["unknown_degradations"]
    human = runner.invoke(app, ["load", "world", str(tmp_path / "world"), "-w", str(ws)])
    assert human.exit_code == 0 and "unknown degradation types" in _text(human)
    missing = runner.invoke(app, ["load", "world", str(tmp_path / "nope"), "-w", str(ws)])
    assert missing.exit_code == 1 and "does not exist" in _text(missing)
