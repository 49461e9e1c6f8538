"""`medq init`, `medq status`, `medq services ...`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medq.cli import app
from medq.storage.catalog import LATEST_VERSION

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _json(result) -> object:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


def test_init_then_status_json(tmp_path):
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["init", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert (ws / "medq.yaml").is_file() and (ws / "catalog.duckdb").is_file()
    result = runner.invoke(app, ["status", "--json", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    report = _json(result)
    assert report["ok"] is True and report["initialized"] is True
    assert report["workspace"] == str(ws.resolve())
    assert report["catalog"]["schema_version"] == LATEST_VERSION
    assert report["catalog"]["tables"]["items"] == 0
    assert report["objects"] == {"backend": "local", "location": (ws / "objects").resolve().as_uri(),
                                 "reachable": True}
    assert report["settings"]["services"]["labelstudio_password"] == "**********"
    # init again: idempotent, nothing lost
    assert runner.invoke(app, ["init", "-w", str(ws)]).exit_code == 0


def test_status_of_an_empty_folder_creates_nothing(tmp_path):
    ws = tmp_path / "nothing-here"
    result = runner.invoke(app, ["status", "--json", "-w", str(ws)])
    assert result.exit_code == 1
    report = _json(result)
    assert report["ok"] is False and report["initialized"] is False
    assert "medq init" in report["catalog"]["error"]
    assert not ws.exists()


def test_status_reports_a_corrupt_catalog_and_a_dead_s3(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", "-w", str(ws)]).exit_code == 0
    (ws / "catalog.duckdb").write_bytes(b"garbage" * 100)
    monkeypatch.setenv("MEDQ_OBJECTS__BACKEND", "s3")
    monkeypatch.setenv("MEDQ_OBJECTS__S3_ENDPOINT", "127.0.0.1:1")
    monkeypatch.setenv("MEDQ_OBJECTS__S3_SECRET_KEY", "very-secret-key-value")
    result = runner.invoke(app, ["status", "--json", "-w", str(ws)])
    assert result.exit_code == 1
    report = _json(result)
    assert "not a DuckDB database" in report["catalog"]["error"]
    assert report["objects"]["reachable"] is False
    assert "127.0.0.1:1" in report["objects"]["error"]
    assert "very-secret-key-value" not in result.output
    # human output: one clear screen, no traceback
    result = runner.invoke(app, ["status", "-w", str(ws)])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_init_on_a_foreign_file_is_one_clear_line(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "catalog.duckdb").write_bytes(b"\x00" * 64)
    result = runner.invoke(app, ["init", "-w", str(ws)])
    assert result.exit_code == 1
    assert "error:" in result.output and "catalog.duckdb" in result.output
    assert "Traceback" not in result.output
    assert (ws / "catalog.duckdb").read_bytes() == b"\x00" * 64


def test_init_and_status_in_a_new_folder_as_a_real_process(tmp_path):
    """`medq init && medq status --json` with the default workspace (.medq in the cwd)."""
    medq = Path(sys.executable).with_name("medq")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDQ_")}
    cmd = f"'{medq}' init && '{medq}' status --json"
    proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert report["workspace"] == str(tmp_path / ".medq") and report["ok"] is True


def test_services_status_json_without_servers(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDQ_SERVICES_DIR", str(tmp_path / "svc"))
    result = runner.invoke(app, ["services", "status", "--json", "s3", "prefect"])
    assert result.exit_code == 1  # named services that are not running
    states = {s["name"]: s["state"] for s in _json(result)}
    assert states == {"s3": "stopped", "prefect": "stopped"}
    result = runner.invoke(app, ["services", "status", "nosuch"])
    assert result.exit_code == 1 and "unknown service 'nosuch'" in result.output


@pytest.mark.services
def test_services_up_status_down_s3(tmp_path, monkeypatch):
    from tests.fixtures.s3 import free_port
    port = free_port()
    monkeypatch.setenv("MEDQ_SERVICES_DIR", str(tmp_path / "svc"))
    monkeypatch.setenv("MEDQ_SERVICES__S3_PORT", str(port))
    try:
        result = runner.invoke(app, ["services", "up", "s3", "--json"])
        assert result.exit_code == 0, result.output
        [up] = _json(result)
        assert up["healthy"] and up["url"] == f"http://127.0.0.1:{port}" and up["pid"]
        result = runner.invoke(app, ["services", "status", "s3", "--json"])
        assert result.exit_code == 0 and _json(result)[0]["state"] == "running"
        # The workspace can use it with a settings change only.
        ws = tmp_path / "ws"
        monkeypatch.setenv("MEDQ_OBJECTS__BACKEND", "s3")
        monkeypatch.setenv("MEDQ_OBJECTS__S3_ENDPOINT", f"127.0.0.1:{port}")
        assert runner.invoke(app, ["init", "-w", str(ws)]).exit_code == 0
        report = _json(runner.invoke(app, ["status", "--json", "-w", str(ws)]))
        assert report["ok"] and report["objects"]["reachable"] is True
    finally:
        result = runner.invoke(app, ["services", "down", "s3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["services", "status", "s3", "--json"])
    assert _json(result)[0]["state"] == "stopped"


@pytest.mark.services
@pytest.mark.slow
def test_prefect_server_up_and_down(tmp_path, monkeypatch):
    from medq.settings import load_settings
    from medq.storage.service_supervisor import services_down, services_status, services_up
    from tests.fixtures.s3 import free_port
    settings = load_settings(workspace=tmp_path / "ws",
                             services={"dir": tmp_path / "svc", "prefect_port": free_port()})
    try:
        [status] = services_up(["prefect"], settings)
        assert status.healthy and status.state == "running"
        assert (tmp_path / "svc" / "prefect" / "home").is_dir()  # PREFECT_HOME kept inside
    finally:
        services_down(["prefect"], settings)
    assert services_status(["prefect"], settings)[0].state == "stopped"


def test_services_up_on_a_busy_port_is_one_clear_error(tmp_path):
    import socket

    from medq.settings import load_settings
    from medq.storage.service_supervisor import ServiceError, services_status, services_up
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = load_settings(workspace=tmp_path / "ws",
                                 services={"dir": tmp_path / "svc", "s3_port": port})
        with pytest.raises(ServiceError, match=rf"s3: .*port {port} .*already in use"):
            services_up(["s3"], settings)
    assert services_status(["s3"], settings)[0].state == "stopped"
    with pytest.raises(ServiceError, match="unknown service 'minio'"):
        services_up(["minio"], settings)
