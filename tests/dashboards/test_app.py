"""The Streamlit script itself, run headless with Streamlit's AppTest (no browser, no server):
no exception, the headline metrics, and the empty-workspace message."""
from __future__ import annotations

from medq.dashboards import app_path


def _run(monkeypatch, workspace):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("MEDQ_WORKSPACE", str(workspace))
    at = AppTest.from_file(str(app_path()), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_default_view_on_the_dashboard_world(monkeypatch, dashboard_workspace):
    at = _run(monkeypatch, dashboard_workspace.root)
    metrics = {m.label: m.value for m in at.metric}
    h = dashboard_workspace.catalog.query(
        "SELECT count(*) AS n, count(*) FILTER (WHERE promoted) AS p FROM rounds "
        "WHERE status = 'done'")[0]
    assert metrics["Rounds finished"] == str(h["n"])
    assert metrics["Promoted"] == f"{h['p']} of {h['n']}"
    assert metrics["Champion accuracy"].endswith(" %")
    assert any("rendered rounds" in c.value for c in at.caption)


def test_empty_workspace_says_what_to_do(monkeypatch, workspace):
    at = _run(monkeypatch, workspace.root)
    assert {m.label: m.value for m in at.metric}["Rounds finished"] == "0"
    assert any("medq run" in i.value for i in at.info)
