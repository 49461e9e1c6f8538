"""`medq evaluate` prints VLMEvalKit-style tables and stores every per-item row.
`ScriptedModel` stands in for a trained model loaded from the registry."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from medq.cli import app
from tests.fixtures.eval_world import ScriptedModel, build_eval_world


def _patch_registry(monkeypatch):
    import medq.tasks.evaluate as tasks
    monkeypatch.setattr(tasks, "resolve_model_version", lambda ws, version: ScriptedModel(version))


def test_cli_evaluate_tables_and_json(workspace, monkeypatch):
    build_eval_world(workspace)
    _patch_registry(monkeypatch)
    runner = CliRunner(env={"COLUMNS": "200"})
    res = runner.invoke(app, ["evaluate", "--model", "scripted-v1", "-w", str(workspace.root)])
    assert res.exit_code == 0, res.output
    for text in ("Perception accuracy (%) by modality", "by question type", "by degradation level",
                 "Yes-or-No", "severe", "66.67", "ECE", "Completeness", "Overall (0-8)", "5.500",
                 "Paired description"):
        assert text in res.output, text
    res = runner.invoke(app, ["evaluate", "--model", "scripted-v1", "-w", str(workspace.root),
                              "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["metrics"]["mcq"]["per_modality"]["MRI"]["n"] == 3
    assert data["n_predictions"] == 9
    assert workspace.catalog.scalar("SELECT count(*) FROM predictions") == 9


def test_cli_evaluate_errors_are_one_line(workspace, monkeypatch, tmp_path):
    _patch_registry(monkeypatch)
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--model", "v1", "-w", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "medq init" in res.output
    build_eval_world(workspace)
    res = runner.invoke(app, ["evaluate", "--model", "v1", "-w", str(workspace.root),
                              "--judge", "openai:ftp://x"])
    assert res.exit_code == 1 and "openai:http(s)://HOST:PORT" in res.output
