"""A person's console: `medq demo` / `medq run` show one line per finished step and the round
table; Prefect's own logs go to <workspace>/logs/prefect.log unless --verbose."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from medq.cli.run_logs import STEP_LOGGER, route_prefect_logs


def test_prefect_console_logs_go_to_a_file_in_the_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_LOGGING_SETTINGS_PATH", raising=False)
    log = route_prefect_logs(tmp_path / "ws")
    assert log == (tmp_path / "ws" / "logs" / "prefect.log").resolve()
    settings = os.environ["PREFECT_LOGGING_SETTINGS_PATH"]
    config = yaml.safe_load(open(settings))
    assert config["handlers"]["file"]["filename"] == str(log)
    assert config["handlers"]["console"]["level"] == "ERROR"  # failures stay on the console
    assert config["root"]["handlers"] == ["file", "console"]
    assert config["loggers"][STEP_LOGGER]["handlers"] == ["steps", "file"]
    # a second call (demo -> run) keeps the same file; --verbose leaves Prefect alone
    assert route_prefect_logs(tmp_path / "ws") == log
    assert route_prefect_logs(tmp_path / "ws", verbose=True) is None


def test_a_logging_config_the_user_set_is_left_alone(tmp_path, monkeypatch):
    mine = tmp_path / "mine.yml"
    monkeypatch.setenv("PREFECT_LOGGING_SETTINGS_PATH", str(mine))
    assert route_prefect_logs(tmp_path / "ws") is None
    assert os.environ["PREFECT_LOGGING_SETTINGS_PATH"] == str(mine)
    assert not (tmp_path / "ws" / "logs").exists()


@pytest.mark.timeout(600)
def test_demo_console_shows_steps_not_prefect_lines(tmp_path):
    ws = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEDQ_", "PREFECT_HOME", "PREFECT_LOGGING", "PREFECT_API"))}
    out = subprocess.run(
        [sys.executable, "-m", "medq.cli", "demo", "--workspace", str(ws), "--rounds", "1",
         "--eval-size", "12", "--pool-size", "120", "--seed-size", "20", "--candidates", "20",
         "--budget", "10"], env=env, capture_output=True, text=True, timeout=540)
    assert out.returncode == 0, out.stderr[-3000:]
    console = out.stdout + out.stderr
    for step in ("discover", "explore", "route", "annotate", "curate", "finetune"):
        assert f"r001 {step}: " in console, console[-3000:]
    assert "MedQ rounds" in out.stdout
    assert "Task run" not in console and "Flow run" not in console, console[-3000:]
    log = (ws / "logs" / "prefect.log").read_text()
    assert "Task run" in log and "Flow run" in log
