"""The dashboard in a real browser: `medq dashboard` on a workspace with a few rounds of records,
driven by Debian's headless Chromium through the DevTools protocol.

Checks that every view renders without an exception, that the headline numbers on the page equal
the catalog's (computed here with plain SQL, not through the dashboard's own queries), that the
per-view numbers match, and saves a screenshot of each view (``dashboard-<view>.png``) to a
temporary folder, so a test run never changes tracked files; ``MEDQ_SCREENSHOT_DIR=docs/img``
refreshes the README's screenshots.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from medq.storage.catalog import loads

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
VIEWS = ("rounds", "breakdown", "lift", "spend", "retrieval", "gallery", "queue")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _medq_command() -> list[str]:
    script = Path(sys.executable).with_name("medq")
    return [str(script)] if script.is_file() else [sys.executable, "-c",
                                                   "from medq.cli import main; main()"]


@pytest.fixture(scope="module")
def browser():
    from medq.dashboards.browser import Browser, find_chromium
    if find_chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium; infra/install.sh)")
    with Browser(width=1440, height=1000) as b:
        yield b


@pytest.fixture(scope="module")
def server(dashboard_workspace, tmp_path_factory):
    """`medq dashboard` on a free port; yields its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "server.log"
    env = dict(os.environ, MEDQ_WORKSPACE=str(dashboard_workspace.root))
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*_medq_command(), "dashboard", "--port", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dashboard did not start: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def expected(dashboard_workspace) -> dict:
    """The headline numbers straight from the catalog."""
    cat = dashboard_workspace.catalog
    done = cat.query("SELECT promoted, report FROM rounds WHERE status = 'done' "
                     "ORDER BY round_index")
    last, first = loads(done[-1]["report"]), loads(done[0]["report"])
    champ_acc = last["accuracy_out"] if last["promoted"] else last["accuracy_in"]
    champ_desc = last["description_out"] if last["promoted"] else last["description_in"]
    return {
        "accuracy": champ_acc, "accuracy_gain": champ_acc - first["accuracy_in"],
        "description": champ_desc,
        "spend": cat.scalar("SELECT sum(spend) FROM rounds"),
        "rounds": len(done), "promoted": sum(bool(r["promoted"]) for r in done),
        "annotations": cat.scalar("SELECT count(*) FROM annotations"),
        "open_tasks": cat.scalar("SELECT count(*) FROM annotation_tasks "
                                 "WHERE status IN ('queued', 'sent')"),
        "failed_tasks": cat.scalar("SELECT count(*) FROM annotation_tasks WHERE status = 'failed'"),
        "last_round": cat.scalar("SELECT max(round_id) FROM rounds WHERE status = 'done'"),
        "running": cat.scalar("SELECT round_id FROM rounds WHERE status = 'running'"),
    }


def _metric(text: str, label: str) -> str:
    """The value shown under a metric label (Streamlit renders label, value, delta lines)."""
    m = re.search(rf"^{re.escape(label)}\s*\n+\s*(.+)$", text, re.MULTILINE)
    assert m, f"metric {label!r} not on the page:\n{text[:1500]}"
    return m.group(1).strip()


def _number(value: str) -> float:
    m = re.search(r"[-+]?[\d,]*\.?\d+", value)
    assert m, value
    return float(m.group(0).replace(",", ""))


def _shot_dir() -> Path:
    folder = os.environ.get("MEDQ_SCREENSHOT_DIR")
    if folder:
        path = Path(folder) if Path(folder).is_absolute() else REPO / folder
    else:
        path = Path(tempfile.gettempdir()) / "medq-dashboard-screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_headline_numbers_equal_the_catalog(server, browser, expected):
    browser.open(f"{server}/")
    text = browser.text()
    assert "Traceback" not in text
    assert _number(_metric(text, "Champion accuracy")) == pytest.approx(
        round(expected["accuracy"] * 100, 1))
    assert "%" in _metric(text, "Champion accuracy")
    gain = re.search(r"([+-]\d+\.\d) pts since start", text)
    assert gain and float(gain.group(1)) == pytest.approx(round(expected["accuracy_gain"] * 100, 1))
    assert _metric(text, "Description score") == f"{expected['description']:.2f} / 8"
    assert _number(_metric(text, "Total spend")) == pytest.approx(round(expected["spend"], 1))
    assert int(_metric(text, "Rounds finished")) == expected["rounds"]
    assert _metric(text, "Promoted") == f"{expected['promoted']} of {expected['rounds']}"
    assert _number(_metric(text, "Annotations")) == expected["annotations"]
    assert f"round {expected['running']} is running" in text
    # the promotion table lists every round with its decision
    assert "rejected" in text and "promoted" in text
    browser.screenshot(_shot_dir() / "dashboard-rounds.png")


