"""The evaluate pipeline on a tiny world: every per-item row lands, metrics match the script,
re-running does not duplicate. `ScriptedModel` stands in for a trained model (see
tests/fixtures/eval_world.py)."""
from __future__ import annotations

import pytest

from medq.storage.catalog import loads
from tests.fixtures.eval_world import ScriptedModel, build_eval_world


def _predictions(ws, eval_id):
    return {r["item_id"]: r for r in ws.catalog.query(
        "SELECT * FROM predictions WHERE eval_id = ? ORDER BY item_id", [eval_id])}


def _check_world_result(ws, result, counts):
    rows = _predictions(ws, result.eval_id if hasattr(result, "eval_id") else result["eval_id"])
    assert len(rows) == sum(counts.values()) == 9
    assert "t-1" not in rows  # train items are not evaluated
    assert {r["kind"] for r in rows.values()} == {"mcq", "description", "paired"}
    mcq = {k: r for k, r in rows.items() if r["kind"] == "mcq"}
    assert all(abs(sum(loads(r["probs"]).values()) - 1) < 1e-9 for r in mcq.values())
    assert all(0 <= r["entropy"] <= 1 for r in mcq.values())
    assert mcq["q-ct-2"]["predicted"] == "B" and mcq["q-ct-2"]["correct"]  # from the text
    assert mcq["q-mr-3"]["predicted"] is None and mcq["q-mr-3"]["correct"] is False
    desc = rows["d-ct-1"]
    assert desc["predicted"] == "usable" and desc["correct"] and desc["score"] == 8
    assert loads(desc["scores"])["completeness"] == 2
    assert rows["d-mr-2"]["score"] == 3 and rows["d-mr-2"]["correct"] is False
    assert rows["p-1"]["predicted"] == "A" and rows["p-1"]["correct"] is False


def _check_metrics(metrics):
    m = metrics["mcq"]
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert m["per_modality"]["CT"]["accuracy"] == 1.0
    assert m["per_modality"]["MRI"]["accuracy"] == pytest.approx(1 / 3)
    assert {k: v["accuracy"] for k, v in m["per_type"].items()} == pytest.approx(
        {"Yes-or-No": 0.5, "What": 1.0, "How": 0.5})
    assert {k: v["accuracy"] for k, v in m["per_level"].items()} == pytest.approx(
        {"none": 2 / 3, "mild": 1.0, "severe": 0.0})
    assert m["unparsed"] == 1 and 0 <= m["ece"] <= 1
    d = metrics["description"]
    assert (d["completeness"], d["preciseness"], d["consistency"], d["quality_accuracy"]) == (
        1.0, 1.5, 2.0, 1.0)
    assert d["overall"] == pytest.approx(5.5)
    assert d["per_modality"]["CT"]["overall"] == 8
    assert metrics["paired"]["comparison_accuracy"] == 0.0
    assert metrics["paired"]["quality_accuracy"] == 0 and metrics["paired"]["consistency"] == 2


def test_evaluate_model_plain_call_is_idempotent(workspace):
    from medq.tasks.evaluate import evaluate_model

    counts = build_eval_world(workspace)
    model = ScriptedModel()
    seen = []
    result = evaluate_model(workspace, model, "rules", batch_size=4,
                            progress=lambda stage, done, total: seen.append((stage, done, total)))
    _check_world_result(workspace, result, counts)
    _check_metrics(result.metrics)
    assert seen[-1][1:] == (9, 9)
    again = evaluate_model(workspace, model, "rules", batch_size=2)
    assert again.eval_id == result.eval_id and again.metrics == result.metrics
    assert workspace.catalog.scalar("SELECT count(*) FROM predictions") == 9
    runs = workspace.catalog.query("SELECT * FROM eval_runs")
    assert len(runs) == 1 and runs[0]["model_version"] == "scripted-v1"
    assert loads(runs[0]["metrics"]) == result.metrics
    # Another model version is a separate evaluation.
    other = evaluate_model(workspace, ScriptedModel("scripted-v2"), "rules")
    assert other.eval_id != result.eval_id
    assert workspace.catalog.scalar("SELECT count(*) FROM predictions") == 18


def test_evaluate_without_items_or_bad_judge_fails_clearly(workspace):
    from medq.errors import MedQError
    from medq.tasks.evaluate import evaluate_model

    with pytest.raises(MedQError, match="no evaluation items"):
        evaluate_model(workspace, ScriptedModel(), "rules")
    build_eval_world(workspace)
    with pytest.raises(MedQError, match="unknown judge"):
        evaluate_model(workspace, ScriptedModel(), "gpt")
    assert workspace.catalog.scalar("SELECT count(*) FROM predictions") == 0


def test_evaluate_flow_run_writes_every_row_once(workspace, prefect_engine, monkeypatch):
    import medq.tasks.evaluate as tasks
    from medq.flows.evaluate import evaluate_flow

    counts = build_eval_world(workspace)
    loaded = []

    def fake_registry(ws, version):
        loaded.append(version)
        return ScriptedModel(version)

    monkeypatch.setattr(tasks, "resolve_model_version", fake_registry)
    out = evaluate_flow(model_version="scripted-v1", judge="rules", workspace=str(workspace.root))
    assert loaded == ["scripted-v1"]
    _check_world_result(workspace, out, counts)
    _check_metrics(out["metrics"])
    again = evaluate_flow(model_version="scripted-v1", workspace=str(workspace.root))
    assert again["eval_id"] == out["eval_id"]
    assert workspace.catalog.scalar("SELECT count(*) FROM predictions") == 9
    assert workspace.catalog.scalar("SELECT count(*) FROM eval_runs") == 1

    from prefect.artifacts import Artifact
    artifact = Artifact.get("evaluate-scripted-v1")
    assert artifact is not None and "| scripted-v1 | 66.67 | 100.00 | 33.33 |" in artifact.data


def test_evaluate_flow_with_llm_judge_caches_judgements(workspace, prefect_engine, monkeypatch,
                                                        fake_openai):
    import medq.tasks.evaluate as tasks
    from medq.flows.evaluate import evaluate_flow

    url, server = fake_openai
    build_eval_world(workspace)
    monkeypatch.setattr(tasks, "resolve_model_version", lambda ws, v: ScriptedModel(v))
    out = evaluate_flow(model_version="scripted-v1", judge=f"openai:{url}",
                        workspace=str(workspace.root))
    # 2 descriptions + 1 paired text, 4 dimensions each; the fake judge gives 1/1/1/2.
    assert len(server.seen) == 12
    assert out["judge"] == f"openai:gpt-4o@{url}"
    assert out["metrics"]["description"]["overall"] == pytest.approx(5.0)
    rows = _predictions(workspace, out["eval_id"])
    assert loads(rows["d-ct-1"]["scores"])["quality_accuracy"] == 2
    # Same texts, same judge: the judgements come from Prefect's cache, no new request.
    again = evaluate_flow(model_version="scripted-v1", judge=f"openai:{url}",
                          workspace=str(workspace.root))
    assert len(server.seen) == 12 and again["metrics"] == out["metrics"]
    # The rules-judge evaluation of the same model is a separate eval run.
    rules = evaluate_flow(model_version="scripted-v1", workspace=str(workspace.root))
    assert rules["eval_id"] != out["eval_id"]
    assert workspace.catalog.scalar("SELECT count(*) FROM eval_runs") == 2
