"""End-to-end: the closed loop on a tiny synthetic world, killed with SIGKILL mid-round at
several points and resumed, ends with the same catalog as an uninterrupted run.

Everything is real: Prefect (temporary server per process), DuckDB, FAISS, GX, the lite model;
annotators are the in-process simulated backend (no service needed). Each `medq run` is a
separate process; `MEDQ_FAULT_KILL_AT` makes it SIGKILL itself at a named point, as a crashed
machine would (no cleanup, no flush).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.services, pytest.mark.timeout(1200)]

RUN = ["--rounds", "1", "--budget", "12", "--candidates", "60", "--seed", "0"]
TIME_COLUMNS = {"created_at", "updated_at", "finished_at", "started_at", "recorded_at", "applied_at"}


def _medq(workspace: Path, api_url: str, *args: str, kill_at: str | None = None,
          timeout: int = 600) -> subprocess.CompletedProcess:
    """`medq ARGS --workspace W` in its own session against the shared Prefect server. Output
    goes to files (a SIGKILLed parent must not leave pipes held open by its children) and the
    whole process group is killed afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDQ_")}
    env["PREFECT_HOME"] = str(workspace.parent / f"prefect-{workspace.name}")
    env["PREFECT_API_URL"] = api_url
    if kill_at:
        env["MEDQ_FAULT_KILL_AT"] = kill_at
    out, err = workspace.parent / "stdout.txt", workspace.parent / "stderr.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "medq.cli", *args, "--workspace",
                                 str(workspace)], env=env, stdout=fo, stderr=fe,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, code, out.read_text(), err.read_text())


def _strip_timing(value):
    """Wall-clock timings removed; floats rounded to 6 decimals. A model fine-tuned from a
    parent reloaded from disk (after the crash) instead of the same parent still in memory
    differs in the last float32 bits (~1e-8 in a loss or a calibration error); every id,
    label, answer, count and score to 6 decimals must still be identical."""
    if isinstance(value, dict):
        return {k: _strip_timing(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_strip_timing(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


def _normalize(cell):
    if isinstance(cell, str) and cell[:1] in "{[":
        try:
            return json.dumps(_strip_timing(json.loads(cell)), sort_keys=True)
        except json.JSONDecodeError:
            return cell
    return _strip_timing(cell)


def catalog_dump(workspace: Path) -> dict[str, list[tuple]]:
    """Every table's rows (timestamps and wall-clock timings removed), sorted."""
    from medq.storage.catalog import Catalog
    cat = Catalog.open(workspace / "catalog.duckdb", read_only=True)
    dump = {}
    for table in cat.tables():
        cols = [r["column_name"] for r in cat.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position", [table]) if r["column_name"] not in TIME_COLUMNS]
        rows = cat.query(f"SELECT {', '.join(cols)} FROM {table}")
        dump[table] = sorted((tuple(_normalize(r[c]) for c in cols) for r in rows), key=repr)
    return dump


@pytest.fixture(scope="module")
def loaded_workspace(tmp_path_factory):
    """A tiny world loaded into a workspace (copied per scenario)."""
    from medq.settings import load_settings
    from medq.storage.workspace import Workspace
    from medq.storage.world import write_world
    from medq.storage.world_loader import load_world
    from medq.tasks.world import demo_world_spec
    root = tmp_path_factory.mktemp("loop")
    write_world(demo_world_spec(0, eval_size=12, pool_size=200, seed_size=40), root / "world")
    ws = Workspace.init(load_settings(workspace=root / "base"))
    load_world(ws, root / "world")
    return root / "base"


def _copy(base: Path, name: str) -> Path:
    target = base.parent / name
    shutil.copytree(base, target)
    (target / "workspace.id").unlink()  # a distinct workspace, as a fresh load would be
    return target


def test_killed_rounds_resume_to_the_same_catalog(loaded_workspace, prefect_server):
    reference = _copy(loaded_workspace, "reference")
    done = _medq(reference, prefect_server, "run", *RUN, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    rounds = json.loads(done.stdout)
    assert len(rounds) == 1 and rounds[0]["n_candidates"] > 0 and rounds[0]["annotations"] > 0

    crashed = _copy(loaded_workspace, "crashed")
    for point in ("annotate:submitted", "curate:validated", "finetune:saved"):
        killed = _medq(crashed, prefect_server, "run", *RUN, kill_at=point)
        assert killed.returncode == -9, (point, killed.returncode, killed.stderr[-3000:])
    resumed = _medq(crashed, prefect_server, "run", *RUN, "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    want, got = catalog_dump(reference), catalog_dump(crashed)
    assert set(want) == set(got)
    for table in want:
        assert got[table] == want[table], f"table {table} differs after crash + resume"
    # nothing was lost or counted twice
    assert len(got["annotations"]) == len({r[0] for r in got["annotations"]}) > 0
