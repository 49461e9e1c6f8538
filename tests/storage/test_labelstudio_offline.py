"""Label Studio adapter pieces that need no server: retry policy, waiting, the script's contract."""
from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from label_studio_sdk.core.api_error import ApiError

from medq.storage.annotation.base import QueueStatus
from medq.storage.labelstudio import wait_for_batch
from medq.storage.labelstudio.client import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioError,
)

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "labelstudio.sh"


def _client(sleeps):
    return LabelStudioClient("http://127.0.0.1:9", "tok", retries=3, backoff_s=0.5,
                             backoff_max_s=1.5, sleep=sleeps.append)


def test_transient_errors_are_retried_with_backoff_then_one_clear_error():
    sleeps = []
    calls = []

    def down():
        calls.append(1)
        raise httpx.ConnectError("connection refused")
    with pytest.raises(LabelStudioError, match=r"http://127.0.0.1:9 is not reachable while trying "
                                               r"to list things.*4 tries"):
        _client(sleeps).call("list things", down)
    assert len(calls) == 4 and sleeps == [0.5, 1.0, 1.5]


def test_flaky_server_recovers_and_4xx_is_not_retried():
    sleeps, answers = [], [ApiError(status_code=503, body="busy"), "ok"]

    def flaky():
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a
    assert _client(sleeps).call("read", flaky) == "ok" and sleeps == [0.5]

    def bad():
        raise ApiError(status_code=400, body={"detail": "label config is invalid"})
    with pytest.raises(LabelStudioError, match="HTTP 400: label config is invalid") as err:
        _client(sleeps).call("create project", bad)
    assert "tries" not in str(err.value) and sleeps == [0.5]


def test_refused_token_is_an_auth_error_at_once():
    sleeps = []

    def refused():
        raise ApiError(status_code=401, body={"detail": "Invalid token."})
    with pytest.raises(LabelStudioAuthError, match="refused the API token.*labelstudio.token"):
        _client(sleeps).call("check", refused)
    assert sleeps == []
    with pytest.raises(LabelStudioAuthError, match="no API token"):
        LabelStudioClient("http://127.0.0.1:9", "")
    with pytest.raises(LabelStudioError, match="must start with http"):
        LabelStudioClient("127.0.0.1:9", "tok")


class _FakeBackend:
    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.calls = 0

    def status(self, task_ids):
        self.calls += 1
        return self.statuses[min(self.calls, len(self.statuses)) - 1]


def test_wait_for_batch_done_stopped_and_timeout():
    clock = iter(range(0, 1000, 5)).__next__
    sleeps = []
    done = wait_for_batch(_FakeBackend([QueueStatus(3, 1, 2), QueueStatus(3, 3, 0)]), ["a"] * 3,
                          timeout_s=100, poll_interval_s=5, sleep=sleeps.append, clock=clock)
    assert done.state == "done" and done.polls == 2 and "3 of 3 tasks done" in done.message
    stopped = wait_for_batch(_FakeBackend([QueueStatus(3, 2, 1)]), ["a"] * 3, timeout_s=100,
                             poll_interval_s=5, stop_when=lambda s: s.done >= 2, sleep=sleeps.append,
                             clock=iter(range(0, 1000, 5)).__next__)
    assert stopped.state == "stopped"
    timeout = wait_for_batch(_FakeBackend([QueueStatus(3, 0, 2, deleted=1)]), ["a"] * 3,
                             timeout_s=12, poll_interval_s=5, sleep=sleeps.append,
                             clock=iter(range(0, 1000, 5)).__next__)
    assert timeout.state == "timeout"
    assert "timed out after 12 s" in timeout.message and "2 pending, 1 deleted" in timeout.message


def test_script_contract_without_a_server(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MEDQ_SERVICES_DIR": str(tmp_path),
           "MEDQ_LS_DATA_DIR": str(tmp_path / "data"), "MEDQ_LS_PORT": "1"}
    status = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True, text=True, check=False)
    assert status.returncode == 3 and status.stdout.strip() == "stopped"
    usage = subprocess.run(["bash", str(SCRIPT), "bogus"], env=env, capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "usage" in usage.stderr
    start = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, check=False)
    assert start.returncode == 1 and "not installed" in start.stderr
    shown = subprocess.run(["bash", str(SCRIPT), "env"], env={**env, "MEDQ_LS_TOKEN": "secret-tok"},
                           capture_output=True, text=True, check=False)
    assert "MEDQ_LS_PORT=1" in shown.stdout and "secret-tok" not in shown.stdout


def test_slow_server_times_out_with_a_clear_error():
    sleeps = []

    def slow():
        raise httpx.ReadTimeout("read timed out")
    with pytest.raises(LabelStudioError, match=r"127.0.0.1:9 timed out while trying to pull.*4 tries"):
        _client(sleeps).call("pull", slow)
    assert len(sleeps) == 3