@pytest.mark.parametrize("view", [v for v in VIEWS if v != "rounds"])
def test_view_renders(server, browser, expected, dashboard_workspace, view):
    seconds = browser.open(f"{server}/{view}")
    text = browser.text()
    assert f"rendered {view}" in text, text[-500:]
    # headline on every view
    assert _metric(text, "Rounds finished") == str(expected["rounds"])
    state = browser.state()
    cat = dashboard_workspace.catalog
    if view == "breakdown":
        assert state["charts"] >= 5
        for heading in ("By modality", "By question type", "By degradation", "By level"):
            assert heading in text
    elif view == "lift":
        # the default round is the latest one measured after it; its heaviest prototype listed
        top = cat.scalar("SELECT prototype_id FROM prototypes WHERE round_id = ? AND NOT is_noise "
                         "ORDER BY error_mass DESC, prototype_id LIMIT 1", [expected["last_round"]])
        assert f"Error rate of {expected['last_round']}'s clusters" in text
        assert top in text
        assert state["charts"] == 2
        # deep link to the first round: its clusters under every later champion
        browser.open(f"{server}/lift?round=r001")
        text = browser.text()
        assert "Error rate of r001's clusters" in text
        assert "r001-p00" in text
    elif view == "spend":
        assert "Cost per accuracy point" in text
        cpp = expected["spend"] / (expected["accuracy_gain"] * 100)
        assert _number(_metric(text, "Cost per accuracy point")) == pytest.approx(round(cpp, 1))
    elif view == "retrieval":
        assert "Failure yield" in text and state["charts"] >= 1
    elif view == "gallery":
        n = cat.scalar("SELECT count(*) FROM prototypes WHERE round_id = ? AND NOT is_noise",
                       [expected["last_round"]])
        images = browser.evaluate("document.querySelectorAll('[data-testid=\"stImage\"] img')"
                                  ".length")
        assert images >= min(n, 8), "every prototype card shows at least its medoid"
        assert "image unavailable" not in text
        loaded = browser.evaluate("[...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                                  ".every(i => i.naturalWidth > 0)")
        assert loaded
    elif view == "queue":
        assert _number(_metric(text, "Open tasks")) == expected["open_tasks"]
        assert _number(_metric(text, "Failed")) == expected["failed_tasks"]
    assert seconds < 60
    browser.screenshot(_shot_dir() / f"dashboard-{view}.png")


def test_sample_efficiency_curve_shown_when_the_benchmark_file_exists(
        server, browser, dashboard_workspace):
    import json
    path = dashboard_workspace.root / "benchmarks" / "results" / "sample_efficiency.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    curves = {"random": [{"annotations": n, "accuracy": 0.50 + 0.00004 * n, "seed": s}
                         for n in (250, 500, 1000, 2000) for s in (0, 1)],
              "medq": [{"annotations": n, "accuracy": 0.50 + 0.00016 * n - 0.00002 * n * s / 10,
                        "seed": s} for n in (250, 500, 1000, 2000) for s in (0, 1)]}
    path.write_text(json.dumps({"curves": curves}))
    try:
        browser.open(f"{server}/retrieval")
        text = browser.text()
        assert "Sample efficiency vs random" in text and "No benchmark run found" not in text
        assert "× random" in text
        assert browser.state()["charts"] == 2
        browser.screenshot(_shot_dir() / "dashboard-retrieval.png")
    finally:
        shutil.rmtree(path.parents[1])
