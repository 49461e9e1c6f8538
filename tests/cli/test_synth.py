"""`medq synth world` and `medq synth pool` from the command line."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from medq.cli import app

runner = CliRunner()


def test_synth_world_json(tmp_path):
    out = tmp_path / "w"
    res = runner.invoke(app, ["synth", "world", "--out", str(out), "--eval", "2", "--pool", "4",
                              "--seed-set", "3", "--seed", "1", "--size", "48",
                              "--modalities", "CT,histopathology=2", "--bias", "CT",
                              "--bias-factor", "0", "--rare", "blur", "--rare-share", "0.25",
                              "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["counts"]["pool"] == 4 and data["counts"]["eval_questions"] == 6
    meta = json.loads((out / "world.json").read_text())
    assert meta["spec"]["seed_bias"]["modalities"] == ["CT"]
    assert meta["spec"]["pool_rare"]["degradations"] == ["blur"]
    seed_mods = {json.loads(x)["modality"] for x in
                 (out / "seed" / "seed_labels.jsonl").read_text().splitlines()}
    assert seed_mods == {"histopathology"}


def test_synth_world_bad_arguments(tmp_path):
    res = runner.invoke(app, ["synth", "world", "--out", str(tmp_path / "w"),
                              "--modalities", "PET"])
    assert res.exit_code == 1 and "unknown modality 'PET'" in res.output
    res = runner.invoke(app, ["synth", "world", "--out", str(tmp_path / "w"), "--levels", "1,x"])
    assert res.exit_code == 1 and "--levels" in res.output


def test_synth_pool_register(tmp_path):
    out = tmp_path / "pool.parquet"
    ws = tmp_path / "ws"
    res = runner.invoke(app, ["synth", "pool", "--size", "50", "--out", str(out),
                              "--image-size", "48", "--modalities", "X-ray", "--register",
                              "--workspace", str(ws), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["manifest"]["rows"] == 50 and data["registered"]["items_new"] == 50
