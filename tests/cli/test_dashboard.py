"""`medq dashboard`: argument handling (the served app is tested in tests/e2e)."""
from __future__ import annotations

import os

from typer.testing import CliRunner

from medq.cli import app

runner = CliRunner()


def test_dashboard_needs_a_workspace(tmp_path):
    result = runner.invoke(app, ["dashboard", "-w", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "no MedQ workspace" in result.output and "medq init" in result.output


def test_dashboard_runs_streamlit_on_loopback(tmp_path, monkeypatch):
    assert runner.invoke(app, ["init", "-w", str(tmp_path / "ws")]).exit_code == 0
    calls = []

    def fake_exec(path, argv, env):  # stands in for replacing the process with streamlit
        calls.append((argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_exec)
    result = runner.invoke(app, ["dashboard", "-w", str(tmp_path / "ws"), "--port", "8599"])
    assert result.exit_code == 0, result.output
    argv, env = calls[0]
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4].endswith("dashboards/app.py")
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == "8599"
    assert argv[argv.index("--server.headless") + 1] == "true"
    assert env["MEDQ_WORKSPACE"] == str((tmp_path / "ws").resolve())
